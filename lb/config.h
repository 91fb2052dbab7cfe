/* The configuration: YAML -> struct lb_config, with defaults and validation.
 * Errors name the file and line: "lb.yaml:12: unknown key 'wieght'". */
#ifndef LB_CONFIG_H
#define LB_CONFIG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct lb_balancer_ops;
struct lb_maglev;

#include "affinity.h"

/* A socket address as written in the config ("127.0.0.1:80", "[::1]:80",
 * "localhost:80"; hostnames are resolved once, at load). */
struct lb_address {
    struct sockaddr_storage sa;
    socklen_t len;
    char text[128]; /* as written */
};

/* One backend server. The runtime fields are shared by every worker. */
struct lb_server {
    struct lb_address address;
    char id[64];        /* stable name; default: the address text */
    unsigned weight;    /* 1..1000, default 1 */
    unsigned max_conns; /* requests in flight at once, all workers; 0 = unlimited (default) */
    unsigned index;     /* position in its backend's list */
    int line;           /* where it is defined */
    atomic_int active;  /* requests in flight to it, all workers together */
    /* Health, written only by health.c, read by every worker (see health.h).
     * config.c only sets the initial values: up = the backend's health.initial
     * (true without active checks), the rest 0. */
    atomic_bool up;                         /* passes its active checks */
    atomic_uint_fast64_t up_since_ms;       /* monotonic ms it came up, for slow start;
                                               0 = up since lb started (no ramp) */
    atomic_uint_fast64_t ejected_until_ms;  /* passive ejection ends; 0 = not ejected */
    atomic_uint passive_failures;           /* consecutive failures reported on real traffic */
    atomic_uint ejections;                  /* times ejected so far (decays while healthy) */
    atomic_uint_fast64_t passive_logged_ms; /* rate limit of "cannot eject" log lines */
};

/* Active health checks of a backend's servers (the `health` key). */
enum lb_health_type {
    LB_HEALTH_NONE, /* no `health` key: no active checks, servers stay up */
    LB_HEALTH_HTTP, /* GET path, status must equal expect (default when `health` is given) */
    LB_HEALTH_TCP,  /* a connect that succeeds */
};

#define LB_HEALTH_MAX_PATH 1024
#define LB_HEALTH_MAX_HOST 255

struct lb_health_config {
    enum lb_health_type type; /* LB_HEALTH_NONE unless `health` is given; then http */
    char *path;               /* default "/health"; starts with '/', printable, no spaces */
    char *host;               /* Host header; NULL (default) = the server's address text */
    double interval;          /* seconds between check starts, default 1 */
    double timeout;           /* seconds a whole check may take, default 0.5 */
    unsigned rise;            /* consecutive successes that bring a server up, 1..100, default 2 */
    unsigned fall;            /* consecutive failures that bring it down, 1..100, default 3 */
    unsigned expect;          /* status an http check wants, 100..599, default 200 */
    bool initial_up;          /* state before any check: `initial: up` (default) or down */
};

/* Passive detection on real traffic (the `passive` key), as Envoy's outlier
 * detection: `failures` consecutive failures eject a server for
 * base_ejection * 2^(times ejected so far), at most max_ejection. */
struct lb_passive_config {
    unsigned failures;            /* 0 = off; default 5 */
    double base_ejection;         /* seconds, default 10 */
    double max_ejection;          /* seconds, default 300; >= base_ejection */
    unsigned max_ejected_percent; /* of the backend's servers ejected at once, 0..100, default 50 */
    bool on_5xx;                  /* a 5xx response counts as a failure; default false */
};

/* Retries may add at most `percent` of the backend's requests over a window,
 * but `min_per_second` are always allowed (the `retry_budget` key). */
struct lb_retry_budget {
    unsigned percent;        /* 0..100, default 20 */
    unsigned min_per_second; /* default 3 */
};

/* Cookie affinity (the `affinity` key): lb keeps no per-session state; the
 * cookie names the server, authenticated with an HMAC under `secret`. */
struct lb_affinity_config {
    char *cookie;   /* cookie name; NULL = affinity off */
    char *secret;   /* HMAC key, at least 16 bytes */
    double max_age; /* seconds; 0 = a session cookie (default) */
};

/* What `balance: hash` hashes (the `hash_key` key). */
enum lb_hash_key {
    LB_HASH_KEY_SOURCE, /* the client's address (default) */
    LB_HASH_KEY_URI,    /* the request target */
    LB_HASH_KEY_HEADER, /* header:NAME */
    LB_HASH_KEY_COOKIE, /* cookie:NAME */
    LB_HASH_KEY_QUERY,  /* query:NAME, a query-string parameter */
};

/* Runtime counters of the retry budget (budget.c), shared by every worker. */
struct lb_backend_budget {
    atomic_uint_fast64_t window; /* the current one-second window, now_ms / 1000 */
    atomic_uint requests;        /* requests in the current window */
    atomic_uint prev_requests;   /* requests in the window before */
    atomic_uint retries;         /* retries taken in the current window */
};

struct lb_backend {
    char name[64];
    const struct lb_balancer_ops *balance; /* default roundrobin */
    struct lb_server *servers;
    size_t n_servers;
    unsigned keepalive;            /* idle pooled connections per server and worker, default 1024 */
    double keepalive_timeout;      /* seconds an idle pooled connection is kept, default 60 */
    struct lb_health_config health;
    double slow_start;             /* seconds a server coming up ramps its weight; 0 = off */
    struct lb_passive_config passive;
    unsigned retries;              /* further servers tried for one request, 0..7, default 2 */
    struct lb_retry_budget retry_budget;
    unsigned queue;                /* requests waiting for a server under max_conns, default 100 */
    struct lb_affinity_config affinity;
    struct lb_affinity_table affinity_tokens; /* every server's token, built at load */
    enum lb_hash_key hash_key;
    char hash_key_name[64];        /* NAME of header:/cookie:/query: */
    double hash_balance_factor;    /* bounded load; 0 = unbounded; default 1.25 */
    /* balance: hash: the Maglev table of the usable servers, shared by every
     * worker, replaced whole when a server's state changes (balance_hash.c). */
    _Atomic(struct lb_maglev *) maglev;
    atomic_uint_fast64_t maglev_state; /* the server states it was built for */
    struct lb_backend_budget budget;
    atomic_uint queued;            /* requests waiting now, all workers */
    int line;
};

struct lb_route {
    char *host;        /* NULL: any host; else matched case-insensitively, port ignored */
    char *path_prefix; /* default "/" */
    struct lb_backend *backend;
    int line;
};

struct lb_listen {
    struct lb_address address;
    int line;
};

struct lb_timeouts {           /* seconds */
    double connect;            /* default 2 */
    double client_header;      /* whole request head, default 10 */
    double client_idle;        /* between keep-alive requests; also client send, default 60 */
    double server;             /* waiting for response bytes, default 30 */
    double drain;              /* graceful shutdown, default 10 */
    double queue;              /* longest wait in a backend's queue (max_conns), default 2 */
    double tunnel;             /* an idle Upgrade/WebSocket tunnel, default 1h */
};

/* How lb treats client headers it forwards. */
struct lb_header_rules {
    bool xff_replace;       /* x_forwarded_for: replace (an untrusted edge) | append (default) */
    bool allow_underscores; /* underscores: allow | drop (default): names with '_' */
};

struct lb_limits {
    uint64_t max_connections;  /* default 10000 */
    uint64_t max_header_size;  /* default 16k */
    uint64_t max_uri_size;     /* default 8k */
    uint64_t max_body_size;    /* 0 = unlimited (default) */
};

/* The stats endpoint (the `stats` key): GET /metrics, Prometheus text. */
struct lb_stats_config {
    bool enabled;              /* `stats` is given */
    struct lb_address address; /* stats.listen, required then */
    int line;
};

struct lb_config {
    char *path;
    unsigned workers;          /* resolved: "auto" becomes the number of cores */
    struct lb_listen *listens;
    size_t n_listens;
    char *access_log;          /* NULL = off, "stdout", or a file path */
    struct lb_timeouts timeouts;
    struct lb_limits limits;
    struct lb_header_rules headers;
    struct lb_backend *backends;
    size_t n_backends;
    struct lb_route *routes;
    size_t n_routes;
    struct lb_stats_config stats;
};

/* Loads and validates `path`. Returns the config (free with lb_config_free),
 * or NULL with a "file:line: message" text in err. */
struct lb_config *lb_config_load(const char *path, char *err, size_t err_len);

/* Same, from a string; `name` stands for the file name in messages. Only
 * err_len bytes of err are written (err may be NULL when err_len is 0). */
struct lb_config *lb_config_parse(const char *yaml, size_t len, const char *name, char *err,
                                  size_t err_len);

void lb_config_free(struct lb_config *cfg);

/* Parses "500ms", "2s", "1m", "1h", "1.5s" (a bare number is seconds) into
 * seconds. Returns 0, or -1 if malformed, negative or over 365 days. */
int lb_parse_duration(const char *text, double *seconds);

/* Parses "512", "16k", "1m", "2g" (powers of 1024, either case) into bytes.
 * Returns 0, or -1 if malformed or over UINT64_MAX. */
int lb_parse_size(const char *text, uint64_t *bytes);

/* Parses "host:port" or "[v6]:port" into addr; the port is numeric (1..65535).
 * A name is resolved now (blocking): its first IPv4 address, else its first
 * address. Returns 0, or -1. */
int lb_parse_address(const char *text, struct lb_address *addr);

/* The backend for a request: first route whose host and path prefix match,
 * else the only backend when there is exactly one and no routes, else NULL.
 * `host` may carry a port (ignored) and may be NULL. */
const struct lb_backend *lb_config_route(const struct lb_config *cfg, const char *host,
                                         size_t host_len, const char *path, size_t path_len);

#endif
