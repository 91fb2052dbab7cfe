/* Balancing algorithms: one static const ops table per algorithm, each in its
 * own balance_<name>.c, looked up by the name used in the config. */
#ifndef LB_BALANCE_H
#define LB_BALANCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "health.h"

/* Servers already tried for this request, so a retry goes elsewhere. */
#define LB_MAX_TRIED 8
struct lb_pick_ctx {
    const struct lb_server *tried[LB_MAX_TRIED];
    unsigned n_tried;
    /* lb_now_ms() at the pick: health and slow start are judged at this
     * time. 0: pick reads the clock itself. */
    uint64_t now_ms;
    /* The request's hash key for balance: hash (has_hash false: the key is
     * absent and the pick falls back to round robin). */
    uint64_t hash;
    bool has_hash;
};

struct lb_balancer_ops {
    const char *name;
    /* Per-worker state for one backend; NULL when out of memory. */
    void *(*create)(const struct lb_backend *backend);
    void (*destroy)(void *state);
    /* A server that is not in ctx->tried and is lb_health_usable() at
     * ctx->now_ms, weighted by lb_health_weight() (slow start), or NULL if
     * none is left. ctx may be NULL (nothing tried, the clock now). */
    struct lb_server *(*pick)(void *state, const struct lb_pick_ctx *ctx);
};

/* The ops named `name` ("roundrobin", "leastconn"), or NULL. */
const struct lb_balancer_ops *lb_balancer_find(const char *name);

/* True if `server` is in ctx->tried. */
bool lb_pick_tried(const struct lb_pick_ctx *ctx, const struct lb_server *server);

/* ctx->now_ms, or lb_now_ms() when ctx is NULL or left it 0. */
static inline uint64_t lb_pick_now(const struct lb_pick_ctx *ctx)
{
    return ctx && ctx->now_ms ? ctx->now_ms : lb_now_ms();
}

extern const struct lb_balancer_ops lb_balance_roundrobin;
extern const struct lb_balancer_ops lb_balance_leastconn;
extern const struct lb_balancer_ops lb_balance_hash;

struct lb_http_head;

/* The hash key of a request for a backend's hash_key (source, uri,
 * header:NAME, cookie:NAME, query:NAME), hashed with lb_hash64. Returns false
 * when the request does not carry it. `base` holds the head's bytes. */
bool lb_hash_request_key(const struct lb_backend *b, const struct lb_http_head *h,
                         const char *base, const char *client_addr, uint64_t *key);

/* Frees a backend's shared Maglev tables (at config free). */
void lb_balance_hash_release(struct lb_backend *b);

#endif
