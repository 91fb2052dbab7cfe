/* A worker thread: its libev loop, its listeners, its pools and caches. */
#include "worker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "balance.h"
#include "conn.h"
#include "listener.h"
#include "log.h"

#define SPARE_BUFFERS 256

/* Buffers hold a whole request head plus what lb adds to it. */
static size_t buffer_size(const struct lb_config *cfg)
{
    size_t size = 32 * 1024;
    if (cfg->limits.max_header_size + 8 * 1024 > size)
        size = cfg->limits.max_header_size + 8 * 1024;
    return size;
}

static void on_resume(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct lb_worker *w = t->data;
    w->accept_paused = false;
    if (w->draining)
        return;
    for (size_t i = 0; i < w->n_listeners; i++)
        lb_listener_resume(&w->listeners[i]);
}

/* Server slots freed by other workers wake nobody here: queued requests
 * look again on every tick. */
static void on_queue_poll(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    struct lb_worker *w = t->data;
    lb_conn_queue_poll(w);
    if (!w->queue_head)
        ev_timer_stop(loop, t);
}

void lb_worker_pause_accepting(struct lb_worker *w, double seconds)
{
    for (size_t i = 0; i < w->n_listeners; i++)
        lb_listener_pause(&w->listeners[i]);
    w->accept_paused = true;
    ev_timer_stop(w->loop, &w->accept_resume);
    ev_timer_set(&w->accept_resume, seconds, 0.);
    ev_timer_start(w->loop, &w->accept_resume);
}

void lb_worker_conn_closed(struct lb_worker *w)
{
    w->connections--;
    lb_stat_sub(&w->stats.open, 1);
    atomic_fetch_sub(&w->shared->connections, 1);
    if (w->draining && w->connections == 0)
        ev_break(w->loop, EVBREAK_ALL);
}

/* The main thread asked for a drain: stop accepting, close idle connections,
 * and end the loop once the busy ones finished. */
static void on_stop(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)revents;
    struct lb_worker *w = a->data;
    w->draining = true;
    ev_timer_stop(loop, &w->accept_resume);
    for (size_t i = 0; i < w->n_listeners; i++)
        lb_listener_close(&w->listeners[i]);
    lb_conn_drain_all(w);
    if (w->connections == 0)
        ev_break(loop, EVBREAK_ALL);
}

/* Before the loop waits: this iteration's access log lines, in one write. */
static void on_flush_log(struct ev_loop *loop, ev_prepare *p, int revents)
{
    (void)loop;
    (void)p;
    (void)revents;
    lb_log_flush();
}

int lb_worker_init(struct lb_worker *w, unsigned id, const struct lb_config *cfg,
                   struct lb_shared *shared)
{
    memset(w, 0, sizeof(*w));
    w->id = id;
    w->cfg = cfg;
    w->shared = shared;
    w->req_limits = (struct lb_http_limits){
        .max_header_size = cfg->limits.max_header_size,
        .max_uri_size = cfg->limits.max_uri_size,
        .max_body_size = cfg->limits.max_body_size,
    };
    w->resp_limits = (struct lb_http_limits){
        .max_header_size = cfg->limits.max_header_size,
        .max_uri_size = cfg->limits.max_header_size,
        .max_body_size = 0,
    };
    w->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    if (!w->loop)
        goto fail;
    lb_pipe_cache_init(&w->pipes, LB_PIPES_SPARE, LB_PIPES_MAX);
    if (lb_buf_cache_init(&w->bufs, buffer_size(cfg), SPARE_BUFFERS) < 0 ||
        lb_pool_init(&w->pool, w->loop, cfg) < 0)
        goto fail;
    w->balancers = calloc(cfg->n_backends, sizeof(*w->balancers));
    if (!w->balancers)
        goto fail;
    for (size_t b = 0; b < cfg->n_backends; b++) {
        w->balancers[b] = cfg->backends[b].balance->create(&cfg->backends[b]);
        if (!w->balancers[b])
            goto fail;
    }
    w->listeners = calloc(cfg->n_listens, sizeof(*w->listeners));
    if (!w->listeners)
        goto fail;
    for (size_t i = 0; i < cfg->n_listens; i++)
        w->listeners[i].fd = -1;
    w->n_listeners = cfg->n_listens;
    for (size_t i = 0; i < cfg->n_listens; i++)
        if (lb_listener_open(&w->listeners[i], w, &cfg->listens[i]) < 0)
            goto fail_logged;
    ev_init(&w->queue_poll, on_queue_poll);
    w->queue_poll.repeat = 0.005;
    w->queue_poll.data = w;
    ev_init(&w->accept_resume, on_resume);
    w->accept_resume.data = w;
    ev_async_init(&w->stop, on_stop);
    w->stop.data = w;
    ev_async_start(w->loop, &w->stop);
    ev_prepare_init(&w->flush_log, on_flush_log);
    ev_prepare_start(w->loop, &w->flush_log);
    return 0;
fail:
    lb_log_error("worker %u: out of memory", id);
fail_logged:
    lb_worker_destroy(w);
    return -1;
}

static void *worker_main(void *arg)
{
    struct lb_worker *w = arg;
    for (size_t i = 0; i < w->n_listeners; i++)
        lb_listener_resume(&w->listeners[i]);
    ev_run(w->loop, 0);
    lb_log_flush();
    /* How evenly SO_REUSEPORT spread the connections, and how often this
     * worker woke for an accept another one had taken (should stay ~0). */
    lb_log_info("worker %u: %llu connections accepted, %llu wakeups found none", w->id,
                (unsigned long long)atomic_load(&w->stats.accepted),
                (unsigned long long)atomic_load(&w->stats.accept_eagain));
    return NULL;
}

int lb_worker_start(struct lb_worker *w)
{
    int rc = pthread_create(&w->thread, NULL, worker_main, w);
    if (rc != 0) {
        lb_log_error("worker %u: %s", w->id, strerror(rc));
        return -1;
    }
    return 0;
}

void lb_worker_drain(struct lb_worker *w)
{
    ev_async_send(w->loop, &w->stop);
}

void lb_worker_destroy(struct lb_worker *w)
{
    if (w->loop) {
        lb_conn_close_all(w);
        ev_timer_stop(w->loop, &w->accept_resume);
        ev_timer_stop(w->loop, &w->queue_poll);
        ev_async_stop(w->loop, &w->stop);
    }
    for (size_t i = 0; w->listeners && i < w->n_listeners; i++)
        lb_listener_close(&w->listeners[i]);
    free(w->listeners);
    w->listeners = NULL;
    for (size_t b = 0; w->balancers && b < w->cfg->n_backends; b++)
        if (w->balancers[b])
            w->cfg->backends[b].balance->destroy(w->balancers[b]);
    free(w->balancers);
    w->balancers = NULL;
    if (w->loop)
        lb_pool_destroy(&w->pool);
    lb_conn_free_spares(w);
    lb_buf_cache_destroy(&w->bufs);
    lb_pipe_cache_destroy(&w->pipes);
    if (w->loop)
        ev_loop_destroy(w->loop);
    w->loop = NULL;
}
