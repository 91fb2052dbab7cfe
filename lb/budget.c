#include "budget.h"

/* Moves the window on when `now_ms` left it: the current counts become the
 * previous ones. Racing workers may each see the old window; one wins. */
static uint64_t roll(struct lb_backend_budget *bb, uint64_t now_ms)
{
    uint64_t window = now_ms / 1000;
    uint64_t seen = atomic_load_explicit(&bb->window, memory_order_acquire);
    if (seen != window &&
        atomic_compare_exchange_strong(&bb->window, &seen, window)) {
        unsigned requests = atomic_exchange(&bb->requests, 0);
        unsigned retries = atomic_exchange(&bb->retries, 0);
        bool adjacent = window == seen + 1;
        atomic_store(&bb->prev_requests, adjacent ? requests : 0);
        (void)retries;
    }
    return window;
}

void lb_budget_count_request(struct lb_backend *b, uint64_t now_ms)
{
    roll(&b->budget, now_ms);
    atomic_fetch_add_explicit(&b->budget.requests, 1, memory_order_relaxed);
}

bool lb_budget_take_retry(struct lb_backend *b, uint64_t now_ms)
{
    struct lb_backend_budget *bb = &b->budget;
    roll(bb, now_ms);
    uint64_t requests = atomic_load_explicit(&bb->requests, memory_order_relaxed) +
                        atomic_load_explicit(&bb->prev_requests, memory_order_relaxed);
    uint64_t allowed = b->retry_budget.min_per_second + requests * b->retry_budget.percent / 100;
    unsigned taken = atomic_fetch_add_explicit(&bb->retries, 1, memory_order_relaxed);
    if (taken < allowed)
        return true;
    atomic_fetch_sub_explicit(&bb->retries, 1, memory_order_relaxed);
    return false;
}
