/* balance: hash — consistent hashing with a Maglev table (Eisenbud et al.,
 * NSDI 2016) and bounded loads (Mirrokni et al.): the same key goes to the
 * same server while it is usable, a server that leaves moves only its own
 * keys, and a server already over hash_balance_factor x its share of the
 * requests in flight passes the key on to the next one in the key's
 * preference order. Requests without the key are balanced round robin.
 *
 * The table is shared by every worker of the process: a pick that sees the
 * usable servers differ from those the table was built for builds a new one
 * (under a lock; rare) and publishes it with one atomic store. A replaced
 * table is freed seconds later, long after any pick that could still read it
 * (a pick holds it for microseconds). */
#include "balance.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "affinity.h"
#include "http1.h"
#include "maglev.h"

#define RETIRE_MS 5000

struct retired {
    const struct lb_backend *backend;
    struct lb_maglev *table;
    uint64_t at_ms;
    struct retired *next;
};

static pthread_mutex_t rebuild_lock = PTHREAD_MUTEX_INITIALIZER;
static struct retired *retired_tables; /* under rebuild_lock */

struct hash_state {
    const struct lb_backend *backend;
    void *fallback; /* round robin, for requests without the key */
    const struct lb_pick_ctx *ctx;
    uint64_t now_ms;
    int in_flight[]; /* a snapshot for the bounded-load check */
};

static void free_table(struct lb_maglev *table)
{
    if (table) {
        lb_maglev_free(table);
        free(table);
    }
}

/* Which servers are usable now, folded into one word; never 0, which means
 * "no table yet". */
static uint64_t usable_set(const struct lb_backend *b, uint64_t now_ms)
{
    uint64_t set = 1ull << 63;
    for (size_t i = 0; i < b->n_servers; i++)
        if (lb_health_usable(&b->servers[i], now_ms))
            set ^= (1ull << (i % 63)) * (1 + i / 63);
    return set;
}

/* Frees retired tables old enough (all of `only`'s when now_ms is 0). */
static void collect(const struct lb_backend *only, uint64_t now_ms)
{
    struct retired **link = &retired_tables;
    while (*link) {
        struct retired *r = *link;
        bool done = now_ms ? now_ms - r->at_ms > RETIRE_MS : r->backend == only;
        if (done) {
            *link = r->next;
            free_table(r->table);
            free(r);
        } else {
            link = &r->next;
        }
    }
}

/* Publishes a table built for the usable servers; the replaced one retires. */
static void rebuild(struct lb_backend *b, uint64_t set, uint64_t now_ms)
{
    size_t n = b->n_servers;
    const char **ids = calloc(n, sizeof(*ids));
    unsigned *weights = calloc(n, sizeof(*weights));
    bool *available = calloc(n, sizeof(*available));
    struct lb_maglev *table = calloc(1, sizeof(*table));
    struct retired *r = calloc(1, sizeof(*r));
    pthread_mutex_lock(&rebuild_lock);
    if (!ids || !weights || !available || !table || !r ||
        atomic_load(&b->maglev_state) == set) /* out of memory, or another worker was first */
        goto out;
    for (size_t i = 0; i < n; i++) {
        ids[i] = b->servers[i].id;
        weights[i] = b->servers[i].weight;
        available[i] = lb_health_usable(&b->servers[i], now_ms);
    }
    if (lb_maglev_build(table, ids, weights, available, n, 0) < 0)
        goto out;
    struct lb_maglev *old = atomic_exchange(&b->maglev, table);
    atomic_store(&b->maglev_state, set);
    table = NULL;
    collect(NULL, now_ms);
    if (old) {
        *r = (struct retired){b, old, now_ms, retired_tables};
        retired_tables = r;
        r = NULL;
    }
out:
    pthread_mutex_unlock(&rebuild_lock);
    free_table(table);
    free(r);
    free(ids);
    free(weights);
    free(available);
}

void lb_balance_hash_release(struct lb_backend *b)
{
    pthread_mutex_lock(&rebuild_lock);
    collect(b, 0);
    pthread_mutex_unlock(&rebuild_lock);
    free_table(atomic_exchange(&b->maglev, NULL));
    atomic_store(&b->maglev_state, 0);
}

static void *hash_create(const struct lb_backend *backend)
{
    struct hash_state *st =
        calloc(1, sizeof(*st) + backend->n_servers * sizeof(st->in_flight[0]));
    if (!st)
        return NULL;
    st->backend = backend;
    if (!(st->fallback = lb_balance_roundrobin.create(backend))) {
        free(st);
        return NULL;
    }
    return st;
}

static void hash_destroy(void *state)
{
    struct hash_state *st = state;
    if (st)
        lb_balance_roundrobin.destroy(st->fallback);
    free(st);
}

static bool excluded(void *state, size_t idx)
{
    struct hash_state *st = state;
    const struct lb_server *s = &st->backend->servers[idx];
    return !lb_health_usable(s, st->now_ms) || (st->ctx && lb_pick_tried(st->ctx, s));
}

static struct lb_server *hash_pick(void *state, const struct lb_pick_ctx *ctx)
{
    struct hash_state *st = state;
    if (!ctx || !ctx->has_hash)
        return lb_balance_roundrobin.pick(st->fallback, ctx);
    /* The config is shared read-only but for these runtime fields. */
    struct lb_backend *b = (struct lb_backend *)st->backend;
    st->now_ms = lb_pick_now(ctx);
    st->ctx = ctx;
    uint64_t set = usable_set(b, st->now_ms);
    if (atomic_load_explicit(&b->maglev_state, memory_order_acquire) != set)
        rebuild(b, set, st->now_ms);
    const struct lb_maglev *table = atomic_load_explicit(&b->maglev, memory_order_acquire);
    if (!table)
        return NULL;
    for (size_t i = 0; i < b->n_servers; i++)
        st->in_flight[i] = atomic_load_explicit(&b->servers[i].active, memory_order_relaxed);
    double factor = b->hash_balance_factor > 0 ? b->hash_balance_factor : 1e9;
    long idx = lb_maglev_lookup_bounded(table, ctx->hash, st->in_flight, b->n_servers, factor,
                                        excluded, st);
    return idx < 0 ? NULL : &b->servers[idx];
}

const struct lb_balancer_ops lb_balance_hash = {
    .name = "hash",
    .create = hash_create,
    .destroy = hash_destroy,
    .pick = hash_pick,
};

/* The value of `name=` in a query string ("a=1&name=v"), or NULL. */
static const char *query_param(const char *q, size_t len, const char *name, size_t *vlen)
{
    size_t nlen = strlen(name);
    size_t i = 0;
    while (i < len) {
        size_t end = i;
        while (end < len && q[end] != '&')
            end++;
        if (end - i > nlen && q[i + nlen] == '=' && memcmp(q + i, name, nlen) == 0) {
            *vlen = end - i - nlen - 1;
            return q + i + nlen + 1;
        }
        i = end + 1;
    }
    return NULL;
}

bool lb_hash_request_key(const struct lb_backend *b, const struct lb_http_head *h,
                         const char *base, const char *client_addr, uint64_t *key)
{
    const char *value = NULL;
    size_t len = 0;
    const char *target = base + h->target.off;
    switch (b->hash_key) {
    case LB_HASH_KEY_SOURCE:
        value = client_addr;
        len = strlen(client_addr);
        break;
    case LB_HASH_KEY_URI:
        value = target;
        len = h->target.len;
        break;
    case LB_HASH_KEY_HEADER: {
        int i = lb_http_find_header(h, base, b->hash_key_name, 0);
        if (i >= 0) {
            value = base + h->headers[i].value.off;
            len = h->headers[i].value.len;
        }
        break;
    }
    case LB_HASH_KEY_COOKIE:
        for (int i = lb_http_find_header(h, base, "cookie", 0); i >= 0 && !value;
             i = lb_http_find_header(h, base, "cookie", i + 1))
            lb_cookie_find(base + h->headers[i].value.off, h->headers[i].value.len,
                           b->hash_key_name, &value, &len);
        break;
    case LB_HASH_KEY_QUERY: {
        const char *q = memchr(target, '?', h->target.len);
        if (q)
            value = query_param(q + 1, h->target.len - (size_t)(q + 1 - target),
                                b->hash_key_name, &len);
        break;
    }
    }
    if (!value || len == 0)
        return false;
    *key = lb_hash64(value, len);
    return true;
}
