/* Least connections, weighted: the eligible server with the fewest requests
 * in flight per unit of weight. The counts are shared by all workers (the
 * caller increments and decrements server->active around each request);
 * pick only reads them.
 *
 * Equal servers must share evenly, or an idle pool would send everything to
 * the first server: each pick scans from just after the last server picked,
 * and the first of several equals in that order wins.
 *
 * Health: servers that are down or ejected are skipped; the weight in the
 * ratio is lb_health_weight(), so a server in slow start takes fewer. */
#include "balance.h"

#include <stdlib.h>

struct lc_state {
    const struct lb_backend *backend;
    size_t next; /* where the next scan starts; per worker, so no atomics */
};

static void *lc_create(const struct lb_backend *backend)
{
    struct lc_state *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return NULL;
    st->backend = backend;
    return st;
}

static void lc_destroy(void *state)
{
    free(state);
}

static struct lb_server *lc_pick(void *state, const struct lb_pick_ctx *ctx)
{
    struct lc_state *st = state;
    const struct lb_backend *be = st->backend;
    size_t n = be->n_servers;
    struct lb_server *best = NULL;
    size_t best_i = 0;
    /* 64-bit: active (int) times weight (<= 1000 * LB_WEIGHT_SCALE) cannot
     * overflow. */
    int64_t best_active = 0, best_weight = 1;
    uint64_t now = lb_pick_now(ctx);

    for (size_t k = 0; k < n; k++) {
        size_t i = (st->next + k) % n;
        struct lb_server *s = &be->servers[i];
        if (lb_pick_tried(ctx, s) || !lb_health_usable(s, now))
            continue;
        /* Relaxed: other workers move the count all the time; a stale value
         * only skews this one pick, and reading each count once keeps the
         * comparisons consistent with each other. */
        int64_t active = atomic_load_explicit(&s->active, memory_order_relaxed);
        /* Never 0 (a 0 weight counts as 1), which would make every cross
         * product 0 and pin the pick. */
        int64_t weight = (int64_t)lb_health_weight(s, be, now);
        /* active/weight < best_active/best_weight, without division. Strict,
         * so the first equal server in scan order keeps the lead. */
        if (best == NULL || active * best_weight < best_active * weight) {
            best = s;
            best_i = i;
            best_active = active;
            best_weight = weight;
        }
    }
    if (best != NULL)
        st->next = (best_i + 1) % n;
    return best;
}

const struct lb_balancer_ops lb_balance_leastconn = {
    .name = "leastconn",
    .create = lc_create,
    .destroy = lc_destroy,
    .pick = lc_pick,
};
