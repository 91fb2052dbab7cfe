/* The heads lb sends on: hop-by-hop headers removed, lb's own framing and
 * X-Forwarded-* / Via added. Pure: no I/O, no event loop. */
#ifndef LB_HTTP_REWRITE_H
#define LB_HTTP_REWRITE_H

#include <stdbool.h>

#include "buf.h"
#include "http1.h"

/* What lb knows about the client side of a request. */
struct lb_forward_info {
    const char *client_addr;   /* the peer's IP as text, appended to X-Forwarded-For */
    const char *proto;         /* "http" or "https", for X-Forwarded-Proto */
    const char *default_host;  /* Host to send when the client sent none (HTTP/1.0) */
    bool xff_replace;          /* X-Forwarded-For is only the client (an untrusted edge) */
    bool allow_underscores;    /* forward header names with '_' (default: dropped) */
    const char *strip_cookie;  /* a cookie lb consumes (affinity): removed from Cookie */
};

/* The framing of a request body sent upstream: lb always speaks HTTP/1.1 there. */
enum lb_body_framing lb_request_framing(const struct lb_http_head *req);

/* The framing of a response body sent to the client, given the request it
 * answers: close-delimited bodies become chunked for HTTP/1.1 clients, and
 * chunked bodies become close-delimited for HTTP/1.0 clients. */
enum lb_body_framing lb_response_framing(const struct lb_http_head *resp,
                                         const struct lb_http_head *req);

/* Appends the request head to send upstream. `tunnel`: keep Upgrade for a
 * WebSocket-style upgrade. Returns NULL, or an error text when it does not fit
 * in `out` (out is then unchanged). */
const char *lb_rewrite_request(const struct lb_http_head *req, const char *base,
                               const struct lb_forward_info *info, enum lb_body_framing framing,
                               bool tunnel, struct lb_buf *out);

/* Appends the response head to send to the client. `keep_alive`: the client
 * connection stays open after this response. `extra` (may be NULL): header
 * lines lb adds, each ending in CRLF (Set-Cookie of affinity). Returns NULL or
 * an error text (out is then unchanged). */
const char *lb_rewrite_response(const struct lb_http_head *resp, const char *base,
                                const struct lb_http_head *req, enum lb_body_framing framing,
                                bool keep_alive, const char *extra, struct lb_buf *out);

/* True when the request asks for an upgrade lb tunnels (not h2c, which lb
 * strips so the backend answers in HTTP/1.1). */
bool lb_request_wants_tunnel(const struct lb_http_head *req, const char *base);

#endif
