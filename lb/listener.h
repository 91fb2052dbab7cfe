/* A worker's listening socket for one listen address: its own SO_REUSEPORT
 * socket, so the kernel spreads new connections across workers and no accept
 * wakes a worker for a connection another one takes. */
#ifndef LB_LISTENER_H
#define LB_LISTENER_H

#include <stdbool.h>

#include <ev.h>

#include "config.h"

struct lb_worker;

struct lb_listener {
    int fd;
    ev_io io;
    struct lb_worker *w;
    const struct lb_listen *listen;
};

/* socket, SO_REUSEPORT, bind, listen. Returns 0, or -1 with a message logged. */
int lb_listener_open(struct lb_listener *l, struct lb_worker *w, const struct lb_listen *listen);

/* Fails (-1, logged) when another socket already listens on the address.
 * Workers bind with SO_REUSEPORT, which would otherwise let a second lb (or
 * anything else with SO_REUSEPORT) silently share the port with this one. */
int lb_listener_check_free(const struct lb_listen *where);

/* Starts or stops accepting (the socket stays open, connections wait in the
 * kernel backlog). */
void lb_listener_resume(struct lb_listener *l);
void lb_listener_pause(struct lb_listener *l);

/* Stops and closes; safe to call twice. */
void lb_listener_close(struct lb_listener *l);

#endif
