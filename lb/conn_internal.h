/* The client connection object, shared by conn.c (its life: accept, timers,
 * watchers, request heads, errors, close) and proxy.c (the exchange with a
 * server). Nothing else includes this. */
#ifndef LB_CONN_INTERNAL_H
#define LB_CONN_INTERNAL_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include <ev.h>

#include "balance.h"
#include "buf.h"
#include "http1.h"
#include "pool.h"
#include "splice.h"

#define LB_CONN_MAGIC 0x4c42636eu

/* The status the access log gives a request whose client closed or reset the
 * connection before any response (nginx's 499); never sent. */
#define LB_STATUS_CLIENT_GONE 499

enum lb_conn_state {
    CONN_READ_HEAD, /* reading a request head; → CONN_CONNECT, CONN_PROXY, CONN_CLOSING */
    CONN_QUEUED,    /* every usable server is at max_conns: waiting for a slot;
                       → CONN_CONNECT, CONN_PROXY, CONN_CLOSING (503) */
    CONN_CONNECT,   /* a server is being connected; → CONN_PROXY, CONN_CLOSING */
    CONN_PROXY,     /* request up, response down; → CONN_READ_HEAD, CONN_TUNNEL, CONN_CLOSING */
    CONN_TUNNEL,    /* after a 101: bytes both ways until both sides closed; → destroyed */
    CONN_CLOSING,   /* flushing the last response, then lingering; → destroyed */
};

/* What the connection's one timer is waiting for. */
enum lb_deadline {
    DL_HEADER,  /* the whole request head: 408 */
    DL_IDLE,    /* the next keep-alive request: close */
    DL_BODY,    /* the next bytes of the request body: 408 */
    DL_CONNECT, /* the connect to a server: try another one */
    DL_SERVER,  /* the server's next bytes: 504 */
    DL_SEND,    /* the client reading what lb wrote: close */
    DL_TUNNEL,  /* any byte through the tunnel: close */
    DL_LINGER,  /* the client closing after lb's last response: close */
    DL_QUEUE,   /* a free server slot (timeouts.queue): 503 */
    DL_LOWAT,   /* server bytes waiting below a raised SO_RCVLOWAT: take them */
};

/* Why an exchange with a server failed. */
enum lb_upstream_failure {
    FAIL_CONNECT,      /* refused, unreachable, or timed out connecting */
    FAIL_RESET,        /* closed or reset before a complete response */
    FAIL_TIMEOUT,      /* no bytes within timeouts.server */
    FAIL_BAD_RESPONSE, /* the response did not parse */
};

/* What a step of the state machine achieved. */
enum lb_step {
    STEP_IDLE,     /* nothing moved: wait for an event */
    STEP_PROGRESS, /* something moved: run again */
    STEP_GONE,     /* the connection was destroyed: touch nothing */
};

struct lb_worker;

/* What only a connection with a request in progress needs (the parsers with
 * their header tables, most of a connection's memory): taken from the
 * worker's spares when a request starts, given back when the connection
 * goes idle. */
struct lb_exchange {
    struct lb_http_parser req;
    struct lb_http_parser resp;
    char log_request[256]; /* method, then target, for the access log */
    size_t log_method_len, log_target_len;
    struct lb_exchange *next_spare;
};

struct lb_conn {
    uint32_t magic;
    enum lb_conn_state state;
    struct lb_worker *w;
    const struct lb_listen *listen;
    struct lb_conn *next, *prev; /* the worker's list */
    int fd;
    ev_io io;
    ev_timer timer;
    ev_tstamp deadline;
    enum lb_deadline deadline_kind;
    char peer[INET6_ADDRSTRLEN];

    struct lb_buf cin;  /* client → lb: request heads and bodies */
    struct lb_buf cout; /* lb → client: responses */
    struct lb_buf uin;  /* server → lb: the response */
    struct lb_buf uout; /* lb → server: the rewritten request */
    struct lb_exchange *x; /* NULL while idle */
    struct lb_pipe *pipe;  /* while a response body is spliced: server → pipe → client */
    uint64_t splice_left;  /* body bytes still to come from the server into the pipe */
    int up_lowat;          /* the server socket's SO_RCVLOWAT (1 unless splicing) */

    /* The current exchange. */
    struct lb_backend *backend; /* runtime counters (budget, queue) are written */
    struct lb_server *server; /* counted in server->active while set */
    struct lb_upstream *up;
    bool up_connecting;
    struct lb_server *retry_server; /* connect to this one again (a stale pooled connection) */
    struct lb_server *sticky;       /* the server the request's affinity cookie names */
    struct lb_pick_ctx tried;
    size_t uout_sent;         /* bytes of uout already written to the server */
    bool replayable;          /* uout still holds every request byte sent so far */
    bool req_done;            /* the request was read whole */
    bool resp_started;        /* the server sent a response byte */
    bool resp_head_sent;      /* a final response head went to the client */
    bool resp_head_blocked;   /* the response head waits for room in cout */
    bool resp_done;
    bool tunnel_asked;        /* the request asks for an Upgrade */
    bool keep_alive;          /* the client connection stays open after this exchange */
    bool client_eof;
    bool upstream_eof;
    /* epoll said the socket is readable and no read has tried it since: a
     * read without it would mostly find nothing (one wasted syscall). */
    bool client_rd;
    bool up_rd;
    bool client_shut;         /* lb shut down its writing side to the client */
    bool upstream_shut;       /* lb shut down its writing side to the server */
    bool lingering;
    unsigned retries;         /* other servers tried after a failure, for this request */
    struct lb_conn *qnext, *qprev; /* the worker's queue, while CONN_QUEUED */
    int status;               /* what the client got, for the log */
    bool logged;              /* this exchange has its access log line and count */
    uint64_t log_bytes;       /* response body bytes, for the log */
    const char *log_server;   /* id of the last server tried, for the log */
    ev_tstamp t_start, t_connect_start, t_connected, t_response, t_queued;
    ev_tstamp client_activity, upstream_activity;
};

/* Response bytes wait for the client to read them: in cout, or in the pipe
 * (which follows cout). */
static inline bool lb_conn_output_pending(const struct lb_conn *c)
{
    return lb_buf_len(&c->cout) > 0 || (c->pipe && c->pipe->len > 0);
}

/* conn.c */
void lb_conn_destroy(struct lb_conn *c);
/* Answers with a small error response and closes after it (or closes at once
 * when a response already started). The state becomes CONN_CLOSING. */
void lb_conn_reply_error(struct lb_conn *c, int status);
/* Writes the access log line for the current exchange. */
void lb_conn_log(struct lb_conn *c);
/* True while no request is in progress and nothing is buffered from the client. */
bool lb_conn_idle(const struct lb_conn *c);
/* Storage for a buffer of c from its worker's cache. Returns 0 or -1. */
int lb_conn_buf(struct lb_conn *c, struct lb_buf *b);
/* Points the server connection's watcher at c's state machine. */
void lb_conn_watch_upstream(struct lb_conn *c);
/* Reads from the client into cin when epoll said it is readable. Returns
 * STEP_* (STEP_GONE on a read error). */
enum lb_step lb_conn_read_client(struct lb_conn *c);
/* Sends cout to the client, then what the pipe holds. Returns STEP_*
 * (STEP_GONE on a write error). */
enum lb_step lb_conn_flush(struct lb_conn *c);

/* proxy.c */
/* Clears what one exchange left (flags, log fields) before the next. */
void lb_proxy_reset_exchange(struct lb_conn *c);
/* A request head was parsed: route it, rewrite it into uout, connect. */
enum lb_step lb_proxy_start(struct lb_conn *c);
/* Tries again to find a server with a free slot (CONN_QUEUED). */
enum lb_step lb_proxy_queue_step(struct lb_conn *c);
/* Leaves the worker's queue (a queued connection that is destroyed). */
void lb_proxy_unqueue(struct lb_conn *c);
/* Moves the exchange on (CONN_CONNECT, CONN_PROXY). */
enum lb_step lb_proxy_step(struct lb_conn *c);
/* Moves tunnel bytes (CONN_TUNNEL). */
enum lb_step lb_proxy_tunnel_step(struct lb_conn *c);
/* The server failed: retry elsewhere when that is safe, else answer 502/504. */
enum lb_step lb_proxy_upstream_failed(struct lb_conn *c, enum lb_upstream_failure why,
                                      const char *detail);
/* A spliced body's server sent less than the low-water mark for a while:
 * take its bytes as they come. */
void lb_proxy_splice_stalled(struct lb_conn *c);
/* The server watcher events the exchange needs now. */
int lb_proxy_upstream_events(const struct lb_conn *c);
/* Ends the use of the server connection: pooled when `reusable`, else closed;
 * the server's active count is released. */
void lb_proxy_release(struct lb_conn *c, bool reusable);

#endif
