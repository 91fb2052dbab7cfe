/* The exchange with a backend server: route and rewrite the request, pick and
 * connect a server (or reuse a pooled connection), stream the request body up
 * and the response down with back-pressure, retry when that is safe, and
 * relay a tunnel after a 101. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "affinity.h"
#include "budget.h"
#include "conn_internal.h"
#include "health.h"
#include "http_rewrite.h"
#include "io.h"
#include "log.h"
#include "worker.h"

static bool server_full(const struct lb_server *s);
static void wake_queue(struct lb_worker *w);

static ev_tstamp now_of(const struct lb_conn *c)
{
    return ev_now(c->w->loop);
}

static bool idempotent(uint8_t method)
{
    switch (method) {
    case HTTP_GET:
    case HTTP_HEAD:
    case HTTP_OPTIONS:
    case HTTP_PUT:
    case HTTP_DELETE:
    case HTTP_TRACE:
        return true;
    default:
        return false;
    }
}

/* The request no longer counts against its server (leastconn, max_conns,
 * bounded load): as soon as its response is complete, before it is flushed
 * and logged, so the client's next request sees a true count. */
static void release_server(struct lb_conn *c)
{
    if (!c->server)
        return;
    bool was_full = server_full(c->server);
    atomic_fetch_sub(&c->server->active, 1);
    c->server = NULL;
    if (was_full)
        wake_queue(c->w);
}

void lb_proxy_release(struct lb_conn *c, bool reusable)
{
    if (c->up) {
        if (reusable) {
            ev_io_stop(c->w->loop, &c->up->io);
            lb_pool_give(&c->w->pool, c->up);
        } else {
            lb_upstream_close(c->up);
        }
        c->up = NULL;
    }
    release_server(c);
}

static void remember_request(struct lb_conn *c)
{
    const struct lb_http_head *h = &c->x->req.head;
    const char *base = c->cin.data;
    struct lb_exchange *x = c->x;
    size_t cap = sizeof(x->log_request);
    size_t m = h->method_text.len < cap / 4 ? h->method_text.len : cap / 4;
    size_t t = h->target.len < cap - m ? h->target.len : cap - m;
    memcpy(x->log_request, base + h->method_text.off, m);
    memcpy(x->log_request + m, base + h->target.off, t);
    x->log_method_len = m;
    x->log_target_len = t;
}

static bool server_full(const struct lb_server *s)
{
    return s->max_conns && (unsigned)atomic_load_explicit(&s->active, memory_order_relaxed) >=
                               s->max_conns;
}

/* A usable server not yet tried and below its max_conns, or NULL; *full
 * tells whether some server was passed over only for being full. */
static struct lb_server *pick_server(struct lb_conn *c, bool *full)
{
    struct lb_worker *w = c->w;
    void *state = w->balancers[c->backend - w->cfg->backends];
    unsigned tried = c->tried.n_tried;
    struct lb_server *server;
    *full = false;
    c->tried.now_ms = lb_now_ms();
    /* Affinity: the cookie's server while it is usable, not yet tried, and
     * has a free slot; else balanced normally (and a new cookie is set). */
    server = c->sticky;
    if (server && lb_health_usable(server, c->tried.now_ms) && !lb_pick_tried(&c->tried, server)) {
        if (server_full(server)) { /* wait for it: a burst must not move a session */
            *full = true;
            return NULL;
        }
        if (c->tried.n_tried < LB_MAX_TRIED)
            c->tried.tried[c->tried.n_tried++] = server;
        return server;
    }
    /* Full servers join `tried` for the length of this pick only. */
    while ((server = c->backend->balance->pick(state, &c->tried)) && server_full(server)) {
        *full = true;
        if (c->tried.n_tried == LB_MAX_TRIED) {
            server = NULL;
            break;
        }
        c->tried.tried[c->tried.n_tried++] = server;
    }
    c->tried.n_tried = tried;
    if (server && c->tried.n_tried < LB_MAX_TRIED)
        c->tried.tried[c->tried.n_tried++] = server;
    return server;
}

/* ---- the queue: requests waiting for a server slot (max_conns) ------------ */

static void enqueue(struct lb_conn *c)
{
    struct lb_worker *w = c->w;
    c->qnext = NULL;
    c->qprev = w->queue_tail;
    if (w->queue_tail)
        w->queue_tail->qnext = c;
    else
        w->queue_head = c;
    w->queue_tail = c;
    atomic_fetch_add(&(c->backend)->queued, 1);
    c->t_queued = now_of(c);
    c->state = CONN_QUEUED;
    if (!ev_is_active(&w->queue_poll))
        ev_timer_again(w->loop, &w->queue_poll);
}

void lb_proxy_unqueue(struct lb_conn *c)
{
    struct lb_worker *w = c->w;
    if (c->state != CONN_QUEUED)
        return;
    if (c->qprev)
        c->qprev->qnext = c->qnext;
    else
        w->queue_head = c->qnext;
    if (c->qnext)
        c->qnext->qprev = c->qprev;
    else
        w->queue_tail = c->qprev;
    c->qnext = c->qprev = NULL;
    atomic_fetch_sub(&(c->backend)->queued, 1);
    c->state = CONN_CONNECT; /* the caller sets the real next state */
    if (!w->queue_head)
        ev_timer_stop(w->loop, &w->queue_poll);
}

/* Connects c to `server`, from the pool if `pooled` and it can. */
static enum lb_step connect_to(struct lb_conn *c, struct lb_server *server, bool pooled)
{
    struct lb_worker *w = c->w;
    c->server = server;
    c->log_server = server->id;
    atomic_fetch_add(&server->active, 1);
    c->t_connect_start = now_of(c);
    c->up = pooled ? lb_pool_take(&w->pool, c->backend, server) : NULL;
    if (c->up) {
        c->up_connecting = false;
        c->t_connected = c->upstream_activity = c->t_connect_start;
        c->state = CONN_PROXY;
        lb_conn_watch_upstream(c);
        return STEP_PROGRESS;
    }
    c->up = lb_upstream_connect(&w->pool, c->backend, server);
    if (c->up) {
        c->up_connecting = true;
        c->state = CONN_CONNECT;
        lb_conn_watch_upstream(c);
        return STEP_PROGRESS;
    }
    int err = errno;
    lb_log_error("server %s: connect: %s", server->address.text, strerror(err));
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM ||
        err == EADDRNOTAVAIL) {
        /* lb's own shortage says nothing about the server */
        lb_proxy_release(c, false);
        lb_conn_reply_error(c, 503);
        return STEP_PROGRESS;
    }
    return lb_proxy_upstream_failed(c, FAIL_CONNECT, strerror(err));
}

/* Picks a server and connects to it; queues the request when every usable
 * server is at max_conns; 503 when none is usable. */
static enum lb_step connect_next(struct lb_conn *c)
{
    struct lb_server *server = c->retry_server;
    c->retry_server = NULL;
    if (server) /* the replay after a stale pooled connection: a fresh one */
        return connect_to(c, server, false);
    bool full;
    server = pick_server(c, &full);
    if (server)
        return connect_to(c, server, true);
    if (full && c->state != CONN_QUEUED) {
        if (atomic_load(&c->backend->queued) >= c->backend->queue) {
            lb_log_info("backend %s: every server at max_conns and the queue full",
                        c->backend->name);
            lb_conn_reply_error(c, 503);
            return STEP_PROGRESS;
        }
        enqueue(c);
        return STEP_IDLE;
    }
    if (full)
        return STEP_IDLE; /* still queued */
    lb_log_error("backend %s: no usable server left to try", c->backend->name);
    lb_conn_reply_error(c, c->tried.n_tried ? 502 : 503);
    return STEP_PROGRESS;
}

enum lb_step lb_proxy_queue_step(struct lb_conn *c)
{
    bool full;
    struct lb_server *server = pick_server(c, &full);
    if (!server && full)
        return STEP_IDLE;
    lb_proxy_unqueue(c);
    if (server)
        return connect_to(c, server, true);
    lb_conn_reply_error(c, 503);
    return STEP_PROGRESS;
}

/* A slot was freed in this worker: the first queued request gets a look. */
static void wake_queue(struct lb_worker *w)
{
    if (w->queue_head)
        ev_feed_event(w->loop, &w->queue_head->io, EV_CUSTOM);
}

/* The server a valid affinity cookie names. Forged, malformed, duplicated or
 * unknown tokens name none: the request is balanced and gets a new cookie. */
static void find_affinity(struct lb_conn *c)
{
    const struct lb_backend *b = c->backend;
    const struct lb_http_head *h = &c->x->req.head;
    const char *base = c->cin.data;
    c->sticky = NULL;
    if (!b->affinity.cookie)
        return;
    const char *value = NULL;
    size_t len = 0;
    int found = 0;
    for (int i = lb_http_find_header(h, base, "cookie", 0); i >= 0;
         i = lb_http_find_header(h, base, "cookie", i + 1)) {
        const char *v;
        size_t vlen;
        int n = lb_cookie_find(base + h->headers[i].value.off, h->headers[i].value.len,
                               b->affinity.cookie, &v, &vlen);
        if (n > 0 && found == 0) {
            value = v;
            len = vlen;
        }
        found += n;
    }
    if (found != 1)
        return;
    long idx = lb_affinity_table_lookup(&b->affinity_tokens, value, len);
    if (idx >= 0)
        c->sticky = &b->servers[idx];
}

/* "Set-Cookie: ..." naming the server that answered, when the client's
 * cookie does not already name it. */
static const char *affinity_set_cookie(struct lb_conn *c, char *buf, size_t cap)
{
    const struct lb_backend *b = c->backend;
    if (!b->affinity.cookie || !c->server || c->sticky == c->server)
        return NULL;
    const char *token = lb_affinity_table_token(&b->affinity_tokens, c->server->index);
    char max_age[40] = "";
    if (b->affinity.max_age > 0)
        snprintf(max_age, sizeof(max_age), "; Max-Age=%.0f", b->affinity.max_age);
    /* lb terminates no TLS yet: when it does, "; Secure" goes on TLS listeners. */
    int n = snprintf(buf, cap, "Set-Cookie: %s=%s; Path=/%s; HttpOnly; SameSite=Lax\r\n",
                     b->affinity.cookie, token, max_age);
    return n > 0 && (size_t)n < cap ? buf : NULL;
}

void lb_proxy_reset_exchange(struct lb_conn *c)
{
    c->status = 0;
    c->logged = false;
    c->log_server = NULL;
    c->t_connected = c->t_response = 0;
    c->req_done = c->resp_started = c->resp_head_sent = c->resp_done = false;
    c->resp_head_blocked = c->upstream_eof = c->upstream_shut = false;
    c->tunnel_asked = false;
    c->tried.n_tried = 0;
    c->retries = 0;
    c->retry_server = NULL;
    c->sticky = NULL;
    c->tried.has_hash = false;
    c->backend = NULL;
    c->log_bytes = 0;
    if (c->x) {
        c->x->resp.body_bytes = 0;
        c->x->log_method_len = c->x->log_target_len = 0;
    }
}

enum lb_step lb_proxy_start(struct lb_conn *c)
{
    struct lb_worker *w = c->w;
    const struct lb_http_head *h = &c->x->req.head;
    const char *base = c->cin.data;

    remember_request(c);
    c->keep_alive = h->keep_alive && !w->draining;
    c->tunnel_asked = lb_request_wants_tunnel(h, base);
    lb_http_parser_init(&c->x->resp, LB_HTTP_RESPONSE, &w->resp_limits);
    c->x->resp.skip_body = h->method == HTTP_HEAD;

    if (h->method == HTTP_CONNECT) {
        lb_conn_reply_error(c, 501);
        return STEP_PROGRESS;
    }
    const char *host = h->has_host ? base + h->host.off : NULL;
    size_t host_len = h->has_host ? h->host.len : 0;
    const char *target = base + h->target.off;
    size_t path_len = 0;
    while (path_len < h->target.len && target[path_len] != '?')
        path_len++;
    /* The config is shared read-only, but for its runtime counters. */
    c->backend = (struct lb_backend *)lb_config_route(w->cfg, host, host_len, target, path_len);
    if (!c->backend) {
        lb_log_info("client %s: no route for %.*s%.*s", c->peer, (int)host_len, host ? host : "",
                    (int)path_len, target);
        lb_conn_reply_error(c, 503);
        return STEP_PROGRESS;
    }
    if (lb_conn_buf(c, &c->uout) < 0 || lb_conn_buf(c, &c->uin) < 0 ||
        lb_conn_buf(c, &c->cout) < 0) {
        lb_conn_reply_error(c, 503);
        return STEP_PROGRESS;
    }
    find_affinity(c);
    c->tried.has_hash = c->backend->balance == &lb_balance_hash &&
                        lb_hash_request_key(c->backend, h, base, c->peer, &c->tried.hash);
    enum lb_body_framing framing = lb_request_framing(h);
    struct lb_forward_info info = {
        .client_addr = c->peer,
        .proto = "http",
        .default_host = c->listen->address.text,
        .xff_replace = w->cfg->headers.xff_replace,
        .allow_underscores = w->cfg->headers.allow_underscores,
        .strip_cookie = c->backend->affinity.cookie,
    };
    const char *err = lb_rewrite_request(h, base, &info, framing, c->tunnel_asked, &c->uout);
    if (err) {
        lb_log_info("client %s: %s", c->peer, err);
        lb_conn_reply_error(c, 431);
        return STEP_PROGRESS;
    }
    c->x->req.out_framing = framing;
    c->uout_sent = 0;
    c->replayable = true;
    lb_budget_count_request(c->backend, lb_now_ms());
    return connect_next(c);
}

static const enum lb_outcome outcome_of[] = {
    [FAIL_CONNECT] = LB_OUTCOME_CONNECT_FAILED,
    [FAIL_RESET] = LB_OUTCOME_RESET,
    [FAIL_TIMEOUT] = LB_OUTCOME_TIMEOUT,
    [FAIL_BAD_RESPONSE] = LB_OUTCOME_RESET,
};

enum lb_step lb_proxy_upstream_failed(struct lb_conn *c, enum lb_upstream_failure why,
                                      const char *detail)
{
    if (!c->server) {
        /* The response was complete (the server was released with it): the
         * rest of the request has nowhere to go, and the connection closes
         * once the client has its response. */
        lb_proxy_release(c, false);
        lb_buf_consume(&c->uout, lb_buf_len(&c->uout));
        c->uout_sent = 0;
        c->keep_alive = false;
        return STEP_PROGRESS;
    }
    struct lb_server *server = c->server;
    struct lb_backend *backend = c->backend;
    bool reused = c->up && c->up->reused;
    /* A pooled connection the server closed while idle says nothing about
     * the server: replayed on a fresh connection to it, not reported. */
    bool stale = reused && why == FAIL_RESET && !c->resp_started;
    lb_log_error("server %s: %s%s", server->address.text, detail,
                 stale ? " (idle keep-alive connection)" : "");
    uint64_t now_ms = lb_now_ms();
    if (!stale)
        lb_health_report(server, backend, outcome_of[why], now_ms);
    /* Safe to send again: nothing of the request reached a server (a failed
     * connect, or a write that failed before a byte went), or an idempotent
     * request whose bytes are all still here. Never once a response byte
     * arrived, never after a timeout (the server may still be working). */
    bool safe = !c->resp_started && c->replayable &&
                (why == FAIL_CONNECT ||
                 (why == FAIL_RESET && (c->uout_sent == 0 || idempotent(c->x->req.head.method))));
    lb_proxy_release(c, false);
    if (safe) { /* the next attempt starts from scratch */
        c->upstream_eof = c->upstream_shut = false;
        lb_buf_consume(&c->uin, lb_buf_len(&c->uin));
        lb_http_parser_init(&c->x->resp, LB_HTTP_RESPONSE, &c->w->resp_limits);
        c->x->resp.skip_body = c->x->req.head.method == HTTP_HEAD;
    }
    if (safe && stale && idempotent(c->x->req.head.method)) {
        c->uout_sent = 0;
        c->retry_server = server;
        return connect_next(c);
    }
    if (safe && c->retries < backend->retries && lb_budget_take_retry(backend, now_ms)) {
        c->retries++;
        c->uout_sent = 0;
        return connect_next(c);
    }
    lb_conn_reply_error(c, why == FAIL_TIMEOUT ? 504 : 502);
    return STEP_PROGRESS;
}

int lb_proxy_upstream_events(const struct lb_conn *c)
{
    if (!c->up)
        return 0;
    if (c->up_connecting)
        return EV_WRITE;
    int ev = 0;
    if (c->state == CONN_TUNNEL) {
        if (lb_buf_len(&c->cin) > 0)
            ev |= EV_WRITE;
        if (!c->upstream_eof && lb_buf_len(&c->uin) < c->uin.cap)
            ev |= EV_READ;
        return ev;
    }
    if (c->uout_sent < lb_buf_len(&c->uout))
        ev |= EV_WRITE;
    bool room = c->pipe ? c->splice_left > 0 && lb_pipe_has_room(c->pipe)
                        : lb_buf_len(&c->uin) < c->uin.cap;
    if (!c->resp_done && !c->upstream_eof && room)
        ev |= EV_READ;
    return ev;
}

/* The replay copy is given up when the room is needed or the server answered. */
static void drop_replay(struct lb_conn *c)
{
    if (!c->replayable)
        return;
    lb_buf_consume(&c->uout, c->uout_sent);
    c->uout_sent = 0;
    c->replayable = false;
}

/* Client → uout: the request body, re-framed. */
static enum lb_step move_request_body(struct lb_conn *c)
{
    if (c->req_done) /* what the client sends now waits in cin */
        return lb_buf_len(&c->cin) < c->cin.cap ? lb_conn_read_client(c) : STEP_IDLE;
    enum lb_step s = STEP_IDLE;
    if (lb_buf_len(&c->cin) > 0) {
        if (c->replayable && c->uout_sent > 0 &&
            c->uout.cap - lb_buf_len(&c->uout) < lb_buf_len(&c->cin))
            drop_replay(c);
        size_t before = lb_buf_len(&c->cin);
        switch (lb_http_parse(&c->x->req, &c->cin, &c->uout)) {
        case LB_HTTP_DONE:
            c->req_done = true;
            return STEP_PROGRESS;
        case LB_HTTP_ERROR:
            lb_log_info("client %s: bad request body: %s", c->peer, c->x->req.error_text);
            lb_conn_reply_error(c, c->x->req.error_status);
            return STEP_PROGRESS;
        default:
            if (lb_buf_len(&c->cin) != before)
                s = STEP_PROGRESS;
            break;
        }
    }
    if (c->client_eof && lb_buf_len(&c->cin) == 0) { /* gone inside its request */
        lb_conn_destroy(c); /* which logs it */
        return STEP_GONE;
    }
    if (lb_buf_len(&c->cin) < c->cin.cap) {
        enum lb_step r = lb_conn_read_client(c);
        if (r != STEP_IDLE)
            return r;
    }
    return s;
}

/* uout → server. */
static enum lb_step send_upstream(struct lb_conn *c)
{
    if (!c->up) { /* given up after an early response: drop what the client sends */
        lb_buf_consume(&c->uout, lb_buf_len(&c->uout));
        c->uout_sent = 0;
        return STEP_IDLE;
    }
    size_t pending = lb_buf_len(&c->uout) - c->uout_sent;
    if (pending == 0)
        return STEP_IDLE;
    size_t n;
    switch (lb_io_write(c->up->fd, lb_buf_start(&c->uout) + c->uout_sent, pending, &n)) {
    case LB_IO_OK:
        if (c->replayable)
            c->uout_sent += n;
        else
            lb_buf_consume(&c->uout, n);
        c->upstream_activity = now_of(c);
        return STEP_PROGRESS;
    case LB_IO_AGAIN:
        return STEP_IDLE;
    default:
        if (c->replayable)
            c->uout_sent += n; /* bytes that went before the error count as sent */
        return lb_proxy_upstream_failed(c, FAIL_RESET, strerror(errno));
    }
}

/* server → uin. */
static enum lb_step read_upstream(struct lb_conn *c)
{
    if (c->resp_done || c->upstream_eof || !c->up_rd)
        return STEP_IDLE;
    c->up_rd = false;
    switch (lb_io_read(c->up->fd, &c->uin)) {
    case LB_IO_OK:
        /* A read that filled the buffer probably left more: read again as
         * soon as there is room, without waiting for epoll to say so. */
        c->up_rd = lb_buf_room(&c->uin) == 0;
        c->upstream_activity = now_of(c);
        if (!c->resp_started) {
            c->resp_started = true;
            drop_replay(c);
        }
        return STEP_PROGRESS;
    case LB_IO_EOF:
        c->upstream_eof = true;
        return STEP_PROGRESS;
    case LB_IO_AGAIN:
        return STEP_IDLE;
    default:
        return lb_proxy_upstream_failed(c, FAIL_RESET, strerror(errno));
    }
}

/* A response head arrived (its slices are valid until the next parse). */
static enum lb_step on_response_head(struct lb_conn *c)
{
    const struct lb_http_head *h = &c->x->resp.head;
    bool interim = h->status / 100 == 1 && h->status != 101;
    /* HTTP/1.0 clients never get an interim response (100 Continue). */
    bool forward = !interim || c->x->req.head.version_minor >= 1;
    enum lb_body_framing framing = lb_response_framing(h, &c->x->req.head);
    if (!interim && framing == LB_FRAMING_CLOSE)
        c->keep_alive = false;
    char cookie[256];
    const char *extra = interim ? NULL : affinity_set_cookie(c, cookie, sizeof(cookie));
    if (forward && lb_rewrite_response(h, c->uin.data, &c->x->req.head, framing, c->keep_alive,
                                       extra, &c->cout)) {
        if (lb_buf_len(&c->cout) > 0) {
            c->resp_head_blocked = true; /* retried once cout drained */
            return STEP_IDLE;
        }
        return lb_proxy_upstream_failed(c, FAIL_BAD_RESPONSE, "response head too large");
    }
    c->resp_head_blocked = false;
    if (interim) {
        bool skip = c->x->resp.skip_body;
        lb_http_parse(&c->x->resp, &c->uin, NULL); /* consumes it: it has no body */
        lb_http_parser_next(&c->x->resp);
        c->x->resp.skip_body = skip;
        return STEP_PROGRESS;
    }
    c->x->resp.out_framing = framing;
    if (c->server)
        lb_health_report(c->server, c->backend, h->status >= 500 ? LB_OUTCOME_5XX : LB_OUTCOME_OK,
                         lb_now_ms());
    c->status = h->status;
    c->t_response = now_of(c);
    c->resp_head_sent = true;
    if (h->status == 101) {
        if (!c->tunnel_asked || !c->req_done) {
            c->resp_head_sent = false;
            lb_buf_consume(&c->cout, lb_buf_len(&c->cout));
            return lb_proxy_upstream_failed(c, FAIL_BAD_RESPONSE, "unrequested 101");
        }
        lb_buf_consume(&c->uin, h->size); /* the rest is the tunnel's */
        lb_conn_log(c);
        c->state = CONN_TUNNEL;
    }
    return STEP_PROGRESS;
}

/* uin → cout: the response, re-framed. */
static enum lb_step move_response(struct lb_conn *c)
{
    if (c->resp_done)
        return STEP_IDLE;
    if (c->resp_head_blocked)
        return on_response_head(c);
    size_t before = lb_buf_len(&c->uin);
    switch (lb_http_parse(&c->x->resp, &c->uin, &c->cout)) {
    case LB_HTTP_HEAD:
        return on_response_head(c);
    case LB_HTTP_DONE:
        c->resp_done = true;
        release_server(c);
        return STEP_PROGRESS;
    case LB_HTTP_ERROR:
        return lb_proxy_upstream_failed(c, FAIL_BAD_RESPONSE, c->x->resp.error_text);
    default:
        break;
    }
    if (lb_buf_len(&c->uin) != before)
        return STEP_PROGRESS;
    if (!c->upstream_eof)
        return STEP_IDLE;
    switch (lb_http_finish(&c->x->resp, &c->cout)) {
    case LB_HTTP_DONE:
        c->resp_done = true;
        release_server(c);
        c->keep_alive = c->keep_alive && c->x->resp.out_framing != LB_FRAMING_CLOSE;
        return STEP_PROGRESS;
    case LB_HTTP_AGAIN:
        return lb_proxy_upstream_failed(c, FAIL_RESET, "closed without a response");
    default:
        return lb_proxy_upstream_failed(c, FAIL_RESET, c->x->resp.error_text);
    }
}

/* Splices the rest of the response body when it is large and passes through
 * as it is (Content-Length, not re-chunked), once the bytes buffered so far
 * were moved to cout. Without a pipe to spare the body is copied as before. */
static void maybe_start_splice(struct lb_conn *c)
{
    const struct lb_http_parser *p = &c->x->resp;
    if (c->pipe || c->resp_done || !c->resp_head_sent || c->resp_head_blocked ||
        c->state != CONN_PROXY || p->out_framing != LB_FRAMING_LENGTH ||
        !p->head.has_content_length || p->head.chunked || lb_buf_len(&c->uin) > 0)
        return;
    uint64_t left = p->head.content_length - p->body_bytes;
    if (left < LB_SPLICE_MIN_BODY)
        return;
    c->pipe = lb_pipe_take(&c->w->pipes);
    if (c->pipe) {
        c->splice_left = left;
        c->up_lowat = 1;
        lb_stat_add(&c->w->stats.spliced_bodies, 1);
    }
}

/* The server socket's low-water mark after a splice that moved `moved`
 * bytes. A server that is ahead of lb (a large piece waited) gets a whole
 * pipe per wake-up; otherwise lb takes bytes as they come, so a slow stream
 * is never held back. (A server that slows down while the mark is high is
 * noticed by the DL_LOWAT deadline: lb_proxy_splice_stalled.) */
static size_t splice_lowat(const struct lb_conn *c, size_t moved, bool filled)
{
    if (moved < LB_SPLICE_BATCH && !filled)
        return 1;
    return c->splice_left < c->pipe->cap ? (size_t)c->splice_left : c->pipe->cap;
}

void lb_proxy_splice_stalled(struct lb_conn *c)
{
    if (c->pipe && c->up) {
        lb_splice_set_lowat(c->up->fd, 1, &c->up_lowat);
        c->up_rd = true; /* whatever waits below the old mark */
    }
}

/* server → pipe: the body of a spliced response (lb_conn_flush moves it on
 * to the client). The parser is left behind (it is initialised again for the
 * next response); the response is complete when splice_left bytes went
 * through. */
static enum lb_step splice_response(struct lb_conn *c)
{
    bool moved = false;
    size_t n;
    if (c->splice_left > 0 && c->up_rd) {
        c->up_rd = false;
        size_t room = c->pipe->cap - c->pipe->len;
        size_t want = c->splice_left < SIZE_MAX ? (size_t)c->splice_left : SIZE_MAX;
        switch (lb_splice_in(c->up->fd, c->pipe, want, &n)) {
        case LB_IO_OK:
            c->splice_left -= n;
            c->log_bytes += n;
            c->upstream_activity = now_of(c);
            /* It took all it could: probably more waits, as after a full read. */
            c->up_rd = c->splice_left > 0 && c->pipe->len == c->pipe->cap;
            moved = true;
            break;
        case LB_IO_AGAIN:
            break;
        case LB_IO_EOF:
            return lb_proxy_upstream_failed(c, FAIL_RESET,
                                            "connection closed before the end of the message");
        default:
            return lb_proxy_upstream_failed(c, FAIL_RESET, strerror(errno));
        }
        /* 1 again once the body is in: the connection goes back to the pool. */
        lb_splice_set_lowat(c->up->fd, c->splice_left ? splice_lowat(c, n, n == room) : 1,
                            &c->up_lowat);
        if (c->splice_left == 0) {
            release_server(c); /* all the server sends is here */
            /* Bytes past the body (a broken server) would be the next
             * request's response; a mark left high would hold it: either
             * way the connection is not pooled. */
            if (c->up_lowat != 1 || !lb_splice_socket_quiet(c->up->fd))
                c->upstream_eof = true;
        }
    }
    return moved ? STEP_PROGRESS : STEP_IDLE;
}

/* The spliced body went through (lb_conn_flush empties the pipe). */
static bool splice_finished(struct lb_conn *c)
{
    if (c->splice_left > 0 || c->pipe->len > 0)
        return false;
    lb_pipe_give(&c->w->pipes, c->pipe);
    c->pipe = NULL;
    c->resp_done = true;
    return true;
}

/* The response is complete: log, pool the server connection if it is clean,
 * and read the next request (or close). */
static enum lb_step finish_exchange(struct lb_conn *c)
{
    lb_conn_log(c);
    bool reusable = c->req_done && c->x->resp.head.keep_alive && !c->upstream_eof &&
                    lb_buf_len(&c->uin) == 0 && lb_buf_len(&c->uout) == c->uout_sent &&
                    c->x->resp.out_framing != LB_FRAMING_CLOSE;
    if (!c->req_done)
        c->keep_alive = false; /* the rest of the request body is unread */
    lb_proxy_release(c, reusable);
    lb_buf_consume(&c->uout, lb_buf_len(&c->uout));
    lb_buf_consume(&c->uin, lb_buf_len(&c->uin));
    if (!c->keep_alive || c->w->draining) {
        c->state = CONN_CLOSING;
        return STEP_PROGRESS;
    }
    lb_http_parser_next(&c->x->req);
    c->state = CONN_READ_HEAD;
    lb_proxy_reset_exchange(c);
    c->t_start = lb_buf_len(&c->cin) > 0 ? now_of(c) : 0;
    c->client_activity = now_of(c);
    return STEP_PROGRESS;
}

enum lb_step lb_proxy_step(struct lb_conn *c)
{
    enum lb_step s;
    bool moved = false;
    if (c->state == CONN_CONNECT) {
        int err = lb_upstream_connect_result(c->up);
        if (err == EINPROGRESS)
            return STEP_IDLE;
        if (err != 0)
            return lb_proxy_upstream_failed(c, FAIL_CONNECT, strerror(err));
        c->up_connecting = false;
        c->t_connected = c->upstream_activity = now_of(c);
        c->state = CONN_PROXY;
    }
    if ((s = move_request_body(c)) == STEP_GONE || c->state != CONN_PROXY)
        return s;
    moved |= s == STEP_PROGRESS;
    if ((s = send_upstream(c)) == STEP_GONE || c->state != CONN_PROXY)
        return s;
    moved |= s == STEP_PROGRESS;
    if (!c->pipe) {
        if ((s = read_upstream(c)) == STEP_GONE || c->state != CONN_PROXY)
            return s;
        moved |= s == STEP_PROGRESS;
        /* All the buffered response goes into cout before one send. */
        for (int i = 0; i < 8; i++) {
            if ((s = move_response(c)) == STEP_GONE || c->state != CONN_PROXY)
                return s;
            if (s == STEP_IDLE)
                break;
            moved = true;
        }
        maybe_start_splice(c);
    } else {
        if ((s = splice_response(c)) == STEP_GONE || c->state != CONN_PROXY)
            return s;
        moved |= s == STEP_PROGRESS;
    }
    if ((s = lb_conn_flush(c)) == STEP_GONE)
        return s;
    moved |= s == STEP_PROGRESS;
    if (c->pipe && splice_finished(c))
        moved = true;
    if (c->resp_done && (c->req_done || lb_buf_len(&c->cout) == 0))
        return finish_exchange(c);
    return moved ? STEP_PROGRESS : STEP_IDLE;
}

/* One direction of a tunnel: from's bytes in `b` to `to_fd`, then more from
 * `from_fd`. *eof records that `from` closed; its close is passed on. */
static enum lb_step tunnel_direction(struct lb_conn *c, int from_fd, int to_fd, struct lb_buf *b,
                                     bool *readable, bool *eof, bool *shut, ev_tstamp *activity)
{
    enum lb_step s = STEP_IDLE;
    if (lb_buf_len(b) > 0) {
        switch (lb_io_flush(to_fd, b)) {
        case LB_IO_OK:
            s = STEP_PROGRESS;
            break;
        case LB_IO_AGAIN:
            break;
        default:
            lb_conn_destroy(c);
            return STEP_GONE;
        }
    }
    if (!*eof && *readable) {
        *readable = false;
        switch (lb_io_read(from_fd, b)) {
        case LB_IO_OK:
            *activity = now_of(c);
            s = STEP_PROGRESS;
            break;
        case LB_IO_EOF:
            *eof = true;
            s = STEP_PROGRESS;
            break;
        case LB_IO_AGAIN:
            break;
        default:
            lb_conn_destroy(c);
            return STEP_GONE;
        }
    }
    if (*eof && lb_buf_len(b) == 0 && !*shut) {
        shutdown(to_fd, SHUT_WR); /* half-close travels through the tunnel */
        *shut = true;
    }
    return s;
}

enum lb_step lb_proxy_tunnel_step(struct lb_conn *c)
{
    /* The 101 head (and responses before it) leave first. */
    enum lb_step s = lb_conn_flush(c);
    if (s == STEP_GONE)
        return s;
    if (lb_buf_len(&c->cout) > 0)
        return s;
    enum lb_step up = tunnel_direction(c, c->fd, c->up->fd, &c->cin, &c->client_rd, &c->client_eof,
                                       &c->upstream_shut, &c->client_activity);
    if (up == STEP_GONE)
        return up;
    enum lb_step down = tunnel_direction(c, c->up->fd, c->fd, &c->uin, &c->up_rd, &c->upstream_eof,
                                         &c->client_shut, &c->upstream_activity);
    if (down == STEP_GONE)
        return down;
    if (c->upstream_shut && c->client_shut) {
        lb_conn_destroy(c);
        return STEP_GONE;
    }
    return (up == STEP_PROGRESS || down == STEP_PROGRESS) ? STEP_PROGRESS : STEP_IDLE;
}
