/* Per-worker pools of idle keep-alive connections to backend servers, and the
 * upstream connection object they hold. Bounded per server (the backend's
 * `keepalive`), closed after `keepalive_timeout` idle or when the server
 * closes them. Only connections that finished an exchange cleanly enter. */
#ifndef LB_POOL_H
#define LB_POOL_H

#include <stdbool.h>
#include <stddef.h>

#include <ev.h>

#include "config.h"

struct lb_pool;

struct lb_upstream {
    int fd;
    struct lb_server *server;
    const struct lb_backend *backend;
    ev_io io;          /* owned by the user while in use; by the pool while idle */
    ev_timer idle;     /* idle expiry, only while pooled */
    bool reused;       /* came out of the pool: may have been closed by the server */
    struct lb_pool *pool;
    struct lb_upstream *next, *prev; /* pool list while idle */
};

struct lb_pool {
    struct ev_loop *loop;
    const struct lb_config *cfg;
    struct lb_pool_slot **slots; /* [backend][server] */
};

/* Sets up empty pools for every server of cfg. Returns 0, or -1 (no memory). */
int lb_pool_init(struct lb_pool *pool, struct ev_loop *loop, const struct lb_config *cfg);

/* Closes every idle connection and frees the pool. */
void lb_pool_destroy(struct lb_pool *pool);

/* An idle connection to `server`, now owned by the caller (its watcher
 * stopped), or NULL. */
struct lb_upstream *lb_pool_take(struct lb_pool *pool, const struct lb_backend *backend,
                                 struct lb_server *server);

/* Gives a cleanly finished connection back; the pool closes it when full. The
 * caller must have stopped its watcher. */
void lb_pool_give(struct lb_pool *pool, struct lb_upstream *up);

/* Starts a non-blocking connect to `server`. Returns a connection (connect
 * possibly in progress: wait for writability and check lb_upstream_connected),
 * or NULL with errno set. */
struct lb_upstream *lb_upstream_connect(struct lb_pool *pool, const struct lb_backend *backend,
                                        struct lb_server *server);

/* 0 once the connect succeeded, EINPROGRESS while it is pending, else the
 * socket error. */
int lb_upstream_connect_result(const struct lb_upstream *up);

/* Stops the watcher, closes the fd, frees. NULL is ignored. */
void lb_upstream_close(struct lb_upstream *up);

#endif
