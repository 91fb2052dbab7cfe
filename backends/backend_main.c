/* lb-backend: options, the listening socket, accept, signals and the loop.
 *
 *   lb-backend --listen ADDR:PORT [--id NAME] [--log] [--post-log FILE]
 *
 * Prints "lb-backend NAME listening on ADDR:PORT" to stderr once it accepts
 * connections (PORT 0 picks a free port, and the line tells which). SIGTERM and
 * SIGINT stop it with exit status 0. */
#include "backend.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BE_BACKLOG 4096
#define BE_MAX_SESSIONS 65536
#define BE_ACCEPT_PAUSE 0.1 /* seconds without accepting after EMFILE and the like */

struct be_listener {
    struct be_server *srv;
    int fd;
    ev_io io;
    ev_timer pause; /* accept resumes when it fires */
};

static void usage(FILE *f)
{
    fprintf(f, "usage: lb-backend --listen ADDR:PORT [--id NAME] [--log] [--post-log FILE]\n"
               "  --listen ADDR:PORT  address to serve on: 127.0.0.1:9001, [::1]:9001\n"
               "                      (port 0: any free port, printed when ready)\n"
               "  --id NAME           server id in X-Backend-Id and bodies\n"
               "                      (default: the listen address)\n"
               "  --log               one line per request on stderr\n"
               "  --post-log FILE     append the X-Request-Id of every POST to FILE,\n"
               "                      one line each (for counting duplicate deliveries)\n"
               "  -h, --help          this text\n");
}

/* Splits "host:port" or "[v6]:port". Returns 0, or -1 if malformed. */
static int split_address(const char *text, char *host, size_t host_cap, char *port, size_t port_cap)
{
    const char *colon, *h = text;
    size_t hlen;
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (!close || close[1] != ':')
            return -1;
        h = text + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(text, ':');
        if (!colon || memchr(text, ':', (size_t)(colon - text)))
            return -1; /* v6 addresses need brackets */
        hlen = (size_t)(colon - text);
    }
    size_t plen = strlen(colon + 1);
    if (hlen == 0 || hlen >= host_cap || plen == 0 || plen >= port_cap ||
        strspn(colon + 1, "0123456789") != plen)
        return -1;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    memcpy(port, colon + 1, plen + 1);
    return 0;
}

static void format_address(const struct sockaddr_storage *ss, char *out, size_t cap)
{
    char host[INET6_ADDRSTRLEN] = "?";
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
        snprintf(out, cap, "[%s]:%u", host, ntohs(a->sin6_port));
    } else {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
        snprintf(out, cap, "%s:%u", host, ntohs(a->sin_port));
    }
}

/* Opens the non-blocking listening socket for `address`; writes the address it
 * got (port 0 resolved) to `bound`. Returns the fd, or -1 with a message. */
static int listen_on(const char *address, char *bound, size_t bound_cap)
{
    char host[256], port[16];
    struct addrinfo hints = {0}, *ai = NULL;
    int fd = -1, one = 1;
    if (split_address(address, host, sizeof(host), port, sizeof(port)) < 0) {
        fprintf(stderr, "lb-backend: bad --listen address '%s' (want ADDR:PORT or [V6]:PORT)\n",
                address);
        return -1;
    }
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int gai = getaddrinfo(host, port, &hints, &ai);
    if (gai != 0) {
        fprintf(stderr, "lb-backend: %s: %s\n", address, gai_strerror(gai));
        return -1;
    }
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
        goto fail;
    if (ai->ai_family == AF_INET6 &&
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)
        goto fail;
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, BE_BACKLOG) < 0)
        goto fail;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
        goto fail;
    format_address(&ss, bound, bound_cap);
    freeaddrinfo(ai);
    return fd;
fail:
    fprintf(stderr, "lb-backend: %s: %s\n", address, strerror(errno));
    if (fd >= 0)
        close(fd);
    freeaddrinfo(ai);
    return -1;
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    struct be_listener *l = (struct be_listener *)((char *)w - offsetof(struct be_listener, io));
    for (;;) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            /* Out of fds or memory: the pending connections wait in the
             * backlog for a while instead of waking us in a spin. */
            fprintf(stderr, "lb-backend: accept: %s\n", strerror(errno));
            ev_io_stop(loop, &l->io);
            ev_timer_set(&l->pause, BE_ACCEPT_PAUSE, 0.0);
            ev_timer_start(loop, &l->pause);
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        be_conn_start(l->srv, fd);
    }
}

static void accept_resume_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct be_listener *l = (struct be_listener *)((char *)w - offsetof(struct be_listener, pause));
    ev_io_start(loop, &l->io);
}

static void signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

static int valid_id(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > BE_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)id[i];
        if (ch < 0x21 || ch == 0x7f) /* it goes into a header and a cookie-free body */
            return 0;
    }
    return 1;
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"listen", required_argument, NULL, 'l'}, {"id", required_argument, NULL, 'i'},
        {"log", no_argument, NULL, 'L'},          {"post-log", required_argument, NULL, 'P'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    const char *listen_arg = NULL, *id_arg = NULL, *post_log_arg = NULL;
    bool log = false;
    int opt;
    while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        switch (opt) {
        case 'l':
            listen_arg = optarg;
            break;
        case 'i':
            id_arg = optarg;
            break;
        case 'L':
            log = true;
            break;
        case 'P':
            post_log_arg = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!listen_arg || optind != argc) {
        usage(stderr);
        return 2;
    }
    if (id_arg && !valid_id(id_arg)) {
        fprintf(stderr, "lb-backend: --id must be 1..%d visible characters, no spaces\n",
                BE_ID_MAX);
        return 2;
    }

    int status = 1;
    static struct be_server srv;
    static struct be_listener listener;
    ev_signal sigterm, sigint;
    char bound[INET6_ADDRSTRLEN + 16];

    signal(SIGPIPE, SIG_IGN);
    srv.loop = ev_default_loop(EVFLAG_AUTO);
    if (!srv.loop) {
        fprintf(stderr, "lb-backend: cannot create the event loop\n");
        return 1;
    }
    srv.log = log;
    srv.healthy = true;
    srv.post_log_fd = -1;
    if (post_log_arg) {
        srv.post_log_fd = open(post_log_arg, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (srv.post_log_fd < 0) {
            fprintf(stderr, "lb-backend: --post-log %s: %s\n", post_log_arg, strerror(errno));
            goto out;
        }
    }
    srv.limits = (struct lb_http_limits){
        .max_header_size = 32 * 1024, /* fits BE_IN_BUF_SIZE with room to spare */
        .max_uri_size = 16 * 1024,
        .max_body_size = 0,
    };
    srv.sessions = be_sessions_new(BE_MAX_SESSIONS);
    if (!srv.sessions) {
        fprintf(stderr, "lb-backend: out of memory\n");
        goto out;
    }
    listener.srv = &srv;
    listener.fd = listen_on(listen_arg, bound, sizeof(bound));
    if (listener.fd < 0)
        goto out;
    snprintf(srv.id, sizeof(srv.id), "%s", id_arg ? id_arg : bound);
    srv.id_len = strlen(srv.id);
    static const char hello[] = "hello from ";
    int n = snprintf(srv.root_response, sizeof(srv.root_response),
                     "HTTP/1.1 200 OK\r\nX-Backend-Id: %s\r\nContent-Type: text/plain\r\n"
                     "Content-Length: %zu\r\n\r\n%s%s\n",
                     srv.id, sizeof(hello) - 1 + srv.id_len + 1, hello, srv.id);
    srv.root_response_len = (size_t)n;

    ev_io_init(&listener.io, accept_cb, listener.fd, EV_READ);
    ev_init(&listener.pause, accept_resume_cb);
    ev_io_start(srv.loop, &listener.io);
    ev_signal_init(&sigterm, signal_cb, SIGTERM);
    ev_signal_init(&sigint, signal_cb, SIGINT);
    ev_signal_start(srv.loop, &sigterm);
    ev_signal_start(srv.loop, &sigint);

    fprintf(stderr, "lb-backend %s listening on %s\n", srv.id, bound);
    ev_run(srv.loop, 0);
    status = 0;

    ev_signal_stop(srv.loop, &sigterm);
    ev_signal_stop(srv.loop, &sigint);
    ev_io_stop(srv.loop, &listener.io);
    ev_timer_stop(srv.loop, &listener.pause);
    be_conn_close_all(&srv);
    close(listener.fd);
out:
    if (srv.post_log_fd >= 0)
        close(srv.post_log_fd);
    be_sessions_free(srv.sessions);
    ev_loop_destroy(srv.loop);
    return status;
}
