#include "stats.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void lb_stats_count_response(struct lb_worker_stats *s, int status)
{
    int class = status >= 100 && status <= 599 ? status / 100 : 0;
    lb_stat_add(&s->responses[class], 1);
}

/* A growing string; after a failed allocation every append is a no-op and
 * `failed` is set. */
struct text {
    char *p;
    size_t len, cap;
    bool failed;
};

__attribute__((format(printf, 2, 3))) static void put(struct text *t, const char *fmt, ...)
{
    for (;;) {
        if (t->failed)
            return;
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->p ? t->p + t->len : NULL, t->p ? t->cap - t->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->failed = true;
            return;
        }
        if (t->p && (size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = t->cap ? t->cap : 4096;
        while (cap - t->len <= (size_t)n)
            cap *= 2;
        char *p = realloc(t->p, cap);
        if (!p) {
            t->failed = true;
            return;
        }
        t->p = p;
        t->cap = cap;
    }
}

/* A label value with \, " and newline escaped, as the format wants. Names
 * are printable ASCII of at most 63 characters (config.c), so 128 is enough. */
static const char *label(const char *in, char out[128])
{
    size_t o = 0;
    for (const char *c = in; *c && o < 125; c++) {
        if (*c == '\\' || *c == '"')
            out[o++] = '\\';
        out[o++] = *c == '\n' ? 'n' : *c;
    }
    out[o] = '\0';
    return out;
}

static void family(struct text *t, const char *name, const char *type, const char *help)
{
    put(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One line per worker of a per-worker counter or gauge. */
static void per_worker(struct text *t, struct lb_worker_stats *const *w, unsigned n,
                       const char *name, size_t offset)
{
    for (unsigned i = 0; i < n; i++) {
        const atomic_uint_fast64_t *v = (const atomic_uint_fast64_t *)((const char *)w[i] + offset);
        put(t, "%s{worker=\"%u\"} %llu\n", name, i,
            (unsigned long long)atomic_load_explicit(v, memory_order_relaxed));
    }
}

static void worker_metrics(struct text *t, struct lb_worker_stats *const *w, unsigned n)
{
    family(t, "lb_worker_connections_accepted_total", "counter",
           "Client connections accepted by the worker.");
    per_worker(t, w, n, "lb_worker_connections_accepted_total",
               offsetof(struct lb_worker_stats, accepted));
    family(t, "lb_worker_accept_eagain_total", "counter",
           "Accept wake-ups of the worker that found no connection (stays ~0 with one "
           "SO_REUSEPORT socket per worker).");
    per_worker(t, w, n, "lb_worker_accept_eagain_total",
               offsetof(struct lb_worker_stats, accept_eagain));
    family(t, "lb_worker_connections_open", "gauge", "Client connections the worker holds open.");
    per_worker(t, w, n, "lb_worker_connections_open", offsetof(struct lb_worker_stats, open));
    family(t, "lb_worker_responses_total", "counter",
           "Exchanges by what the client got: the class of the response status, or none when "
           "the connection ended before any response.");
    static const char *const codes[] = {"none", "1xx", "2xx", "3xx", "4xx", "5xx"};
    for (unsigned i = 0; i < n; i++)
        for (size_t c = 0; c < 6; c++)
            put(t, "lb_worker_responses_total{worker=\"%u\",code=\"%s\"} %llu\n", i, codes[c],
                (unsigned long long)atomic_load_explicit(&w[i]->responses[c],
                                                         memory_order_relaxed));
    family(t, "lb_worker_spliced_bodies_total", "counter",
           "Response bodies forwarded with splice(2), without copying.");
    per_worker(t, w, n, "lb_worker_spliced_bodies_total",
               offsetof(struct lb_worker_stats, spliced_bodies));
}

/* One line per server of every backend; `value` reads the server's figure. */
static void per_server(struct text *t, const struct lb_config *cfg, const char *name,
                       uint64_t (*value)(const struct lb_server *, uint64_t), uint64_t now_ms)
{
    char b[128], s[128];
    for (size_t i = 0; i < cfg->n_backends; i++) {
        const struct lb_backend *be = &cfg->backends[i];
        for (size_t j = 0; j < be->n_servers; j++)
            put(t, "%s{backend=\"%s\",server=\"%s\"} %llu\n", name, label(be->name, b),
                label(be->servers[j].id, s),
                (unsigned long long)value(&be->servers[j], now_ms));
    }
}

static uint64_t server_up(const struct lb_server *s, uint64_t now_ms)
{
    (void)now_ms;
    return atomic_load_explicit(&s->up, memory_order_relaxed);
}

static uint64_t server_ejected(const struct lb_server *s, uint64_t now_ms)
{
    return atomic_load_explicit(&s->ejected_until_ms, memory_order_relaxed) > now_ms;
}

static uint64_t server_in_flight(const struct lb_server *s, uint64_t now_ms)
{
    (void)now_ms;
    int active = atomic_load_explicit(&s->active, memory_order_relaxed);
    return active > 0 ? (uint64_t)active : 0;
}

static uint64_t server_weight(const struct lb_server *s, uint64_t now_ms)
{
    (void)now_ms;
    return s->weight;
}

static void server_metrics(struct text *t, const struct lb_config *cfg, uint64_t now_ms)
{
    family(t, "lb_server_up", "gauge", "1 while the server passes its active health checks.");
    per_server(t, cfg, "lb_server_up", server_up, now_ms);
    family(t, "lb_server_ejected", "gauge",
           "1 while the server is ejected by passive failure detection.");
    per_server(t, cfg, "lb_server_ejected", server_ejected, now_ms);
    family(t, "lb_server_requests_in_flight", "gauge",
           "Requests sent to the server and not yet answered, all workers.");
    per_server(t, cfg, "lb_server_requests_in_flight", server_in_flight, now_ms);
    family(t, "lb_server_weight", "gauge", "The server's configured weight.");
    per_server(t, cfg, "lb_server_weight", server_weight, now_ms);
    family(t, "lb_backend_queued_requests", "gauge",
           "Requests waiting for a server slot (max_conns), all workers.");
    char b[128];
    for (size_t i = 0; i < cfg->n_backends; i++)
        put(t, "lb_backend_queued_requests{backend=\"%s\"} %u\n", label(cfg->backends[i].name, b),
            atomic_load_explicit(&cfg->backends[i].queued, memory_order_relaxed));
}

char *lb_stats_render(const struct lb_config *cfg, struct lb_worker_stats *const *workers,
                      unsigned n_workers, uint64_t connections_open, uint64_t now_ms,
                      size_t *len)
{
    struct text t = {0};
    family(&t, "lb_connections_open", "gauge", "Client connections open, all workers.");
    put(&t, "lb_connections_open %llu\n", (unsigned long long)connections_open);
    family(&t, "lb_connections_max", "gauge", "limits.max_connections.");
    put(&t, "lb_connections_max %llu\n", (unsigned long long)cfg->limits.max_connections);
    worker_metrics(&t, workers, n_workers);
    server_metrics(&t, cfg, now_ms);
    if (t.failed || !t.p) {
        free(t.p);
        return NULL;
    }
    *len = t.len;
    return t.p;
}
