/* Server health: the rise/fall rule, slow start, passive ejection, and the
 * one health thread that runs active checks (see health.h).
 *
 * Every check is one small state machine (enum check_state) driven by one
 * io watcher and one timer; every path of a check, success, failure,
 * timeout or local error, ends in check_end(), which closes its socket and
 * frees its buffer, so a check never leaks. */
#include "health.h"

#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>

#include "buf.h"
#include "http1.h"
#include "io.h"
#include "log.h"

#define CHECK_MAGIC 0x6c626863u    /* "lbhc" */
#define CHECK_BUF_SIZE 8192        /* a response head larger than this fails */
#define SWEEP_INTERVAL 0.1         /* seconds between ejection sweeps */
#define PASSIVE_LOG_EVERY_MS 1000  /* "cannot eject" at most this often per server */
#define LOCAL_ERROR_LOG_EVERY 10.0 /* seconds between local-error log lines */
#define REASON_MAX 128

/* "backend app server web1 (127.0.0.1:9001)", or "... server 127.0.0.1:9001"
 * when the id is the address, for log lines. */
static const char *server_name(const struct lb_backend *b, const struct lb_server *s, char *buf,
                               size_t len)
{
    if (strcmp(s->id, s->address.text) == 0)
        snprintf(buf, len, "backend %s server %s", b->name, s->id);
    else
        snprintf(buf, len, "backend %s server %s (%s)", b->name, s->id, s->address.text);
    return buf;
}

/* ---- the rise/fall rule --------------------------------------------------- */

struct lb_health_step lb_health_next(struct lb_health_counters c, bool check_ok, unsigned rise,
                                     unsigned fall)
{
    struct lb_health_step step = {.counters = c, .changed = false};
    bool agrees = (c.state == LB_HEALTH_UP) == check_ok;
    if (agrees) {
        step.counters.streak = 0;
        return step;
    }
    unsigned need = c.state == LB_HEALTH_UP ? fall : rise;
    if (need == 0)
        need = 1;
    if (++step.counters.streak < need)
        return step;
    step.counters.state = c.state == LB_HEALTH_UP ? LB_HEALTH_DOWN : LB_HEALTH_UP;
    step.counters.streak = 0;
    step.changed = true;
    return step;
}

/* ---- what balancers read -------------------------------------------------- */

uint64_t lb_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    return ms ? ms : 1;
}

bool lb_health_usable(const struct lb_server *s, uint64_t now_ms)
{
    /* Relaxed: a pick that sees a change one request late is harmless. */
    return atomic_load_explicit(&s->up, memory_order_relaxed) &&
           atomic_load_explicit(&s->ejected_until_ms, memory_order_relaxed) <= now_ms;
}

uint64_t lb_health_weight(const struct lb_server *s, const struct lb_backend *b, uint64_t now_ms)
{
    uint64_t full = (uint64_t)(s->weight ? s->weight : 1) * LB_WEIGHT_SCALE;
    if (!b || !(b->slow_start > 0))
        return full;
    uint64_t since = atomic_load_explicit(&s->up_since_ms, memory_order_relaxed);
    /* Back from an ejection the sweep has not cleared yet: it ramps from there. */
    uint64_t ejected = atomic_load_explicit(&s->ejected_until_ms, memory_order_relaxed);
    if (ejected > since && ejected <= now_ms)
        since = ejected;
    uint64_t ramp_ms = (uint64_t)(b->slow_start * 1000.0);
    if (since == 0 || ramp_ms == 0)
        return full;
    uint64_t elapsed = now_ms > since ? now_ms - since : 0;
    if (elapsed >= ramp_ms)
        return full;
    /* No overflow: full <= 1e6 and ramp_ms <= a year in ms (3.2e10). */
    uint64_t floor = full * LB_SLOW_START_FLOOR / LB_WEIGHT_SCALE;
    uint64_t w = floor + (full - floor) * elapsed / ramp_ms;
    return w ? w : 1;
}

/* ---- passive detection ---------------------------------------------------- */

/* Serialises ejection decisions, so two workers cannot both pass the
 * max_ejected_percent check for different servers. Taken only when a server
 * reaches its failure threshold. */
static pthread_mutex_t eject_lock = PTHREAD_MUTEX_INITIALIZER;

uint64_t lb_health_ejection_ms(const struct lb_passive_config *p, unsigned times)
{
    double ms = p->base_ejection * 1000.0, max = p->max_ejection * 1000.0;
    for (unsigned i = 0; i < times && ms < max; i++)
        ms *= 2;
    if (ms > max)
        ms = max;
    return (uint64_t)(ms + 0.5);
}

static const char *outcome_text(enum lb_outcome outcome)
{
    switch (outcome) {
    case LB_OUTCOME_OK:
        return "ok";
    case LB_OUTCOME_CONNECT_FAILED:
        return "connect failed";
    case LB_OUTCOME_RESET:
        return "connection reset";
    case LB_OUTCOME_TIMEOUT:
        return "timeout";
    case LB_OUTCOME_5XX:
        return "5xx response";
    }
    return "?";
}

static unsigned ejected_count(const struct lb_backend *b, uint64_t now_ms)
{
    unsigned n = 0;
    for (size_t i = 0; i < b->n_servers; i++)
        n += atomic_load_explicit(&b->servers[i].ejected_until_ms, memory_order_relaxed) > now_ms;
    return n;
}

/* Ejects s unless another thread just did or the backend's cap forbids it. */
static void try_eject(struct lb_server *s, const struct lb_backend *b, enum lb_outcome outcome,
                      unsigned failures, uint64_t now_ms)
{
    char name[320];
    pthread_mutex_lock(&eject_lock);
    if (atomic_load(&s->ejected_until_ms) > now_ms)
        goto out;
    unsigned ejected = ejected_count(b, now_ms);
    if ((uint64_t)(ejected + 1) * 100 > (uint64_t)b->passive.max_ejected_percent * b->n_servers) {
        uint64_t logged = atomic_load(&s->passive_logged_ms);
        if (logged == 0 || now_ms - logged >= PASSIVE_LOG_EVERY_MS) {
            atomic_store(&s->passive_logged_ms, now_ms);
            lb_log_info("%s: %u consecutive failures (last: %s) but not ejected: %u of %zu "
                        "servers already are (max_ejected_percent %u)",
                        server_name(b, s, name, sizeof name), failures, outcome_text(outcome),
                        ejected, b->n_servers, b->passive.max_ejected_percent);
        }
        goto out;
    }
    unsigned times = atomic_load(&s->ejections);
    uint64_t ms = lb_health_ejection_ms(&b->passive, times);
    atomic_store(&s->ejected_until_ms, now_ms + ms);
    atomic_store(&s->ejections, times + 1);
    atomic_store(&s->passive_failures, 0);
    lb_log_info("%s ejected for %.1fs: %u consecutive failures (last: %s), ejection %u",
                server_name(b, s, name, sizeof name), (double)ms / 1000.0, failures,
                outcome_text(outcome), times + 1);
out:
    pthread_mutex_unlock(&eject_lock);
}

void lb_health_report(struct lb_server *s, const struct lb_backend *b, enum lb_outcome outcome,
                      uint64_t now_ms)
{
    if (b->passive.failures == 0)
        return;
    bool failure = outcome != LB_OUTCOME_OK && (outcome != LB_OUTCOME_5XX || b->passive.on_5xx);
    if (!failure) {
        /* Load first: the common case writes nothing to a shared line. */
        if (atomic_load_explicit(&s->passive_failures, memory_order_relaxed) != 0)
            atomic_store_explicit(&s->passive_failures, 0, memory_order_relaxed);
        return;
    }
    /* Requests still in flight when it was ejected: not new evidence. */
    if (atomic_load_explicit(&s->ejected_until_ms, memory_order_relaxed) > now_ms)
        return;
    unsigned n = atomic_fetch_add_explicit(&s->passive_failures, 1, memory_order_relaxed) + 1;
    if (n >= b->passive.failures)
        try_eject(s, b, outcome, n, now_ms);
}

/* ---- active checks: one state machine per server ----------------------------- */

enum check_state {
    CHECK_IDLE,       /* no connection; the timer starts the next check. -> CONNECTING, IDLE */
    CHECK_CONNECTING, /* non-blocking connect, waiting for writability. -> SENDING, IDLE */
    CHECK_SENDING,    /* http: writing the request. -> READING, IDLE */
    CHECK_READING,    /* http: reading until the response head is parsed. -> DRAINING, IDLE */
    CHECK_DRAINING,   /* http: verdict given; discarding the rest of the response. -> IDLE */
};

/* How a check ended, for check_end(). */
enum verdict {
    VERDICT_NONE,  /* already given (draining), or none at all */
    VERDICT_OK,    /* the server passed */
    VERDICT_FAIL,  /* the server failed: counts towards fall */
    VERDICT_LOCAL, /* lb could not run the check (EMFILE, ENOMEM...): counts for nothing */
};

struct check {
    unsigned magic;
    enum check_state state;
    struct lb_server *server;
    const struct lb_backend *backend;
    struct lb_health_counters counters;
    int fd; /* -1 while IDLE */
    ev_io io;
    ev_timer timer;    /* IDLE: until the next start; else: the check's timeout */
    ev_tstamp started; /* loop time the current check started */
    char *request;     /* http: the request, built once */
    size_t request_len;
    size_t sent;
    bool interim;     /* the head just parsed was a 1xx: another follows */
    struct lb_buf in; /* http: the response, only while a check runs */
    struct lb_http_parser parser;
    struct lb_http_limits limits;
    uint64_t decay_from_ms; /* passive: not ejected since, for the decay of `ejections` */
};

/* The one health thread. */
static struct {
    bool started;
    pthread_t thread;
    struct ev_loop *loop;
    ev_async stop;
    ev_timer sweep;
    const struct lb_config *cfg;
    struct check *checks; /* one per server of every backend */
    size_t n_checks;
    ev_tstamp local_error_logged;
} health;

static struct {
    atomic_uint_fast64_t checks, ok, failed, local_errors, open_fds;
} totals;

void lb_health_get_totals(struct lb_health_totals *out)
{
    out->checks = atomic_load(&totals.checks);
    out->ok = atomic_load(&totals.ok);
    out->failed = atomic_load(&totals.failed);
    out->local_errors = atomic_load(&totals.local_errors);
    out->open_fds = atomic_load(&totals.open_fds);
}

/* Errors that say something about lb, not about the server. */
static bool is_local_errno(int err)
{
    /* EAGAIN and EADDRNOTAVAIL from connect(): no free local port. */
    return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM ||
           err == EADDRNOTAVAIL || err == EAGAIN;
}

static const char *errno_reason(int err, char *buf, size_t len)
{
    switch (err) {
    case ECONNREFUSED:
        return "connection refused";
    case ECONNRESET:
        return "connection reset";
    case EPIPE:
        return "connection closed";
    case EHOSTUNREACH:
        return "host unreachable";
    case ENETUNREACH:
        return "network unreachable";
    case ETIMEDOUT:
        return "timeout";
    default: {
        char tmp[64];
        snprintf(buf, len, "%s", strerror_r(err, tmp, sizeof tmp)); /* GNU: returns the text */
        return buf;
    }
    }
}

static bool has_active_check(const struct check *c)
{
    return c->backend->health.type != LB_HEALTH_NONE;
}

/* Feeds one result to the rule and publishes a change. */
static void check_verdict(struct check *c, bool ok, const char *reason)
{
    const struct lb_health_config *h = &c->backend->health;
    struct lb_server *s = c->server;
    atomic_fetch_add(&totals.checks, 1);
    atomic_fetch_add(ok ? &totals.ok : &totals.failed, 1);
    char name[320];
    struct lb_health_step step = lb_health_next(c->counters, ok, h->rise, h->fall);
    c->counters = step.counters;
    if (!step.changed)
        return;
    if (step.counters.state == LB_HEALTH_UP) {
        /* up_since first, so a worker that sees up also sees the ramp start.
         * Passing rise active checks also ends a passive ejection (as Envoy's
         * successful_active_health_check_uneject_host): the recovery the
         * checks proved is not held back by failures from before it. */
        atomic_store(&s->up_since_ms, lb_now_ms());
        atomic_store(&s->passive_failures, 0);
        atomic_store(&s->ejected_until_ms, 0);
        atomic_store(&s->up, true);
        lb_log_info("%s is UP: %u successful check%s (%s)",
                    server_name(c->backend, s, name, sizeof name), h->rise, h->rise > 1 ? "s" : "",
                    reason);
    } else {
        atomic_store(&s->up, false);
        lb_log_info("%s is DOWN: %s (%u failed check%s)",
                    server_name(c->backend, s, name, sizeof name), reason, h->fall,
                    h->fall > 1 ? "s" : "");
    }
}

static void schedule_next(struct check *c)
{
    ev_tstamp delay = c->started + c->backend->health.interval - ev_now(health.loop);
    ev_timer_stop(health.loop, &c->timer);
    ev_timer_set(&c->timer, delay > 0 ? delay : 0, 0.);
    ev_timer_start(health.loop, &c->timer);
}

/* The one end of every check: gives the verdict, closes the connection,
 * frees the buffer, and schedules the next check. Idempotent on an IDLE check
 * apart from the scheduling. */
static void check_end(struct check *c, enum verdict verdict, const char *reason)
{
    switch (verdict) {
    case VERDICT_OK:
    case VERDICT_FAIL:
        check_verdict(c, verdict == VERDICT_OK, reason);
        break;
    case VERDICT_LOCAL:
        atomic_fetch_add(&totals.local_errors, 1);
        if (ev_now(health.loop) - health.local_error_logged >= LOCAL_ERROR_LOG_EVERY) {
            health.local_error_logged = ev_now(health.loop);
            char name[320];
            lb_log_error("health check of %s skipped: %s (a local error, not counted)",
                         server_name(c->backend, c->server, name, sizeof name), reason);
        }
        break;
    case VERDICT_NONE:
        break;
    }
    ev_io_stop(health.loop, &c->io);
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
        atomic_fetch_sub(&totals.open_fds, 1);
    }
    lb_buf_free(&c->in);
    c->state = CHECK_IDLE;
    schedule_next(c);
}

static void watch(struct check *c, int events)
{
    ev_io_stop(health.loop, &c->io);
    ev_io_set(&c->io, c->fd, events);
    ev_io_start(health.loop, &c->io);
}

/* READING or DRAINING: runs the parser over what arrived. */
static void check_parse(struct check *c)
{
    char text[REASON_MAX];
    for (;;) {
        enum lb_http_status st = lb_http_parse(&c->parser, &c->in, NULL);
        switch (st) {
        case LB_HTTP_AGAIN:
            return;
        case LB_HTTP_HEAD:
            c->parser.out_framing = LB_FRAMING_DISCARD;
            if (c->parser.head.status < 200 && c->parser.head.status != 101) {
                c->interim = true; /* 1xx: the final head follows */
                continue;
            }
            snprintf(text, sizeof text, "status %u", (unsigned)c->parser.head.status);
            check_verdict(c, c->parser.head.status == c->backend->health.expect, text);
            c->state = CHECK_DRAINING;
            continue;
        case LB_HTTP_DONE:
            if (c->interim) {
                c->interim = false;
                lb_http_parser_next(&c->parser);
                continue;
            }
            check_end(c, VERDICT_NONE, NULL);
            return;
        case LB_HTTP_ERROR:
            if (c->state == CHECK_DRAINING) {
                check_end(c, VERDICT_NONE, NULL);
            } else if (c->parser.error_status == 431) {
                check_end(c, VERDICT_FAIL, "response head too large");
            } else {
                snprintf(text, sizeof text, "bad response (%s)",
                         c->parser.error_text ? c->parser.error_text : "?");
                check_end(c, VERDICT_FAIL, text);
            }
            return;
        }
    }
}

/* READING or DRAINING: the socket is readable. */
static void check_read(struct check *c)
{
    char text[REASON_MAX];
    switch (lb_io_read(c->fd, &c->in)) {
    case LB_IO_OK:
        check_parse(c);
        return;
    case LB_IO_AGAIN:
        return;
    case LB_IO_EOF:
        if (c->state == CHECK_DRAINING) {
            check_end(c, VERDICT_NONE, NULL);
        } else {
            check_end(c, VERDICT_FAIL, "connection closed before a response");
        }
        return;
    case LB_IO_ERROR:
        if (c->state == CHECK_DRAINING)
            check_end(c, VERDICT_NONE, NULL);
        else
            check_end(c, is_local_errno(errno) ? VERDICT_LOCAL : VERDICT_FAIL,
                      errno_reason(errno, text, sizeof text));
        return;
    }
}

/* SENDING: writes what is left of the request. -> READING when all went. */
static void check_send(struct check *c)
{
    char text[REASON_MAX];
    size_t n = 0;
    switch (lb_io_write(c->fd, c->request + c->sent, c->request_len - c->sent, &n)) {
    case LB_IO_OK:
        c->sent += n;
        if (c->sent < c->request_len)
            return;
        if (lb_buf_init(&c->in, CHECK_BUF_SIZE) < 0) {
            check_end(c, VERDICT_LOCAL, "out of memory");
            return;
        }
        lb_http_parser_init(&c->parser, LB_HTTP_RESPONSE, &c->limits);
        c->interim = false;
        c->state = CHECK_READING;
        watch(c, EV_READ);
        return;
    case LB_IO_AGAIN:
    case LB_IO_EOF:
        return;
    case LB_IO_ERROR:
        check_end(c, is_local_errno(errno) ? VERDICT_LOCAL : VERDICT_FAIL,
                  errno_reason(errno, text, sizeof text));
        return;
    }
}

/* The connect finished (writable) or was immediate. tcp: done. http ->
 * SENDING. */
static void check_connected(struct check *c)
{
    c->state = CHECK_SENDING;
    if (c->backend->health.type == LB_HEALTH_TCP) {
        check_end(c, VERDICT_OK, "connected");
        return;
    }
    watch(c, EV_WRITE);
    check_send(c);
}

/* CONNECTING: the socket is writable, the connect ended one way or the other. */
static void check_connect_result(struct check *c)
{
    char text[REASON_MAX];
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err == 0) {
        check_connected(c);
        return;
    }
    check_end(c, is_local_errno(err) ? VERDICT_LOCAL : VERDICT_FAIL,
              errno_reason(err, text, sizeof text));
}

/* IDLE: starts a check. -> CONNECTING, or straight on when connect() was
 * immediate, or IDLE again when it failed at once. */
static void check_begin(struct check *c)
{
    char text[REASON_MAX];
    const struct lb_address *addr = &c->server->address;
    c->started = ev_now(health.loop);
    c->sent = 0;
    ev_timer_stop(health.loop, &c->timer);
    ev_timer_set(&c->timer, c->backend->health.timeout, 0.);
    ev_timer_start(health.loop, &c->timer);

    c->fd = socket(addr->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) { /* every socket() error is lb's own */
        check_end(c, VERDICT_LOCAL, errno_reason(errno, text, sizeof text));
        return;
    }
    atomic_fetch_add(&totals.open_fds, 1);
    c->state = CHECK_CONNECTING;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (const struct sockaddr *)&addr->sa, addr->len) == 0) {
        check_connected(c);
        return;
    }
    if (errno != EINPROGRESS) {
        check_end(c, is_local_errno(errno) ? VERDICT_LOCAL : VERDICT_FAIL,
                  errno_reason(errno, text, sizeof text));
        return;
    }
    watch(c, EV_WRITE);
}

static void on_check_io(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct check *c = w->data;
    assert(c->magic == CHECK_MAGIC && c->fd == w->fd && c->state != CHECK_IDLE);
    switch (c->state) {
    case CHECK_CONNECTING:
        check_connect_result(c);
        break;
    case CHECK_SENDING:
        check_send(c);
        break;
    case CHECK_READING:
    case CHECK_DRAINING:
        check_read(c);
        break;
    case CHECK_IDLE:
        break; /* cannot happen: IDLE has no watcher */
    }
}

static void on_check_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct check *c = w->data;
    assert(c->magic == CHECK_MAGIC && (c->state == CHECK_IDLE) == (c->fd < 0));
    switch (c->state) {
    case CHECK_IDLE:
        check_begin(c);
        break;
    case CHECK_CONNECTING:
        check_end(c, VERDICT_FAIL, "timeout (connect)");
        break;
    case CHECK_SENDING:
        check_end(c, VERDICT_FAIL, "timeout (sending the request)");
        break;
    case CHECK_READING:
        check_end(c, VERDICT_FAIL, "timeout (no response)");
        break;
    case CHECK_DRAINING:
        check_end(c, VERDICT_NONE, NULL);
        break;
    }
}

/* ---- the sweep: returns from ejection, decay of the ejection count ------------ */

static void sweep_one(struct check *c, uint64_t now_ms)
{
    struct lb_server *s = c->server;
    const struct lb_passive_config *p = &c->backend->passive;
    uint_fast64_t until = atomic_load(&s->ejected_until_ms);
    if (until > now_ms) {
        c->decay_from_ms = until;
        return;
    }
    /* The return counts as coming up, for slow start: up_since first, so that
     * lb_health_weight() never sees neither. The health thread is the only
     * writer of up_since_ms. */
    if (until != 0 && until > atomic_load(&s->up_since_ms))
        atomic_store(&s->up_since_ms, until);
    if (until != 0 && atomic_compare_exchange_strong(&s->ejected_until_ms, &until, 0)) {
        char name[320];
        lb_log_info("%s returns from ejection", server_name(c->backend, s, name, sizeof name));
        c->decay_from_ms = now_ms;
    }
    /* Each base_ejection spent without an ejection halves the next one. */
    unsigned times = atomic_load(&s->ejections);
    uint64_t period = (uint64_t)(p->base_ejection * 1000.0);
    if (times > 0 && now_ms - c->decay_from_ms >= period) {
        atomic_compare_exchange_strong(&s->ejections, &times, times - 1);
        c->decay_from_ms = now_ms;
    }
}

static void on_sweep(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    uint64_t now_ms = lb_now_ms();
    for (size_t i = 0; i < health.n_checks; i++)
        if (health.checks[i].backend->passive.failures > 0)
            sweep_one(&health.checks[i], now_ms);
}

/* ---- the thread ----------------------------------------------------------------- */

static void on_stop(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

static void *health_main(void *arg)
{
    (void)arg;
    ev_run(health.loop, 0);
    return NULL;
}

/* The request of an http check, with its Host header. NULL when out of memory. */
static char *build_request(const struct lb_health_config *h, const struct lb_server *s, size_t *len)
{
    const char *host = h->host ? h->host : s->address.text;
    const char *fmt = "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n"
                      "User-Agent: lb-health\r\n\r\n";
    int n = snprintf(NULL, 0, fmt, h->path, host);
    char *req = n > 0 ? malloc((size_t)n + 1) : NULL;
    if (!req)
        return NULL;
    snprintf(req, (size_t)n + 1, fmt, h->path, host);
    *len = (size_t)n;
    return req;
}

/* Frees what health_init made; the thread must not be running. */
static void health_free(void)
{
    for (size_t i = 0; health.checks && i < health.n_checks; i++) {
        struct check *c = &health.checks[i];
        if (c->magic != CHECK_MAGIC)
            continue; /* check_init never reached it */
        if (health.loop) {
            ev_io_stop(health.loop, &c->io);
            ev_timer_stop(health.loop, &c->timer);
        }
        if (c->fd >= 0) {
            close(c->fd);
            atomic_fetch_sub(&totals.open_fds, 1);
        }
        lb_buf_free(&c->in);
        free(c->request);
    }
    free(health.checks);
    if (health.loop) {
        ev_async_stop(health.loop, &health.stop);
        ev_timer_stop(health.loop, &health.sweep);
        ev_loop_destroy(health.loop);
    }
    memset(&health, 0, sizeof health);
}

/* Sets up one check; its first start is `first` seconds from now. */
static int check_init(struct check *c, struct lb_server *s, const struct lb_backend *b,
                      ev_tstamp first)
{
    c->magic = CHECK_MAGIC;
    c->state = CHECK_IDLE;
    c->server = s;
    c->backend = b;
    c->fd = -1;
    c->counters.state = atomic_load(&s->up) ? LB_HEALTH_UP : LB_HEALTH_DOWN;
    c->counters.streak = 0;
    c->limits = (struct lb_http_limits){
        .max_header_size = CHECK_BUF_SIZE, .max_uri_size = CHECK_BUF_SIZE, .max_body_size = 0};
    c->decay_from_ms = lb_now_ms();
    ev_io_init(&c->io, on_check_io, -1, 0);
    c->io.data = c;
    ev_timer_init(&c->timer, on_check_timer, first, 0.);
    c->timer.data = c;
    if (!has_active_check(c))
        return 0;
    if (b->health.type == LB_HEALTH_HTTP &&
        !(c->request = build_request(&b->health, s, &c->request_len)))
        return -1;
    ev_timer_start(health.loop, &c->timer);
    return 0;
}

static int health_init(const struct lb_config *cfg)
{
    health.cfg = cfg;
    if (!(health.loop = ev_loop_new(EVFLAG_AUTO)))
        return -1;
    for (size_t b = 0; b < cfg->n_backends; b++)
        health.n_checks += cfg->backends[b].n_servers;
    if (health.n_checks && !(health.checks = calloc(health.n_checks, sizeof *health.checks)))
        return -1;
    size_t k = 0;
    for (size_t b = 0; b < cfg->n_backends; b++) {
        const struct lb_backend *be = &cfg->backends[b];
        for (size_t i = 0; i < be->n_servers; i++, k++) {
            /* Spread the first checks of a backend over one interval. */
            ev_tstamp first = be->health.interval * (double)i / (double)be->n_servers;
            if (check_init(&health.checks[k], &be->servers[i], be, first) < 0)
                return -1;
        }
    }
    ev_async_init(&health.stop, on_stop);
    ev_async_start(health.loop, &health.stop);
    ev_timer_init(&health.sweep, on_sweep, SWEEP_INTERVAL, SWEEP_INTERVAL);
    ev_timer_start(health.loop, &health.sweep);
    health.local_error_logged = -LOCAL_ERROR_LOG_EVERY;
    return 0;
}

int lb_health_start(const struct lb_config *cfg)
{
    if (health.started) {
        lb_log_error("health: already started");
        return -1;
    }
    if (health_init(cfg) < 0) {
        lb_log_error("health: out of memory");
        goto fail;
    }
    int err = pthread_create(&health.thread, NULL, health_main, NULL);
    if (err != 0) {
        lb_log_error("health: cannot start the thread: %s", strerror(err));
        goto fail;
    }
    health.started = true;
    size_t active = 0;
    for (size_t i = 0; i < health.n_checks; i++)
        active += has_active_check(&health.checks[i]);
    lb_log_info("health: checking %zu of %zu servers", active, health.n_checks);
    return 0;
fail:
    health_free();
    return -1;
}

void lb_health_stop(void)
{
    if (!health.started)
        return;
    ev_async_send(health.loop, &health.stop);
    pthread_join(health.thread, NULL);
    health_free();
}
