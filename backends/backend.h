/* lb-backend: the sample stateless application server used by the demo, the
 * end-to-end tests and the benchmark. Private header shared by its files:
 *
 *   backend_main.c     options, listening socket, accept, signals, the loop
 *   backend_conn.c     one client connection: reads, the lb/http1 parser glue,
 *                      ordered responses, streamed bodies, writes, close
 *   backend_routes.c   the endpoints: what a request asks for, what to answer
 *   backend_session.c  the in-memory session table behind /session
 *
 * One libev loop, one thread, every socket non-blocking. */
#ifndef LB_BACKEND_H
#define LB_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ev.h>

#include "buf.h"
#include "http1.h"

#define BE_IN_BUF_SIZE (64 * 1024)  /* per connection: request bytes read ahead */
#define BE_OUT_BUF_SIZE (32 * 1024) /* per connection: queued response heads/bodies */
/* Room a complete small response (head + body) always fits in: a new request
 * is only parsed when `out` has this much free, so responses never overflow. */
#define BE_OUT_RESERVE (4 * 1024)
#define BE_ECHO_MAX_BODY (1024 * 1024) /* /echo bodies over this get 413 */
#define BE_ID_MAX 128
#define BE_SID_HEX 32 /* session ids: 128 random bits in hex */
#define BE_LOG_TARGET_MAX 120

struct be_sessions;

struct be_server {
    struct ev_loop *loop;
    char id[BE_ID_MAX + 1];
    size_t id_len;
    bool log;        /* one stderr line per request */
    bool healthy;    /* /health answers 200, else 503 */
    int post_log_fd; /* --post-log: one line per POST with X-Request-Id, or -1 */
    struct lb_http_limits limits;
    struct be_sessions *sessions;
    struct be_conn *conns; /* every open connection, for shutdown */
    /* The whole keep-alive answer to `GET /`, built once at start. */
    char root_response[512];
    size_t root_response_len;
};

/* What the current request asks for, taken from its head (whose slices die at
 * the next parse call) so the answer can be built once its body is read. */
enum be_route {
    BE_ROUTE_ROOT,
    BE_ROUTE_HEALTH,
    BE_ROUTE_ADMIN_HEALTH,
    BE_ROUTE_ECHO,
    BE_ROUTE_SINK,
    BE_ROUTE_DELAY,
    BE_ROUTE_STATUS,
    BE_ROUTE_BYTES,
    BE_ROUTE_SESSION,
    BE_ROUTE_RESET, /* read the request whole, then reset the connection */
    BE_ROUTE_HANG,  /* read the request, never answer */
    BE_ROUTE_NOT_FOUND,
    BE_ROUTE_ERROR, /* answer `error_status`, decided from the head alone */
};

struct be_request {
    enum be_route route;
    int error_status; /* BE_ROUTE_ERROR: 400, 405, 413 */
    const char *error_text;
    bool reject_now;     /* BE_ROUTE_ERROR: answer before the body, then close */
    bool is_head;        /* HEAD: the answer's headers without its body */
    bool keep_alive;     /* the client allows another request after this one */
    bool http10;         /* HTTP/1.0: no chunked answers, explicit keep-alive */
    uint64_t number;     /* /bytes n, /delay ms, /status code */
    bool chunked;        /* /bytes?chunked=1 */
    bool state_up;       /* /admin/health?state= */
    uint64_t body_bytes; /* request body bytes, once read */
    bool has_sid;        /* a well-formed sid cookie came in */
    char sid[BE_SID_HEX + 1];
    /* --log only */
    char method[16];
    char target[BE_LOG_TARGET_MAX + 1];
};

/* Connection states. Handlers in backend_conn.c list where they may move. */
enum be_conn_state {
    BE_ST_HEAD,    /* between requests or reading a head */
    BE_ST_BODY,    /* head seen, reading (and discarding or keeping) its body */
    BE_ST_DELAY,   /* request read, its answer held until the /delay timer fires */
    BE_ST_HANG,    /* /hang: request read, never answered; closed when the peer closes */
    BE_ST_STREAM,  /* answer head queued, its body being written from `seg` */
    BE_ST_CLOSING, /* no more requests: flush what is queued, then shut down */
    BE_ST_LINGER,  /* write side shut: drop input until EOF or the linger timer */
};

/* The source of a streamed answer body, written after everything in `out`. */
enum be_stream_kind {
    BE_STREAM_NONE,
    BE_STREAM_ECHO,  /* `echo` holds the whole body */
    BE_STREAM_BYTES, /* `stream_left` bytes of the static pattern */
};

#define BE_CONN_MAGIC 0x62636f6eu

struct be_conn {
    unsigned magic;
    ev_io io;
    ev_timer timer; /* /delay, then the linger after close */
    int fd;
    enum be_conn_state state;
    struct be_server *srv;
    struct be_conn *prev, *next;

    struct lb_http_parser parser;
    struct lb_buf in;
    struct lb_buf out;
    struct be_request req;
    bool read_eof;    /* the client shut its write side */
    bool close_after; /* close once the current answer is out */
    bool reset_after; /* /reset: once `out` is flushed, close with RST (SO_LINGER 0) */

    /* /echo: the raw request head and body, allocated for that request only. */
    struct lb_buf echo;

    /* Streamed answer body, after `out`. */
    enum be_stream_kind stream;
    const char *seg; /* next bytes to write after `out` */
    size_t seg_len;
    uint64_t stream_left; /* BE_STREAM_BYTES: pattern bytes not yet in a segment */
    uint64_t stream_pos;  /* BE_STREAM_BYTES: body offset, picks the pattern phase */
    bool stream_chunked;
    bool stream_started; /* a chunk was already sent: the next needs a CRLF first */
};

/* backend_conn.c */

/* Takes ownership of an accepted non-blocking socket. Returns 0, or -1 when out
 * of memory (fd is then closed). */
int be_conn_start(struct be_server *srv, int fd);

/* Closes every connection (at exit). */
void be_conn_close_all(struct be_server *srv);

/* Queue an answer to the current request into c->out, with the standard
 * headers (X-Backend-Id, Content-Length, Connection) and `extra_headers` (each
 * line ending in CRLF, or NULL). The body is left out for HEAD. Precondition:
 * BE_OUT_RESERVE bytes are free and head + body fit in them. */
void be_conn_respond(struct be_conn *c, int status, const char *extra_headers, const char *body,
                     size_t body_len);

/* Queue an interim 1xx answer (head only) before the final one. */
void be_conn_interim(struct be_conn *c, int status);

/* Queue a 200 answer whose body is c->echo (the request as received), then
 * stream it; c->echo is freed once written. */
void be_conn_respond_echo(struct be_conn *c);

/* Queue the answer head for `n` pattern bytes, then stream them. */
void be_conn_respond_bytes(struct be_conn *c, uint64_t n, bool chunked);

/* Hold the answer for `ms` milliseconds; the route is answered again then. */
void be_conn_delay(struct be_conn *c, uint64_t ms);

/* /reset: no answer; the connection is reset (RST, not FIN) once what is
 * already queued (a 100 Continue) is written. Later pipelined requests are
 * dropped. */
void be_conn_reset(struct be_conn *c);

/* /hang: no answer ever; the connection stays open (its input is still read
 * and dropped) until the peer closes it. */
void be_conn_hang(struct be_conn *c);

/* backend_routes.c */

/* Classify the request whose head `h` (slices into `base`) was just parsed,
 * filling c->req. May queue a 100 Continue. */
void be_route_head(struct be_conn *c, const struct lb_http_head *h, const char *base);

/* The request in c->req was read whole: queue (or schedule) its answer. */
void be_route_answer(struct be_conn *c);

/* The /delay timer fired for c->req: queue its answer. */
void be_route_delayed(struct be_conn *c);

/* Reason phrase for a status code ("Unknown" for unassigned ones). */
const char *be_reason(int status);

/* backend_session.c */

/* A table of at most `max` sessions; the oldest is forgotten past it.
 * Returns NULL when out of memory. */
struct be_sessions *be_sessions_new(size_t max);
void be_sessions_free(struct be_sessions *s);

/* Counts one more request in session `sid` (BE_SID_HEX hex digits, NUL-ended)
 * and returns the new count, or 0 when the session is unknown. */
uint64_t be_sessions_hit(struct be_sessions *s, const char *sid);

/* Creates a session with a fresh random id written to `sid` (BE_SID_HEX + 1
 * bytes), its count 1. Returns 0, or -1 when out of memory. */
int be_sessions_create(struct be_sessions *s, char *sid);

#endif
