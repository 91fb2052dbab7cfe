/* A worker: one thread, one libev loop, its own SO_REUSEPORT listeners, and
 * everything a connection needs on the hot path (pools, balancer state, spare
 * buffers), none of it shared with other workers. */
#ifndef LB_WORKER_H
#define LB_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <ev.h>

#include "buf.h"
#include "config.h"
#include "http1.h"
#include "pool.h"
#include "splice.h"
#include "stats.h"

struct lb_listener;
struct lb_conn;
struct lb_exchange;

/* Connections and counters shared by all workers of the process. */
struct lb_shared {
    atomic_uint_fast64_t connections; /* client connections open */
};

struct lb_worker {
    unsigned id;
    pthread_t thread;
    struct ev_loop *loop;
    const struct lb_config *cfg;
    struct lb_shared *shared;

    struct lb_listener *listeners; /* one per cfg->listens entry */
    size_t n_listeners;
    ev_timer accept_resume; /* re-enables accepting after EMFILE or at max_connections */
    ev_async stop;          /* the main thread asks for a drain */
    ev_prepare flush_log;   /* the iteration's access log lines, in one write */
    bool draining;
    bool accept_paused;

    struct lb_http_limits req_limits;
    struct lb_http_limits resp_limits;
    struct lb_conn *conns; /* every open client connection, for the drain */
    struct lb_conn *queue_head, *queue_tail; /* waiting for a server slot (max_conns) */
    ev_timer queue_poll;   /* slots freed by other workers are seen by polling */

    struct lb_pool pool;
    void **balancers; /* per backend, from its ops' create() */
    struct lb_buf_cache bufs;
    struct lb_pipe_cache pipes; /* for spliced response bodies */
    struct lb_exchange *spare_exchanges; /* conn.c's, kept for reuse */
    size_t n_spare_exchanges;

    unsigned connections;      /* open client connections of this worker */
    struct lb_worker_stats stats; /* read by the stats endpoint */
};

/* Creates the worker's loop, listeners and pools. Returns 0, or -1 with a
 * message logged. */
int lb_worker_init(struct lb_worker *w, unsigned id, const struct lb_config *cfg,
                   struct lb_shared *shared);

/* Runs the loop in a new thread. Returns 0, or -1. */
int lb_worker_start(struct lb_worker *w);

/* Asks the worker (from another thread) to stop accepting and finish. */
void lb_worker_drain(struct lb_worker *w);

/* Frees what lb_worker_init made, after the thread ended. */
void lb_worker_destroy(struct lb_worker *w);

/* Stops accepting for `seconds` (EMFILE, or at max_connections). */
void lb_worker_pause_accepting(struct lb_worker *w, double seconds);

/* Called by a connection when it closes: counts it, and resumes accepting or
 * ends a drain. */
void lb_worker_conn_closed(struct lb_worker *w);

#endif
