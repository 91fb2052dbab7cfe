/* Balancer lookup and the helpers every algorithm shares. */
#include "balance.h"

#include <string.h>

/* Every known algorithm; the config names one per backend. */
static const struct lb_balancer_ops *const balancers[] = {
    &lb_balance_roundrobin,
    &lb_balance_leastconn,
    &lb_balance_hash,
};

const struct lb_balancer_ops *lb_balancer_find(const char *name)
{
    if (name == NULL)
        return NULL;
    for (size_t i = 0; i < sizeof(balancers) / sizeof(balancers[0]); i++) {
        if (strcmp(balancers[i]->name, name) == 0)
            return balancers[i];
    }
    return NULL;
}

bool lb_pick_tried(const struct lb_pick_ctx *ctx, const struct lb_server *server)
{
    if (ctx == NULL)
        return false;
    /* A caller that overfilled the list must not make us read past it. */
    unsigned n = ctx->n_tried < LB_MAX_TRIED ? ctx->n_tried : LB_MAX_TRIED;
    for (unsigned i = 0; i < n; i++) {
        if (ctx->tried[i] == server)
            return true;
    }
    return false;
}
