/* The stats endpoint: GET /metrics on the `stats.listen` address, served by a
 * thread of its own (its own libev loop), so a scrape never waits behind a
 * busy worker and never slows one down. One request per connection. */
#ifndef LB_STATS_SERVER_H
#define LB_STATS_SERVER_H

#include <stdatomic.h>

#include "config.h"
#include "stats.h"

/* Scrapers at once; more are closed at accept. */
#define LB_STATS_MAX_CONNS 64

struct lb_stats_server;

/* Listens on cfg->stats.address and starts the thread. `workers` (n of them)
 * and `connections_open` must outlive lb_stats_server_stop(). Returns the
 * server, or NULL with a message logged. */
struct lb_stats_server *lb_stats_server_start(const struct lb_config *cfg,
                                              struct lb_worker_stats *const *workers, unsigned n,
                                              const atomic_uint_fast64_t *connections_open);

/* Stops the thread, closes every connection and frees the server. NULL is fine. */
void lb_stats_server_stop(struct lb_stats_server *s);

#endif
