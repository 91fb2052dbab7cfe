/* Counters and their Prometheus text. Each worker owns a struct lb_worker_stats
 * and is its only writer; the stats endpoint (stats_server.c) reads them from
 * its own thread. Server and backend state is read from the config's shared
 * runtime fields. Rendering is pure: no I/O. */
#ifndef LB_STATS_H
#define LB_STATS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* One worker's counters. */
struct lb_worker_stats {
    atomic_uint_fast64_t accepted;      /* client connections accepted */
    atomic_uint_fast64_t accept_eagain; /* accept wake-ups that found no connection: with
                                           one SO_REUSEPORT socket per worker, no other worker
                                           can take it, so this stays ~0 */
    atomic_uint_fast64_t open;          /* client connections open now */
    /* Exchanges by what the client got: [0] no response at all (the
     * connection ended mid-request: a client that reset, stopped reading or
     * left inside its body), [1..5] the class of the status in the response
     * head it got (1xx only for a 101 tunnel; a server that fails after its
     * head leaves its status class here, and a cut-short body). */
    atomic_uint_fast64_t responses[6];
    atomic_uint_fast64_t spliced_bodies; /* response bodies forwarded with splice(2) */
};

/* Adds n to a counter only its owner writes: a relaxed load and store, not a
 * locked read-modify-write, so the hot path pays nothing for readers. */
static inline void lb_stat_add(atomic_uint_fast64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline void lb_stat_sub(atomic_uint_fast64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) - n,
                          memory_order_relaxed);
}

/* Counts an exchange that ended with `status` (0: no response). */
void lb_stats_count_response(struct lb_worker_stats *s, int status);

/* The Prometheus text exposition (format 0.0.4) of the workers' counters,
 * the process's open connections, and every backend's servers (up, ejected
 * at now_ms, requests in flight) and queue. Returns a malloc'd string (its
 * length in *len), or NULL when out of memory. */
char *lb_stats_render(const struct lb_config *cfg, struct lb_worker_stats *const *workers,
                      unsigned n_workers, uint64_t connections_open, uint64_t now_ms,
                      size_t *len);

#endif
