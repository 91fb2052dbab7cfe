/* HTTP/1.x message parsing: llhttp glue that turns bytes in a buffer into a
 * parsed head (slices into that buffer) and a body re-framed into another
 * buffer. Pure: no I/O, no event loop. Every llhttp lenient flag stays off.
 *
 * Use: lb_http_parser_init(); then call lb_http_parse() whenever `in` gained
 * bytes or `out` gained room. It returns LB_HTTP_HEAD once per message (the
 * head is valid until the next lb_http_parse() call), then LB_HTTP_DONE when
 * the message is complete; lb_http_parser_next() readies the next message. */
#ifndef LB_HTTP1_H
#define LB_HTTP1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include <llhttp.h>

#include "buf.h"

#define LB_HTTP_MAX_HEADERS 128

/* Room lb_http_parse() keeps free in `out` when re-chunking, for the chunk
 * size line and CRLFs it adds around a piece of body. */
#define LB_HTTP_CHUNK_MARGIN 32

/* Longest chunk extension accepted (they are dropped, never forwarded). */
#define LB_HTTP_MAX_CHUNK_EXTENSION 1024

enum lb_http_type { LB_HTTP_REQUEST, LB_HTTP_RESPONSE };

/* How a message body is written into the output buffer. */
enum lb_body_framing {
    LB_FRAMING_NONE,    /* no body follows the head */
    LB_FRAMING_LENGTH,  /* the bytes as they are, a Content-Length was sent */
    LB_FRAMING_CHUNKED, /* re-encoded as chunks, ended by a last chunk */
    LB_FRAMING_CLOSE,   /* the bytes as they are, ended by closing the connection */
    LB_FRAMING_DISCARD, /* dropped, only counted */
};

/* A byte range of the input buffer, as offsets from its data pointer. */
struct lb_slice {
    uint32_t off;
    uint32_t len;
};

struct lb_header {
    struct lb_slice name;
    struct lb_slice value;
};

struct lb_http_head {
    uint8_t method; /* llhttp_method_t, requests */
    uint16_t status; /* responses */
    uint8_t version_major;
    uint8_t version_minor;
    struct lb_slice method_text;
    struct lb_slice target; /* requests */
    struct lb_slice reason; /* responses */
    struct lb_slice host;   /* requests: Host, or the authority of an absolute-form target */
    bool has_host;
    unsigned n_headers;
    uint64_t content_length; /* when has_content_length */
    bool has_content_length;
    bool chunked;
    bool keep_alive; /* the sender allows another message on this connection */
    bool upgrade;    /* request: asks for Upgrade; response: 101 switching */
    bool has_body;   /* a body follows (length > 0, chunked or until close) */
    uint32_t size;   /* bytes of the head: in->data[0, size), empty lines llhttp
                        skips before the request line included */
    /* Last, so a new message resets only what comes before it. */
    struct lb_header headers[LB_HTTP_MAX_HEADERS];
};

struct lb_http_limits {
    size_t max_header_size; /* whole head, request line included: over it 431 */
    size_t max_uri_size;    /* request target: over it 414 */
    uint64_t max_body_size; /* 0: unlimited; over it 413 */
};

enum lb_http_status {
    LB_HTTP_AGAIN, /* needs more input, or more room in `out` (all input was
                      taken when `in` is empty) */
    LB_HTTP_HEAD,  /* the head is complete: read parser->head */
    LB_HTTP_DONE,  /* the message is complete (head.upgrade: the rest is a tunnel) */
    LB_HTTP_ERROR, /* parser->error_status and parser->error_text say why */
};

struct lb_http_parser {
    llhttp_t ll;
    enum lb_http_type type;
    const struct lb_http_limits *limits;

    /* Set by the caller once the head was seen, before parsing the body. */
    enum lb_body_framing out_framing;
    /* Set by the caller before a response head: the request was HEAD. */
    bool skip_body;

    uint64_t body_bytes; /* body bytes seen so far (decoded) */
    int error_status;    /* 400, 413, 414, 431, 501, or 502 for responses */
    const char *error_text;

    /* internal */
    struct lb_buf *in;
    struct lb_buf *out;
    size_t fed;          /* bytes of the current head handed to llhttp */
    uint8_t phase;       /* enum in http1.c */
    uint8_t last_cb;     /* header field or value, to join split callbacks */
    bool head_pending;   /* head returned; consume it on the next call */
    bool done_pending;   /* message completed while returning the head */
    bool in_chunk;
    size_t extra_bytes;  /* chunk extension or trailer bytes, capped */

    /* Last, and its header table last in it: resetting a parser skips the
     * table, whose used entries are always written before they are read. */
    struct lb_http_head head;
};

void lb_http_parser_init(struct lb_http_parser *p, enum lb_http_type type,
                         const struct lb_http_limits *limits);

/* Parses what `in` holds. Head bytes stay in `in` until the call after the one
 * that returned LB_HTTP_HEAD; body bytes are consumed from `in` and written to
 * `out` in p->out_framing, never more than `out` has room for. `out` may be
 * NULL only with LB_FRAMING_NONE or LB_FRAMING_DISCARD. At the start of a
 * message `in` is compacted, so head slices are offsets from in->data. */
enum lb_http_status lb_http_parse(struct lb_http_parser *p, struct lb_buf *in,
                                  struct lb_buf *out);

/* The connection reached EOF. Returns LB_HTTP_DONE if that ends the message
 * (a body delimited by close; the final chunk is written to `out` when
 * re-chunking), LB_HTTP_AGAIN if no message had started, else LB_HTTP_ERROR. */
enum lb_http_status lb_http_finish(struct lb_http_parser *p, struct lb_buf *out);

/* Readies the parser for the next message on the same connection. */
void lb_http_parser_next(struct lb_http_parser *p);

/* True while no byte of a new message has been parsed. */
bool lb_http_parser_idle(const struct lb_http_parser *p);

/* Helpers over a parsed head whose slices point into `base`. */
static inline const char *lb_slice_ptr(const char *base, struct lb_slice s)
{
    return base + s.off;
}
/* Inline, so that strlen() of a literal folds to a constant. */
static inline bool lb_slice_equals_ci(const char *base, struct lb_slice s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len == n && strncasecmp(base + s.off, lit, n) == 0;
}

/* Index of the first header named `name` (case-insensitive) at or after
 * `from`, or -1. */
static inline int lb_http_find_header(const struct lb_http_head *h, const char *base,
                                      const char *name, int from)
{
    size_t n = strlen(name);
    for (unsigned i = (unsigned)from; i < h->n_headers; i++)
        if (h->headers[i].name.len == n && strncasecmp(base + h->headers[i].name.off, name, n) == 0)
            return (int)i;
    return -1;
}
/* The reason phrase lb writes for a status it answers itself. */
const char *lb_http_reason(int status);

/* True when a comma-separated header value holds `token` (case-insensitive). */
bool lb_http_value_has_token(const char *value, size_t len, const char *token);

#endif
