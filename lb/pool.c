#include "pool.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

struct lb_pool_slot {
    struct lb_upstream *head; /* most recently given back first */
    size_t count;
};

static struct lb_pool_slot *slot_of(const struct lb_pool *pool, const struct lb_backend *backend,
                                    const struct lb_server *server)
{
    return &pool->slots[backend - pool->cfg->backends][server->index];
}

int lb_pool_init(struct lb_pool *pool, struct ev_loop *loop, const struct lb_config *cfg)
{
    pool->loop = loop;
    pool->cfg = cfg;
    pool->slots = calloc(cfg->n_backends, sizeof(*pool->slots));
    if (!pool->slots)
        return -1;
    for (size_t b = 0; b < cfg->n_backends; b++) {
        pool->slots[b] = calloc(cfg->backends[b].n_servers, sizeof(**pool->slots));
        if (!pool->slots[b]) {
            lb_pool_destroy(pool);
            return -1;
        }
    }
    return 0;
}

static void unlink_idle(struct lb_pool *pool, struct lb_upstream *up)
{
    struct lb_pool_slot *slot = slot_of(pool, up->backend, up->server);
    if (up->prev)
        up->prev->next = up->next;
    else
        slot->head = up->next;
    if (up->next)
        up->next->prev = up->prev;
    up->next = up->prev = NULL;
    slot->count--;
    ev_io_stop(pool->loop, &up->io);
    ev_timer_stop(pool->loop, &up->idle);
}

void lb_pool_destroy(struct lb_pool *pool)
{
    if (!pool->slots)
        return;
    for (size_t b = 0; b < pool->cfg->n_backends; b++) {
        if (!pool->slots[b])
            continue;
        for (size_t s = 0; s < pool->cfg->backends[b].n_servers; s++)
            while (pool->slots[b][s].head) {
                struct lb_upstream *up = pool->slots[b][s].head;
                unlink_idle(pool, up);
                lb_upstream_close(up);
            }
        free(pool->slots[b]);
    }
    free(pool->slots);
    pool->slots = NULL;
}

static void drop_idle(struct lb_upstream *up)
{
    unlink_idle(up->pool, up);
    lb_upstream_close(up);
}

/* An idle connection became readable: the server closed it, or sent bytes
 * nobody asked for. Either way it can no longer be used. */
static void on_idle_readable(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    drop_idle(w->data);
}

static void on_idle_expired(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    drop_idle(w->data);
}

struct lb_upstream *lb_pool_take(struct lb_pool *pool, const struct lb_backend *backend,
                                 struct lb_server *server)
{
    struct lb_upstream *up = slot_of(pool, backend, server)->head;
    if (!up)
        return NULL;
    unlink_idle(pool, up);
    up->reused = true;
    return up;
}

void lb_pool_give(struct lb_pool *pool, struct lb_upstream *up)
{
    struct lb_pool_slot *slot = slot_of(pool, up->backend, up->server);
    if (slot->count >= up->backend->keepalive) {
        lb_upstream_close(up);
        return;
    }
    up->next = slot->head;
    up->prev = NULL;
    if (slot->head)
        slot->head->prev = up;
    slot->head = up;
    slot->count++;
    ev_set_cb(&up->io, on_idle_readable);
    ev_io_modify(&up->io, EV_READ);
    up->io.data = up;
    ev_io_start(pool->loop, &up->io);
    ev_timer_init(&up->idle, on_idle_expired, up->backend->keepalive_timeout, 0.);
    up->idle.data = up;
    ev_timer_start(pool->loop, &up->idle);
}

struct lb_upstream *lb_upstream_connect(struct lb_pool *pool, const struct lb_backend *backend,
                                        struct lb_server *server)
{
    const struct lb_address *addr = &server->address;
    int fd = socket(addr->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return NULL;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (const struct sockaddr *)&addr->sa, addr->len) < 0 && errno != EINPROGRESS)
        goto fail;
    struct lb_upstream *up = calloc(1, sizeof(*up));
    if (!up) {
        errno = ENOMEM;
        goto fail;
    }
    up->fd = fd;
    ev_io_init(&up->io, NULL, fd, 0); /* set once: later users change only cb and events */
    up->server = server;
    up->backend = backend;
    up->pool = pool;
    return up;
fail:;
    int saved = errno;
    close(fd);
    errno = saved;
    return NULL;
}

int lb_upstream_connect_result(const struct lb_upstream *up)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(up->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        return errno;
    if (err != 0)
        return err;
    /* No error yet is also what a pending connect shows: ask for the peer. */
    struct sockaddr_storage peer;
    socklen_t peer_len = sizeof(peer);
    if (getpeername(up->fd, (struct sockaddr *)&peer, &peer_len) < 0)
        return errno == ENOTCONN ? EINPROGRESS : errno;
    return 0;
}

void lb_upstream_close(struct lb_upstream *up)
{
    if (!up)
        return;
    if (up->pool) {
        ev_io_stop(up->pool->loop, &up->io);
        ev_timer_stop(up->pool->loop, &up->idle);
    }
    close(up->fd);
    free(up);
}
