/* The client connection: its life from accept to the one destructor, its
 * timer and watchers, request heads, error replies and the lingering close.
 * The exchange with a server is in proxy.c. */
#include "conn.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn_internal.h"
#include "io.h"
#include "log.h"
#include "worker.h"

#define LINGER_SECONDS 2.0

static void conn_run(struct lb_conn *c);
static void on_io(struct ev_loop *loop, ev_io *io, int revents);

static ev_tstamp now_of(const struct lb_conn *c)
{
    return ev_now(c->w->loop);
}

/* ---- timer ------------------------------------------------------------ */

/* Sets what the timer waits for. The libev timer is restarted only when the
 * deadline moves earlier; a later deadline is noticed when the timer fires,
 * so activity on the hot path costs two stores. */
static void set_deadline(struct lb_conn *c, enum lb_deadline kind, ev_tstamp at)
{
    c->deadline_kind = kind;
    bool restart = at < c->deadline || !ev_is_active(&c->timer);
    c->deadline = at;
    if (restart) {
        ev_timer_stop(c->w->loop, &c->timer);
        ev_tstamp in = at - now_of(c);
        ev_timer_set(&c->timer, in > 0 ? in : 0., 0.);
        ev_timer_start(c->w->loop, &c->timer);
    }
}

/* The deadline that matches what the connection waits for now. */
static void update_deadline(struct lb_conn *c)
{
    const struct lb_timeouts *t = &c->w->cfg->timeouts;
    switch (c->state) {
    case CONN_READ_HEAD:
        if (lb_buf_len(&c->cout) > 0 && lb_conn_idle(c))
            set_deadline(c, DL_SEND, c->client_activity + t->client_idle);
        else if (lb_conn_idle(c) && c->t_start == 0)
            set_deadline(c, DL_IDLE, c->client_activity + t->client_idle);
        else
            set_deadline(c, DL_HEADER, c->t_start + t->client_header);
        break;
    case CONN_QUEUED:
        set_deadline(c, DL_QUEUE, c->t_queued + t->queue);
        break;
    case CONN_CONNECT:
        set_deadline(c, DL_CONNECT, c->t_connect_start + t->connect);
        break;
    case CONN_PROXY:
        /* First: bytes may wait below a raised mark whatever else is pending
         * (it only lowers the mark; the deadline below applies after). */
        if (c->pipe && c->up_lowat > 1 && c->splice_left > 0 && lb_pipe_has_room(c->pipe))
            set_deadline(c, DL_LOWAT, c->upstream_activity + LB_SPLICE_STALL);
        else if (lb_conn_output_pending(c)) /* the client is slow to read */
            set_deadline(c, DL_SEND, c->client_activity + t->client_idle);
        else if (!c->req_done && lb_buf_len(&c->uout) - c->uout_sent < c->uout.cap / 2)
            /* waiting for request body bytes, with room for them: the
             * client's stall, not the server's */
            set_deadline(c, DL_BODY, c->client_activity + t->client_header);
        else if (!c->resp_done)
            set_deadline(c, DL_SERVER, c->upstream_activity + t->server);
        else
            set_deadline(c, DL_SEND, c->client_activity + t->client_idle);
        break;
    case CONN_TUNNEL: {
        ev_tstamp last = c->client_activity > c->upstream_activity ? c->client_activity
                                                                   : c->upstream_activity;
        set_deadline(c, DL_TUNNEL, last + t->tunnel);
        break;
    }
    case CONN_CLOSING:
        if (c->lingering)
            set_deadline(c, DL_LINGER, c->client_activity + LINGER_SECONDS);
        else
            set_deadline(c, DL_SEND, c->client_activity + t->client_idle);
        break;
    }
}

static void on_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    struct lb_conn *c = t->data;
    assert(c->magic == LB_CONN_MAGIC);
    ev_tstamp now = ev_now(loop);
    if (now < c->deadline) {
        ev_timer_set(t, c->deadline - now, 0.);
        ev_timer_start(loop, t);
        return;
    }
    switch (c->deadline_kind) {
    case DL_HEADER:
    case DL_BODY:
        lb_log_info("client %s: timed out sending its request", c->peer);
        lb_conn_reply_error(c, 408);
        break;
    case DL_QUEUE:
        lb_log_info("backend %s: no server slot within timeouts.queue", c->backend->name);
        lb_proxy_unqueue(c);
        lb_conn_reply_error(c, 503);
        break;
    case DL_CONNECT:
        if (lb_proxy_upstream_failed(c, FAIL_CONNECT, "connect timed out") == STEP_GONE)
            return;
        break;
    case DL_SERVER:
        if (lb_proxy_upstream_failed(c, FAIL_TIMEOUT, "response timed out") == STEP_GONE)
            return;
        break;
    case DL_LOWAT:
        lb_proxy_splice_stalled(c);
        break;
    case DL_IDLE:
    case DL_SEND:
    case DL_TUNNEL:
    case DL_LINGER:
        lb_conn_destroy(c);
        return;
    }
    conn_run(c);
}

/* ---- watchers ----------------------------------------------------------- */

static bool has_space(const struct lb_buf *b)
{
    return b->data == NULL || lb_buf_len(b) < b->cap;
}

static int client_events(const struct lb_conn *c)
{
    int ev = 0;
    bool may_read = !c->client_eof;
    switch (c->state) {
    case CONN_READ_HEAD:
        may_read = may_read && has_space(&c->cin);
        break;
    case CONN_QUEUED:
    case CONN_CONNECT: /* nothing reads the client until the server answers the connect */
        may_read = false;
        break;
    case CONN_PROXY:
        /* Also after the request: pipelined bytes wait in cin, and a watcher
         * that stays on costs no epoll_ctl per request. */
        may_read = may_read && has_space(&c->cin);
        break;
    case CONN_TUNNEL:
        may_read = may_read && has_space(&c->cin);
        break;
    case CONN_CLOSING:
        may_read = may_read && c->lingering;
        break;
    }
    if (may_read)
        ev |= EV_READ;
    if (lb_conn_output_pending(c) || (c->state == CONN_TUNNEL && lb_buf_len(&c->uin) > 0))
        ev |= EV_WRITE;
    return ev;
}

static void set_events(struct ev_loop *loop, ev_io *io, int events)
{
    if ((io->events & (EV_READ | EV_WRITE)) == events && ev_is_active(io))
        return;
    ev_io_stop(loop, io);
    if (events) {
        /* ev_io_modify, not ev_io_set: the fd is the same, and telling libev
         * it may not be costs a failing epoll_ctl per change. */
        ev_io_modify(io, events);
        ev_io_start(loop, io);
    }
}

static void update_watchers(struct lb_conn *c)
{
    set_events(c->w->loop, &c->io, client_events(c));
    if (c->up)
        set_events(c->w->loop, &c->up->io, lb_proxy_upstream_events(c));
    update_deadline(c);
}

/* ---- buffers -------------------------------------------------------------- */

int lb_conn_buf(struct lb_conn *c, struct lb_buf *b)
{
    if (b->data)
        return 0;
    return lb_buf_take(&c->w->bufs, b);
}

/* An idle connection holds no buffer: memory goes to connections with data
 * in flight. */
static void release_empty_buffers(struct lb_conn *c)
{
    struct lb_buf *all[] = {&c->cin, &c->cout, &c->uin, &c->uout};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        if (all[i]->data && lb_buf_len(all[i]) == 0)
            lb_buf_give(&c->w->bufs, all[i]);
}

/* ---- exchanges ---------------------------------------------------------- */

#define SPARE_EXCHANGES 256

bool lb_conn_idle(const struct lb_conn *c)
{
    return (!c->x || lb_http_parser_idle(&c->x->req)) && lb_buf_len(&c->cin) == 0;
}

/* A request starts: its parsers come from the worker's spares. */
static int take_exchange(struct lb_conn *c)
{
    struct lb_worker *w = c->w;
    struct lb_exchange *x = w->spare_exchanges;
    if (x) {
        w->spare_exchanges = x->next_spare;
        w->n_spare_exchanges--;
    } else if (!(x = malloc(sizeof(*x)))) {
        return -1;
    }
    lb_http_parser_init(&x->req, LB_HTTP_REQUEST, &w->req_limits);
    lb_http_parser_init(&x->resp, LB_HTTP_RESPONSE, &w->resp_limits);
    x->log_method_len = x->log_target_len = 0;
    c->x = x;
    return 0;
}

static void give_exchange(struct lb_conn *c)
{
    struct lb_worker *w = c->w;
    struct lb_exchange *x = c->x;
    if (!x)
        return;
    c->x = NULL;
    if (w->n_spare_exchanges < SPARE_EXCHANGES) {
        x->next_spare = w->spare_exchanges;
        w->spare_exchanges = x;
        w->n_spare_exchanges++;
    } else {
        free(x);
    }
}

void lb_conn_free_spares(struct lb_worker *w)
{
    while (w->spare_exchanges) {
        struct lb_exchange *x = w->spare_exchanges;
        w->spare_exchanges = x->next_spare;
        free(x);
    }
    w->n_spare_exchanges = 0;
}

/* ---- life ----------------------------------------------------------------- */

void lb_conn_accept(struct lb_worker *w, int fd, const struct sockaddr *peer, socklen_t peer_len,
                    const struct lb_listen *listen)
{
    (void)peer_len;
    struct lb_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        atomic_fetch_sub(&w->shared->connections, 1);
        return;
    }
    c->magic = LB_CONN_MAGIC;
    c->w = w;
    c->fd = fd;
    c->listen = listen;
    c->state = CONN_READ_HEAD;
    if (peer->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)peer)->sin6_addr, c->peer,
                  sizeof(c->peer));
    else if (peer->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)peer)->sin_addr, c->peer,
                  sizeof(c->peer));
    else
        strcpy(c->peer, "unix");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->connections++;
    lb_stat_add(&w->stats.open, 1);

    ev_io_init(&c->io, on_io, fd, 0);
    c->io.data = c;
    ev_init(&c->timer, on_timer);
    c->timer.data = c;
    /* The first request's head is due within client_header of the accept. */
    c->t_start = c->client_activity = now_of(c);
    update_watchers(c);
}

void lb_conn_destroy(struct lb_conn *c)
{
    assert(c->magic == LB_CONN_MAGIC);
    struct lb_worker *w = c->w;
    /* A request in progress that ends here (the client reset, stopped
     * reading or left) gets its log line too: with the status of the
     * response head it got, else 499 as nginx writes it. */
    if (!c->logged && c->x && !lb_http_parser_idle(&c->x->req)) {
        if (!c->resp_head_sent)
            c->status = LB_STATUS_CLIENT_GONE;
        lb_conn_log(c);
    }
    lb_proxy_unqueue(c);
    lb_proxy_release(c, false);
    ev_io_stop(w->loop, &c->io);
    ev_timer_stop(w->loop, &c->timer);
    close(c->fd);
    lb_buf_give(&w->bufs, &c->cin);
    lb_buf_give(&w->bufs, &c->cout);
    lb_buf_give(&w->bufs, &c->uin);
    lb_buf_give(&w->bufs, &c->uout);
    give_exchange(c);
    lb_pipe_give(&w->pipes, c->pipe);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->magic = 0;
    free(c);
    lb_worker_conn_closed(w);
}

/* ---- responses lb writes itself -------------------------------------------- */

void lb_conn_log(struct lb_conn *c)
{
    ev_tstamp now = now_of(c);
    const struct lb_exchange *x = c->x; /* NULL: nothing was read */
    struct lb_access_entry e = {
        .client = c->peer,
        .method = x && x->log_method_len ? x->log_request : NULL,
        .method_len = x ? x->log_method_len : 0,
        .target = x ? x->log_request + x->log_method_len : "",
        .target_len = x ? x->log_target_len : 0,
        .status = c->status,
        .bytes = c->log_bytes + (x ? x->resp.body_bytes : 0),
        .server = c->log_server,
        .connect_time = c->t_connected > 0 ? c->t_connected - c->t_connect_start : -1,
        .response_time = c->t_response > 0 ? c->t_response - c->t_start : -1,
        .total_time = c->t_start > 0 ? now - c->t_start : 0,
    };
    lb_log_access(&e);
    /* a client that left before any response counts as none, not as 4xx */
    lb_stats_count_response(&c->w->stats, c->status == LB_STATUS_CLIENT_GONE ? 0 : c->status);
    c->logged = true;
}

void lb_conn_reply_error(struct lb_conn *c, int status)
{
    if (c->resp_head_sent || lb_conn_buf(c, &c->cout) < 0) {
        lb_conn_log(c);
        lb_proxy_release(c, false);
        c->state = CONN_CLOSING;
        c->client_eof = true; /* nothing more is read: close once flushed */
        return;
    }
    lb_proxy_release(c, false);
    const char *reason = lb_http_reason(status);
    char body[64];
    int body_len = snprintf(body, sizeof(body), "%d %s\n", status, reason);
    lb_buf_printf(&c->cout,
                  "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                  "%sConnection: close\r\n\r\n%s",
                  status, reason, body_len, status == 503 ? "Retry-After: 1\r\n" : "", body);
    c->status = status;
    c->resp_head_sent = true;
    c->log_bytes = (uint64_t)body_len;
    lb_conn_log(c);
    c->state = CONN_CLOSING;
}

/* ---- steps ------------------------------------------------------------------- */

enum lb_step lb_conn_flush(struct lb_conn *c)
{
    enum lb_io r;
    if (lb_buf_len(&c->cout) > 0) {
        r = lb_io_flush(c->fd, &c->cout);
    } else if (c->pipe && c->pipe->len > 0) { /* the pipe's bytes follow cout's */
        size_t n;
        r = lb_splice_out(c->pipe, c->fd, &n);
    } else {
        return STEP_IDLE;
    }
    switch (r) {
    case LB_IO_OK:
        c->client_activity = now_of(c);
        return STEP_PROGRESS;
    case LB_IO_AGAIN:
        return STEP_IDLE;
    default:
        lb_conn_destroy(c);
        return STEP_GONE;
    }
}

/* Reads from the client into cin. */
enum lb_step lb_conn_read_client(struct lb_conn *c)
{
    if (c->client_eof || !c->client_rd || lb_conn_buf(c, &c->cin) < 0)
        return STEP_IDLE;
    c->client_rd = false;
    bool was_empty = lb_conn_idle(c);
    switch (lb_io_read(c->fd, &c->cin)) {
    case LB_IO_OK:
        c->client_rd = lb_buf_room(&c->cin) == 0; /* full: probably more */
        c->client_activity = now_of(c);
        if (!c->x && take_exchange(c) < 0) {
            lb_conn_destroy(c);
            return STEP_GONE;
        }
        if (was_empty && c->state == CONN_READ_HEAD && c->t_start == 0)
            c->t_start = c->client_activity; /* the head deadline starts now */
        return STEP_PROGRESS;
    case LB_IO_AGAIN:
        return STEP_IDLE;
    case LB_IO_EOF:
        c->client_eof = true;
        return STEP_PROGRESS;
    default:
        lb_conn_destroy(c);
        return STEP_GONE;
    }
}

/* CONN_READ_HEAD: parse what is buffered, else read more. */
static enum lb_step step_read_head(struct lb_conn *c)
{
    /* The previous response may still be leaving (a slow reader). */
    enum lb_step flushed = lb_conn_flush(c);
    if (flushed == STEP_GONE)
        return flushed;
    if (lb_buf_len(&c->cin) > 0) {
        switch (lb_http_parse(&c->x->req, &c->cin, NULL)) {
        case LB_HTTP_HEAD:
            return lb_proxy_start(c);
        case LB_HTTP_ERROR:
            lb_log_info("client %s: bad request: %s", c->peer, c->x->req.error_text);
            lb_conn_reply_error(c, c->x->req.error_status);
            return STEP_PROGRESS;
        default:
            break;
        }
    }
    bool idle = lb_conn_idle(c);
    if (idle && (c->w->draining || c->client_eof)) {
        c->state = CONN_CLOSING; /* after what is still in cout */
        c->client_eof = true;
        return STEP_PROGRESS;
    }
    if (c->client_eof) { /* closed inside a head */
        lb_conn_destroy(c);
        return STEP_GONE;
    }
    enum lb_step s = lb_conn_read_client(c);
    return s == STEP_IDLE ? flushed : s;
}

/* CONN_CLOSING: flush, shut the write side, then read until the client closes
 * (so unread request bytes do not turn the close into a reset that could
 * destroy the response in flight). */
static enum lb_step step_closing(struct lb_conn *c)
{
    enum lb_step s = lb_conn_flush(c);
    if (s != STEP_IDLE || lb_conn_output_pending(c))
        return s;
    if (!c->lingering) {
        shutdown(c->fd, SHUT_WR);
        c->lingering = true;
        c->client_activity = now_of(c);
        if (c->client_eof) {
            lb_conn_destroy(c);
            return STEP_GONE;
        }
    }
    char sink[4096];
    for (;;) {
        ssize_t n = read(c->fd, sink, sizeof(sink));
        if (n > 0)
            continue;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return STEP_IDLE;
        lb_conn_destroy(c);
        return STEP_GONE;
    }
}

/* Runs the state machine until nothing moves, then sets the watchers and the
 * deadline to what the connection waits for. */
static void conn_run(struct lb_conn *c)
{
    enum lb_step s = STEP_IDLE;
    for (int round = 0; round < 64; round++) {
        s = STEP_IDLE;
        switch (c->state) {
        case CONN_READ_HEAD:
            s = step_read_head(c);
            break;
        case CONN_QUEUED:
            s = lb_proxy_queue_step(c);
            break;
        case CONN_CONNECT:
        case CONN_PROXY:
            s = lb_proxy_step(c);
            break;
        case CONN_TUNNEL:
            s = lb_proxy_tunnel_step(c);
            break;
        case CONN_CLOSING:
            s = step_closing(c);
            break;
        }
        if (s == STEP_GONE)
            return;
        if (s == STEP_IDLE)
            break;
    }
    if (c->state == CONN_READ_HEAD && lb_conn_idle(c)) {
        release_empty_buffers(c);
        give_exchange(c);
    }
    update_watchers(c);
    /* Still moving after a fair share of the loop: run again after the other
     * connections, since no socket event may come. (After update_watchers:
     * stopping a watcher clears what was fed to it.) */
    if (s == STEP_PROGRESS)
        ev_feed_event(c->w->loop, &c->io, EV_CUSTOM);
}

/* Client and server sockets of a connection share one driver: any event
 * runs the state machine, which looks at both. */
static void on_io(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop;
    struct lb_conn *c = io->data;
    assert(c->magic == LB_CONN_MAGIC);
    if (revents & EV_READ) {
        if (io == &c->io)
            c->client_rd = true;
        else
            c->up_rd = true;
    }
    conn_run(c);
}

void lb_conn_watch_upstream(struct lb_conn *c)
{
    ev_set_cb(&c->up->io, on_io);
    c->up->io.data = c;
    c->up_rd = false;
}

void lb_conn_queue_poll(struct lb_worker *w)
{
    for (struct lb_conn *c = w->queue_head; c; c = c->qnext)
        ev_feed_event(w->loop, &c->io, EV_CUSTOM);
}

/* ---- drain -------------------------------------------------------------------- */

void lb_conn_drain_all(struct lb_worker *w)
{
    struct lb_conn *c = w->conns;
    while (c) {
        struct lb_conn *next = c->next;
        c->keep_alive = false;
        if (c->state == CONN_READ_HEAD && lb_conn_idle(c))
            lb_conn_destroy(c);
        c = next;
    }
}

void lb_conn_close_all(struct lb_worker *w)
{
    while (w->conns)
        lb_conn_destroy(w->conns);
}
