/* One client connection of lb-backend: reads into a fixed input buffer, runs
 * the lb/http1 parser over it, queues the answers in request order into one
 * output buffer (so a batch of pipelined answers goes out in one write), and
 * streams the bodies that do not fit there (/bytes, big /echo) with
 * back-pressure: writing stops at EAGAIN and resumes on EV_WRITE, and no new
 * request is parsed while an answer is still being streamed.
 *
 * Memory per connection is bounded: BE_IN_BUF_SIZE + BE_OUT_BUF_SIZE, plus
 * the request being echoed (at most BE_ECHO_MAX_BODY of body) on /echo. */
#include "backend.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define BE_LINGER_SECONDS 2.0
#define BE_READS_PER_EVENT 16  /* then let other connections run */
#define BE_WRITES_PER_EVENT 16 /* likewise, for a long /bytes stream */
#define BE_ECHO_FIRST_CAP (64 * 1024)
/* lb_http_parse() only writes a body into `out` while more than its framing
 * margin (32 bytes) is free: the echo buffer keeps this much spare. */
#define BE_ECHO_SLACK 64
#define BE_SEGMENT (64 * 1024) /* pattern bytes per write (and per chunk) */
#define BE_PATTERN_PERIOD 64

static const char pattern[BE_PATTERN_PERIOD + 1] =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_";
/* The pattern repeated, one period longer than a segment so a segment can start
 * at any phase of it. Filled at the first connection. */
static char pattern_block[BE_SEGMENT + BE_PATTERN_PERIOD];

enum flush_result { FLUSH_DONE, FLUSH_AGAIN, FLUSH_ERROR };

static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void on_error(struct be_conn *c, int status, const char *text);
static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);

/* The one destructor: every error, timeout and close path ends here. */
static void conn_destroy(struct be_conn *c)
{
    assert(c->magic == BE_CONN_MAGIC);
    struct be_server *srv = c->srv;
    ev_io_stop(srv->loop, &c->io);
    ev_timer_stop(srv->loop, &c->timer);
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    lb_buf_free(&c->in);
    lb_buf_free(&c->out);
    lb_buf_free(&c->echo);
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->magic = 0;
    free(c);
}

void be_conn_close_all(struct be_server *srv)
{
    while (srv->conns)
        conn_destroy(srv->conns);
}

int be_conn_start(struct be_server *srv, int fd)
{
    if (pattern_block[0] == '\0') {
        for (size_t i = 0; i < sizeof(pattern_block); i++)
            pattern_block[i] = pattern[i % BE_PATTERN_PERIOD];
    }
    struct be_conn *c = calloc(1, sizeof(*c));
    if (!c)
        goto fail;
    if (lb_buf_init(&c->in, BE_IN_BUF_SIZE) < 0 || lb_buf_init(&c->out, BE_OUT_BUF_SIZE) < 0)
        goto fail;
    c->magic = BE_CONN_MAGIC;
    c->fd = fd;
    c->srv = srv;
    c->state = BE_ST_HEAD;
    lb_http_parser_init(&c->parser, LB_HTTP_REQUEST, &srv->limits);
    ev_io_init(&c->io, conn_io_cb, fd, EV_READ);
    ev_init(&c->timer, conn_timer_cb);
    c->next = srv->conns;
    if (c->next)
        c->next->prev = c;
    srv->conns = c;
    ev_io_start(srv->loop, &c->io);
    return 0;
fail:
    if (c) {
        lb_buf_free(&c->out);
        lb_buf_free(&c->in);
        free(c);
    }
    close(fd);
    return -1;
}

/* ---- answers ---- */

static bool status_has_body(int status)
{
    return status >= 200 && status != 204 && status != 304;
}

static void log_request(const struct be_conn *c, int status, uint64_t body_len)
{
    if (!c->srv->log)
        return;
    fprintf(stderr, "%s %s %s %d %" PRIu64 "\n", c->srv->id, c->req.method, c->req.target, status,
            body_len);
}

/* Makes sure `out` has BE_OUT_RESERVE free at its tail. */
static bool out_has_reserve(struct be_conn *c)
{
    if (lb_buf_room(&c->out) < BE_OUT_RESERVE)
        lb_buf_compact(&c->out);
    return lb_buf_room(&c->out) >= BE_OUT_RESERVE;
}

/* Queues an answer head. `length` < 0: chunked; the length is left out for
 * statuses that have no body. Returns 0, or -1 (the connection then closes:
 * the caller broke the BE_OUT_RESERVE precondition). */
static int queue_head(struct be_conn *c, int status, const char *extra_headers, int64_t length)
{
    const char *conn_hdr = "";
    if (c->close_after)
        conn_hdr = "Connection: close\r\n";
    else if (c->req.http10)
        conn_hdr = "Connection: keep-alive\r\n";
    char len_hdr[48] = "";
    if (!status_has_body(status))
        len_hdr[0] = '\0';
    else if (length < 0)
        snprintf(len_hdr, sizeof(len_hdr), "Transfer-Encoding: chunked\r\n");
    else
        snprintf(len_hdr, sizeof(len_hdr), "Content-Length: %" PRId64 "\r\n", length);
    int rc = lb_buf_printf(&c->out, "HTTP/1.1 %d %s\r\nX-Backend-Id: %s\r\n%s%s%s%s\r\n", status,
                           be_reason(status), c->srv->id,
                           status_has_body(status) ? "Content-Type: text/plain\r\n" : "", len_hdr,
                           extra_headers ? extra_headers : "", conn_hdr);
    if (rc < 0) {
        c->state = BE_ST_CLOSING;
        return -1;
    }
    return 0;
}

void be_conn_respond(struct be_conn *c, int status, const char *extra_headers, const char *body,
                     size_t body_len)
{
    if (!status_has_body(status))
        body_len = 0;
    if (queue_head(c, status, extra_headers, (int64_t)body_len) < 0)
        return;
    if (!c->req.is_head && body_len > 0 && lb_buf_append(&c->out, body, body_len) < 0)
        c->state = BE_ST_CLOSING;
    log_request(c, status, body_len);
}

void be_conn_interim(struct be_conn *c, int status)
{
    if (lb_buf_printf(&c->out, "HTTP/1.1 %d %s\r\nX-Backend-Id: %s\r\n\r\n", status,
                      be_reason(status), c->srv->id) < 0)
        c->state = BE_ST_CLOSING;
}

void be_conn_respond_echo(struct be_conn *c)
{
    size_t len = lb_buf_len(&c->echo);
    log_request(c, 200, len);
    if (queue_head(c, 200, NULL, (int64_t)len) < 0 || c->req.is_head || len == 0) {
        lb_buf_free(&c->echo);
        return;
    }
    if (lb_buf_room(&c->out) >= len) {
        lb_buf_append(&c->out, lb_buf_start(&c->echo), len);
        lb_buf_free(&c->echo);
        return;
    }
    c->stream = BE_STREAM_ECHO;
    c->seg = lb_buf_start(&c->echo);
    c->seg_len = len;
    c->state = BE_ST_STREAM;
}

void be_conn_respond_bytes(struct be_conn *c, uint64_t n, bool chunked)
{
    log_request(c, 200, n);
    if (queue_head(c, 200, NULL, chunked ? -1 : (int64_t)n) < 0 || c->req.is_head)
        return;
    if (n == 0 && !chunked)
        return;
    c->stream = BE_STREAM_BYTES;
    c->stream_left = n;
    c->stream_pos = 0;
    c->stream_chunked = chunked;
    c->stream_started = false;
    c->seg_len = 0;
    c->state = BE_ST_STREAM;
}

void be_conn_reset(struct be_conn *c)
{
    c->reset_after = true;
    c->close_after = true;
    c->state = BE_ST_CLOSING;
    log_request(c, 0, 0);
}

void be_conn_hang(struct be_conn *c)
{
    c->state = BE_ST_HANG;
    log_request(c, 0, 0);
}

void be_conn_delay(struct be_conn *c, uint64_t ms)
{
    c->state = BE_ST_DELAY;
    ev_now_update(c->srv->loop); /* so the wait is not cut short by a stale clock */
    ev_timer_set(&c->timer, (double)ms / 1000.0, 0.0);
    ev_timer_start(c->srv->loop, &c->timer);
}

/* ---- streaming ---- */

/* The streamed body was written whole. Moves to: BE_ST_HEAD, BE_ST_CLOSING. */
static void stream_end(struct be_conn *c)
{
    lb_buf_free(&c->echo);
    c->stream = BE_STREAM_NONE;
    c->seg = NULL;
    c->seg_len = 0;
    c->state = c->close_after ? BE_ST_CLOSING : BE_ST_HEAD;
}

/* The current segment was written: set up the next one (with its chunk framing
 * queued into `out`), or end the stream. */
static void stream_refill(struct be_conn *c)
{
    if (c->stream == BE_STREAM_ECHO) {
        stream_end(c);
        return;
    }
    const char *crlf = c->stream_started ? "\r\n" : "";
    if (c->stream_left == 0) {
        if (c->stream_chunked)
            lb_buf_printf(&c->out, "%s0\r\n\r\n", crlf);
        stream_end(c);
        return;
    }
    size_t len = c->stream_left < BE_SEGMENT ? (size_t)c->stream_left : BE_SEGMENT;
    if (c->stream_chunked)
        lb_buf_printf(&c->out, "%s%zx\r\n", crlf, len);
    c->seg = pattern_block + c->stream_pos % BE_PATTERN_PERIOD;
    c->seg_len = len;
    c->stream_left -= len;
    c->stream_pos += len;
    c->stream_started = true;
}

/* Writes `out`, then the streamed segment, until both are empty or the socket
 * is full. */
static enum flush_result conn_flush(struct be_conn *c)
{
    for (int round = 0; round < BE_WRITES_PER_EVENT; round++) {
        if (c->seg_len == 0 && c->stream != BE_STREAM_NONE)
            stream_refill(c);
        size_t olen = lb_buf_len(&c->out);
        size_t total = olen + c->seg_len;
        if (total == 0)
            return FLUSH_DONE;
        struct iovec iov[2];
        int n = 0;
        if (olen > 0)
            iov[n++] = (struct iovec){lb_buf_start(&c->out), olen};
        if (c->seg_len > 0)
            iov[n++] = (struct iovec){(void *)c->seg, c->seg_len};
        ssize_t w = writev(c->fd, iov, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return FLUSH_AGAIN;
            return FLUSH_ERROR;
        }
        size_t k = (size_t)w;
        size_t from_out = k < olen ? k : olen;
        lb_buf_consume(&c->out, from_out);
        k -= from_out;
        c->seg += k;
        c->seg_len -= k;
        if ((size_t)w < total)
            return FLUSH_AGAIN; /* a short write: the socket buffer is full */
    }
    return FLUSH_AGAIN;
}

/* ---- requests ---- */

/* A head was parsed. Moves to: BE_ST_BODY, BE_ST_CLOSING (rejected at once). */
static void on_head(struct be_conn *c)
{
    const struct lb_http_head *h = &c->parser.head;
    c->state = BE_ST_BODY;
    c->close_after = !h->keep_alive || h->upgrade;
    be_route_head(c, h, c->in.data);
    if (c->req.reject_now) {
        /* Answer without reading the body, then close: the client may still be
         * sending it, which the linger drains. */
        c->close_after = true;
        be_conn_respond(c, c->req.error_status, NULL, c->req.error_text, strlen(c->req.error_text));
        c->state = BE_ST_CLOSING;
        return;
    }
    if (c->req.route != BE_ROUTE_ECHO) {
        c->parser.out_framing = LB_FRAMING_DISCARD;
        return;
    }
    /* /echo answers with the head exactly as it arrived, then the body. The
     * head is at the start of `in`; the request line at the method (llhttp
     * skips empty lines before it). */
    size_t head_off = h->method_text.off, head_len = h->size - h->method_text.off;
    size_t body = h->has_content_length ? (size_t)h->content_length : BE_ECHO_FIRST_CAP;
    if (lb_buf_init(&c->echo, head_len + body + BE_ECHO_SLACK) < 0) {
        c->state = BE_ST_CLOSING;
        return;
    }
    lb_buf_append(&c->echo, c->in.data + head_off, head_len);
    c->parser.out_framing = LB_FRAMING_LENGTH;
}

/* The echo buffer is (nearly) full but the body goes on: grow it until the
 * body shows to be over the limit. Returns 0, or -1 when it is over it. */
static int echo_grow(struct be_conn *c)
{
    if (c->parser.body_bytes > BE_ECHO_MAX_BODY)
        return -1;
    size_t max = c->echo.tail - c->parser.body_bytes + BE_ECHO_MAX_BODY + 2 * BE_ECHO_SLACK;
    if (c->echo.cap >= max)
        return -1;
    size_t cap = c->echo.cap * 2 < max ? c->echo.cap * 2 : max;
    char *data = realloc(c->echo.data, cap);
    if (!data)
        return -1;
    c->echo.data = data;
    c->echo.cap = cap;
    return 0;
}

/* The request was read whole. Moves to: BE_ST_HEAD, BE_ST_DELAY, BE_ST_STREAM,
 * BE_ST_CLOSING. */
static void on_done(struct be_conn *c)
{
    c->req.body_bytes = c->parser.body_bytes;
    if (c->req.route == BE_ROUTE_ECHO && c->req.body_bytes > BE_ECHO_MAX_BODY) {
        on_error(c, 413, "request body over 1 MiB");
        return;
    }
    lb_http_parser_next(&c->parser);
    c->state = BE_ST_HEAD;
    be_route_answer(c);
    if (c->state == BE_ST_HEAD && c->close_after)
        c->state = BE_ST_CLOSING;
}

/* The request cannot be parsed: answer its error and close. Moves to:
 * BE_ST_CLOSING. */
static void on_error(struct be_conn *c, int status, const char *text)
{
    char body[160];
    int n = snprintf(body, sizeof(body), "%s\n", text ? text : "bad request");
    lb_buf_free(&c->echo);
    c->req.is_head = false;
    c->req.http10 = false;
    if (c->state == BE_ST_HEAD) {
        snprintf(c->req.method, sizeof(c->req.method), "-");
        snprintf(c->req.target, sizeof(c->req.target), "-");
    }
    c->close_after = true;
    be_conn_respond(c, status, NULL, body, (size_t)n < sizeof(body) ? (size_t)n : sizeof(body) - 1);
    c->state = BE_ST_CLOSING;
}

/* Parses and answers requests until input runs out, an answer must wait (delay,
 * stream) or `out` lacks room for one more answer. Returns true in the last
 * case, which a flush lifts. */
static bool conn_process(struct be_conn *c)
{
    while (c->state == BE_ST_HEAD || c->state == BE_ST_BODY) {
        if (c->state == BE_ST_HEAD) {
            if (lb_buf_len(&c->in) == 0)
                return false;
            if (!out_has_reserve(c))
                return true;
        }
        struct lb_buf *body_out = NULL;
        if (c->state == BE_ST_BODY && c->req.route == BE_ROUTE_ECHO)
            body_out = &c->echo;
        switch (lb_http_parse(&c->parser, &c->in, body_out)) {
        case LB_HTTP_AGAIN:
            if (body_out && lb_buf_room(body_out) < BE_ECHO_SLACK) {
                if (echo_grow(c) == 0)
                    break;
                on_error(c, 413, "request body over 1 MiB");
            }
            return false;
        case LB_HTTP_HEAD:
            on_head(c);
            break;
        case LB_HTTP_DONE:
            on_done(c);
            break;
        case LB_HTTP_ERROR:
            on_error(c, c->parser.error_status ? c->parser.error_status : 400,
                     c->parser.error_text);
            return false;
        }
    }
    return false;
}

/* ---- I/O ---- */

static void update_events(struct be_conn *c)
{
    int events = 0;
    bool reading =
        c->state == BE_ST_LINGER || (c->state == BE_ST_HANG && !c->read_eof) ||
        (!c->read_eof && c->state != BE_ST_CLOSING && (lb_buf_room(&c->in) > 0 || c->in.head > 0));
    if (reading)
        events |= EV_READ;
    if (lb_buf_len(&c->out) > 0 || c->seg_len > 0 || c->stream != BE_STREAM_NONE)
        events |= EV_WRITE;
    if (ev_is_active(&c->io) && (c->io.events & (EV_READ | EV_WRITE)) == events)
        return;
    ev_io_stop(c->srv->loop, &c->io);
    if (events) {
        ev_io_set(&c->io, c->fd, events);
        ev_io_start(c->srv->loop, &c->io);
    }
}

/* Reads what the socket has (bounded per event), parsing as it goes so a long
 * body streams through the fixed buffer. Returns 0, or -1 on a socket error. */
static int conn_read(struct be_conn *c)
{
    for (int round = 0; round < BE_READS_PER_EVENT; round++) {
        if (c->state == BE_ST_LINGER || c->state == BE_ST_HANG)
            c->in.head = c->in.tail = 0; /* dropped: only EOF matters now */
        if (lb_buf_room(&c->in) == 0) {
            /* No head is half-parsed past offset 0 here: the parser compacts
             * at each message start, so this never moves live slices. */
            lb_buf_compact(&c->in);
            if (lb_buf_room(&c->in) == 0)
                return 0;
        }
        size_t room = lb_buf_room(&c->in);
        ssize_t n = read(c->fd, lb_buf_end(&c->in), room);
        if (n > 0) {
            lb_buf_produce(&c->in, (size_t)n);
            if (c->state == BE_ST_HEAD || c->state == BE_ST_BODY)
                conn_process(c);
            if (c->state == BE_ST_CLOSING)
                return 0;
            if ((size_t)n < room)
                return 0; /* drained: level-triggered, so nothing is left behind */
            continue;
        }
        if (n == 0) {
            c->read_eof = true;
            return 0;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        return -1;
    }
    return 0;
}

/* Answers what can be answered, writes it, and decides what to wait for.
 * Returns 0, or -1 when the connection is finished. */
static int conn_drive(struct be_conn *c)
{
    for (;;) {
        enum be_conn_state before = c->state;
        bool blocked = conn_process(c);
        enum flush_result fr = conn_flush(c);
        if (fr == FLUSH_ERROR)
            return -1;
        if (fr == FLUSH_AGAIN)
            break;
        /* Everything queued is out: go on if that unblocked the parser or a
         * stream just ended with pipelined requests waiting. */
        if (!(blocked || (before == BE_ST_STREAM && c->state == BE_ST_HEAD)))
            break;
    }
    bool idle = lb_buf_len(&c->out) == 0 && c->seg_len == 0 && c->stream == BE_STREAM_NONE;
    if (c->state == BE_ST_CLOSING && idle && c->reset_after) {
        /* /reset: an abortive close, so the peer sees ECONNRESET, not EOF */
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        return -1;
    }
    if (c->state == BE_ST_HANG && c->read_eof)
        return -1; /* /hang: the peer gave up */
    if (c->state == BE_ST_CLOSING && idle) {
        if (c->read_eof)
            return -1;
        /* Shut our side first and drain theirs, so a request still arriving
         * does not turn the close into a reset that loses the answer. */
        shutdown(c->fd, SHUT_WR);
        c->state = BE_ST_LINGER;
        ev_timer_stop(c->srv->loop, &c->timer);
        ev_timer_set(&c->timer, BE_LINGER_SECONDS, 0.0);
        ev_timer_start(c->srv->loop, &c->timer);
    }
    if (c->read_eof && idle && (c->state == BE_ST_HEAD || c->state == BE_ST_BODY))
        return -1; /* the client is done and so are we */
    update_events(c);
    return 0;
}

static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    struct be_conn *c = (struct be_conn *)((char *)w - offsetof(struct be_conn, io));
    assert(c->magic == BE_CONN_MAGIC);
    if (revents & EV_READ) {
        if (conn_read(c) < 0 || (c->state == BE_ST_LINGER && c->read_eof)) {
            conn_destroy(c);
            return;
        }
    }
    if (conn_drive(c) < 0)
        conn_destroy(c);
}

/* /delay elapsed (BE_ST_DELAY), or the linger after close did (BE_ST_LINGER). */
static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct be_conn *c = (struct be_conn *)((char *)w - offsetof(struct be_conn, timer));
    assert(c->magic == BE_CONN_MAGIC);
    if (c->state != BE_ST_DELAY) {
        conn_destroy(c);
        return;
    }
    c->state = BE_ST_HEAD;
    be_route_delayed(c);
    if (c->state == BE_ST_HEAD && c->close_after)
        c->state = BE_ST_CLOSING;
    if (conn_drive(c) < 0)
        conn_destroy(c);
}
