#include "listener.h"

#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "log.h"
#include "worker.h"

#define ACCEPTS_PER_WAKEUP 64
#define EMFILE_BACKOFF 0.1

/* Accepts until the queue is empty, the batch is done or a limit is hit. */
static void on_acceptable(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop;
    (void)revents;
    struct lb_listener *l = io->data;
    struct lb_worker *w = l->w;
    for (int i = 0; i < ACCEPTS_PER_WAKEUP; i++) {
        if (atomic_load(&w->shared->connections) >= w->cfg->limits.max_connections) {
            /* Beyond the limit connections wait in the kernel backlog; the
             * resume timer looks again, as does every close. */
            lb_worker_pause_accepting(w, 0.05);
            return;
        }
        struct sockaddr_storage peer;
        socklen_t peer_len = sizeof(peer);
        int fd = accept4(l->fd, (struct sockaddr *)&peer, &peer_len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (i == 0)
                    lb_stat_add(&w->stats.accept_eagain, 1);
                return;
            }
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of descriptors: stop accepting for a moment instead of
                 * spinning on a listener that stays readable. */
                lb_log_error("accept: %s; pausing accepts", strerror(errno));
                lb_worker_pause_accepting(w, EMFILE_BACKOFF);
                return;
            }
            lb_log_error("accept: %s", strerror(errno));
            return;
        }
        atomic_fetch_add(&w->shared->connections, 1);
        lb_stat_add(&w->stats.accepted, 1);
        lb_conn_accept(w, fd, (struct sockaddr *)&peer, peer_len, l->listen);
    }
}

int lb_listener_open(struct lb_listener *l, struct lb_worker *w, const struct lb_listen *where)
{
    const struct lb_address *a = &where->address;
    int one = 1;
    l->w = w;
    l->listen = where;
    l->fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (l->fd < 0)
        goto fail;
    if (setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(l->fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
        goto fail_close;
    if (a->sa.ss_family == AF_INET6)
        setsockopt(l->fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(l->fd, (const struct sockaddr *)&a->sa, a->len) < 0 || listen(l->fd, 4096) < 0)
        goto fail_close;
    ev_io_init(&l->io, on_acceptable, l->fd, EV_READ);
    l->io.data = l;
    return 0;
fail_close:;
    int saved = errno;
    close(l->fd);
    l->fd = -1;
    errno = saved;
fail:
    lb_log_error("listen on %s: %s", a->text, strerror(errno));
    return -1;
}

int lb_listener_check_free(const struct lb_listen *where)
{
    const struct lb_address *a = &where->address;
    int one = 1, rc = -1;
    int fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto out;
    /* SO_REUSEADDR but not SO_REUSEPORT: old connections in TIME_WAIT do not
     * count, a listening socket does. */
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (a->sa.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    rc = bind(fd, (const struct sockaddr *)&a->sa, a->len);
out:
    if (rc < 0)
        lb_log_error("listen on %s: %s", a->text, strerror(errno));
    if (fd >= 0)
        close(fd);
    return rc < 0 ? -1 : 0;
}

void lb_listener_resume(struct lb_listener *l)
{
    if (l->fd >= 0)
        ev_io_start(l->w->loop, &l->io);
}

void lb_listener_pause(struct lb_listener *l)
{
    if (l->fd >= 0)
        ev_io_stop(l->w->loop, &l->io);
}

void lb_listener_close(struct lb_listener *l)
{
    if (l->fd < 0)
        return;
    ev_io_stop(l->w->loop, &l->io);
    close(l->fd);
    l->fd = -1;
}
