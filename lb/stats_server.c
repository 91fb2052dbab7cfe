#include "stats_server.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ev.h>

#include "health.h"
#include "http1.h"
#include "io.h"
#include "log.h"

#define REQUEST_BUFFER 4096     /* a scrape's request head; longer is refused */
#define CONN_TIMEOUT 5.0        /* seconds a connection may take in all */
#define ACCEPT_PAUSE 0.1        /* seconds without accepting after EMFILE and the like */

struct stats_conn {
    struct lb_stats_server *server;
    int fd;
    ev_io io;
    ev_timer timer;
    struct lb_buf in;
    struct lb_http_parser parser;
    char *out; /* the response, malloc'd */
    size_t out_len, out_sent;
    bool lingering; /* the response went: reading until the client closes */
    struct stats_conn *next, *prev;
};

struct lb_stats_server {
    const struct lb_config *cfg;
    struct lb_worker_stats *const *workers;
    unsigned n_workers;
    const atomic_uint_fast64_t *connections_open;
    struct lb_http_limits limits;
    int fd;
    struct ev_loop *loop;
    ev_io accept_io;
    ev_timer accept_resume; /* accepting again after running out of descriptors */
    ev_async stop;
    pthread_t thread;
    struct stats_conn *conns;
    unsigned n_conns;
};

static void conn_close(struct stats_conn *c)
{
    struct lb_stats_server *s = c->server;
    ev_io_stop(s->loop, &c->io);
    ev_timer_stop(s->loop, &c->timer);
    close(c->fd);
    lb_buf_free(&c->in);
    free(c->out);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->n_conns--;
    free(c);
}

/* Sets the response: head, and the body unless `head_only`. `body` may be
 * NULL for an error, whose text then is the status and reason. */
static int respond(struct stats_conn *c, int status, const char *extra, const char *body,
                   size_t body_len, bool head_only)
{
    const char *reason = lb_http_reason(status);
    char text[64];
    const char *type = "text/plain; version=0.0.4; charset=utf-8";
    if (!body) {
        body_len = (size_t)snprintf(text, sizeof(text), "%d %s\n", status, reason);
        body = text;
        type = "text/plain";
    }
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
                     "Connection: close\r\n\r\n",
                     status, reason, type, body_len, extra);
    size_t total = (size_t)n + (head_only ? 0 : body_len);
    if (!(c->out = malloc(total)))
        return -1;
    memcpy(c->out, head, (size_t)n);
    if (!head_only)
        memcpy(c->out + n, body, body_len);
    c->out_len = total;
    return 0;
}

/* A whole request head was read: the answer. */
static int answer(struct stats_conn *c)
{
    struct lb_stats_server *s = c->server;
    const struct lb_http_head *h = &c->parser.head;
    const char *target = c->in.data + h->target.off;
    bool head_only = h->method == HTTP_HEAD;
    if (h->method != HTTP_GET && !head_only)
        return respond(c, 405, "Allow: GET, HEAD\r\n", NULL, 0, false);
    size_t path_len = 0;
    while (path_len < h->target.len && target[path_len] != '?')
        path_len++;
    if (path_len != 8 || memcmp(target, "/metrics", 8) != 0)
        return respond(c, 404, "", NULL, 0, head_only);
    size_t len;
    char *text = lb_stats_render(s->cfg, s->workers, s->n_workers,
                                 atomic_load(s->connections_open), lb_now_ms(), &len);
    if (!text)
        return respond(c, 503, "", NULL, 0, head_only);
    int rc = respond(c, 200, "", text, len, head_only);
    free(text);
    return rc;
}

static void on_conn_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    conn_close(t->data);
}

/* After the response: what the client still sends is read and dropped until
 * it closes (or the connection's timer ends it), so that unread request
 * bytes do not turn the close into a reset that destroys the response. */
static void linger(struct stats_conn *c)
{
    char sink[4096];
    for (;;) {
        ssize_t n = recv(c->fd, sink, sizeof(sink), 0);
        if (n > 0 || (n < 0 && errno == EINTR))
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        conn_close(c);
        return;
    }
}

static void on_conn_io(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)revents;
    struct stats_conn *c = io->data;
    if (c->lingering) {
        linger(c);
        return;
    }
    if (!c->out) {
        switch (lb_io_read(c->fd, &c->in)) {
        case LB_IO_OK:
            break;
        case LB_IO_AGAIN:
            if (lb_buf_room(&c->in) > 0)
                return;
            break; /* full: the parser answers 431 */
        default:
            conn_close(c);
            return;
        }
        int rc;
        switch (lb_http_parse(&c->parser, &c->in, NULL)) {
        case LB_HTTP_HEAD:
            rc = answer(c);
            break;
        case LB_HTTP_ERROR: /* a head longer than the buffer included: 431 */
            rc = respond(c, c->parser.error_status, "", NULL, 0, false);
            break;
        default:
            return; /* more of the head to come */
        }
        if (rc < 0) {
            conn_close(c);
            return;
        }
        ev_io_stop(loop, io);
        ev_io_modify(io, EV_WRITE);
        ev_io_start(loop, io);
    }
    size_t n;
    enum lb_io r = lb_io_write(c->fd, c->out + c->out_sent, c->out_len - c->out_sent, &n);
    c->out_sent += n;
    if (r == LB_IO_ERROR) {
        conn_close(c);
        return;
    }
    if (c->out_sent < c->out_len)
        return;
    shutdown(c->fd, SHUT_WR); /* Connection: close */
    c->lingering = true;
    ev_io_stop(loop, io);
    ev_io_modify(io, EV_READ);
    ev_io_start(loop, io);
    linger(c);
}

static void on_accept(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)revents;
    struct lb_stats_server *s = io->data;
    for (;;) {
        int fd = accept4(s->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            /* Out of descriptors or memory: the listener stays readable, so
             * stop looking at it for a moment instead of spinning. */
            lb_log_error("stats: accept: %s; pausing accepts for %.1fs", strerror(errno),
                         ACCEPT_PAUSE);
            ev_io_stop(loop, &s->accept_io);
            /* set again: a timer that fired keeps no interval */
            ev_timer_set(&s->accept_resume, ACCEPT_PAUSE, 0.);
            ev_timer_start(loop, &s->accept_resume);
            return;
        }
        struct stats_conn *c = s->n_conns < LB_STATS_MAX_CONNS ? calloc(1, sizeof(*c)) : NULL;
        if (!c || lb_buf_init(&c->in, REQUEST_BUFFER) < 0) {
            free(c);
            close(fd);
            continue;
        }
        c->server = s;
        c->fd = fd;
        lb_http_parser_init(&c->parser, LB_HTTP_REQUEST, &s->limits);
        ev_io_init(&c->io, on_conn_io, fd, EV_READ);
        c->io.data = c;
        ev_timer_init(&c->timer, on_conn_timeout, CONN_TIMEOUT, 0.);
        c->timer.data = c;
        ev_io_start(loop, &c->io);
        ev_timer_start(loop, &c->timer);
        c->next = s->conns;
        if (s->conns)
            s->conns->prev = c;
        s->conns = c;
        s->n_conns++;
    }
}

static void on_accept_resume(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    struct lb_stats_server *s = t->data;
    ev_io_start(loop, &s->accept_io);
}

static void on_stop(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)a;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

static void *stats_main(void *arg)
{
    struct lb_stats_server *s = arg;
    ev_run(s->loop, 0);
    return NULL;
}

static int open_listener(const struct lb_address *a)
{
    int fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0)
        return -1;
    if (a->sa.ss_family == AF_INET6) /* as the listeners: [::] is not also 0.0.0.0 */
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, (const struct sockaddr *)&a->sa, a->len) < 0 || listen(fd, 64) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

struct lb_stats_server *lb_stats_server_start(const struct lb_config *cfg,
                                              struct lb_worker_stats *const *workers, unsigned n,
                                              const atomic_uint_fast64_t *connections_open)
{
    struct lb_stats_server *s = calloc(1, sizeof(*s));
    if (!s) {
        lb_log_error("stats: out of memory");
        return NULL;
    }
    s->cfg = cfg;
    s->workers = workers;
    s->n_workers = n;
    s->connections_open = connections_open;
    s->limits = (struct lb_http_limits){.max_header_size = REQUEST_BUFFER,
                                        .max_uri_size = REQUEST_BUFFER};
    s->fd = open_listener(&cfg->stats.address);
    if (s->fd < 0) {
        lb_log_error("stats: listen on %s: %s", cfg->stats.address.text, strerror(errno));
        free(s);
        return NULL;
    }
    s->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    if (!s->loop) {
        lb_log_error("stats: cannot create an event loop");
        close(s->fd);
        free(s);
        return NULL;
    }
    ev_io_init(&s->accept_io, on_accept, s->fd, EV_READ);
    s->accept_io.data = s;
    ev_io_start(s->loop, &s->accept_io);
    ev_timer_init(&s->accept_resume, on_accept_resume, ACCEPT_PAUSE, 0.);
    s->accept_resume.data = s;
    ev_async_init(&s->stop, on_stop);
    ev_async_start(s->loop, &s->stop);
    int rc = pthread_create(&s->thread, NULL, stats_main, s);
    if (rc != 0) {
        lb_log_error("stats: %s", strerror(rc));
        ev_loop_destroy(s->loop);
        close(s->fd);
        free(s);
        return NULL;
    }
    lb_log_info("stats on http://%s/metrics", cfg->stats.address.text);
    return s;
}

void lb_stats_server_stop(struct lb_stats_server *s)
{
    if (!s)
        return;
    ev_async_send(s->loop, &s->stop);
    pthread_join(s->thread, NULL);
    while (s->conns)
        conn_close(s->conns);
    ev_io_stop(s->loop, &s->accept_io);
    ev_timer_stop(s->loop, &s->accept_resume);
    close(s->fd);
    ev_loop_destroy(s->loop);
    free(s);
}
