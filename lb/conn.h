/* A client connection and the exchange it drives: the request read from the
 * client, forwarded to a backend server, and the response streamed back. */
#ifndef LB_CONN_H
#define LB_CONN_H

#include <sys/socket.h>

#include "config.h"

struct lb_worker;

/* Takes ownership of an accepted, non-blocking client socket. On failure
 * (out of memory) the socket is closed. */
void lb_conn_accept(struct lb_worker *w, int fd, const struct sockaddr *peer, socklen_t peer_len,
                    const struct lb_listen *listen);

/* Starts the worker's drain: idle connections close now, busy ones after
 * their current exchange. */
void lb_conn_drain_all(struct lb_worker *w);

/* Closes every connection at once (the drain deadline passed). */
void lb_conn_close_all(struct lb_worker *w);

/* Gives every request waiting for a server slot another look. */
void lb_conn_queue_poll(struct lb_worker *w);

/* Frees the worker's spare per-request state (at worker exit). */
void lb_conn_free_spares(struct lb_worker *w);

#endif
