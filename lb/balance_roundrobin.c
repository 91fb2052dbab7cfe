/* Smooth weighted round robin, as nginx does it
 * (ngx_http_upstream_get_peer): on each pick every eligible server's current
 * weight grows by its weight, the largest wins and pays back the total. Over
 * any window of sum(weights) picks each server gets exactly its weight, and
 * the picks of a heavy server are spread out instead of coming in a burst
 * (5,1,1 gives a a b a c a a, not a a a a a b c).
 *
 * The state is per worker, so picks need no locks; each worker is smooth on
 * its own, and the kernel spreads connections evenly over the workers.
 *
 * Health: a server that is down or ejected sits the pick out like a tried
 * one. Weights come from lb_health_weight(), in 1/LB_WEIGHT_SCALE units, so a
 * server in slow start gets a growing fraction of its share; scaling every
 * weight by the same factor leaves the sequence unchanged. */
#include "balance.h"

#include <stdlib.h>

struct rr_state {
    const struct lb_backend *backend;
    /* Indexed like backend->servers. Signed and wide: a server's weight goes
     * negative after it wins, and a long run of retries that keep skipping
     * one server only lets the others' grow by at most sum(weights) each. */
    int64_t current[];
};

static void *rr_create(const struct lb_backend *backend)
{
    struct rr_state *st = calloc(1, sizeof(*st) + backend->n_servers * sizeof(st->current[0]));
    if (st == NULL)
        return NULL;
    st->backend = backend;
    return st;
}

static void rr_destroy(void *state)
{
    free(state);
}

static struct lb_server *rr_pick(void *state, const struct lb_pick_ctx *ctx)
{
    struct rr_state *st = state;
    const struct lb_backend *be = st->backend;
    struct lb_server *best = NULL;
    size_t best_i = 0;
    int64_t total = 0;
    uint64_t now = lb_pick_now(ctx);

    for (size_t i = 0; i < be->n_servers; i++) {
        struct lb_server *s = &be->servers[i];
        /* A tried or unusable server sits this pick out entirely, as in
         * nginx: its current weight neither grows nor counts in the total. */
        if (lb_pick_tried(ctx, s) || !lb_health_usable(s, now))
            continue;
        /* At most 1000 * LB_WEIGHT_SCALE; a 0 weight from a hand-built
         * server counts as 1 rather than starving it. */
        int64_t weight = (int64_t)lb_health_weight(s, be, now);
        st->current[i] += weight;
        total += weight;
        /* Strictly greater: ties go to the earlier server, which is what
         * makes the sequence deterministic and testable. */
        if (best == NULL || st->current[i] > st->current[best_i]) {
            best = s;
            best_i = i;
        }
    }
    if (best != NULL)
        st->current[best_i] -= total;
    return best;
}

const struct lb_balancer_ops lb_balance_roundrobin = {
    .name = "roundrobin",
    .create = rr_create,
    .destroy = rr_destroy,
    .pick = rr_pick,
};
