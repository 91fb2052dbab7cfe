#include "http1.h"
#include "http_validate.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* Where the parser stands in the current message. */
enum phase {
    PHASE_IDLE, /* no byte of a message parsed yet */
    PHASE_HEAD, /* inside the head */
    PHASE_BODY, /* head returned, body (or message end) follows */
};

enum last_cb { CB_NONE, CB_FIELD, CB_VALUE };


static struct lb_http_parser *parser_of(llhttp_t *ll)
{
    return ll->data;
}

static int fail(struct lb_http_parser *p, int status, const char *text)
{
    p->error_status = status;
    p->error_text = text;
    return -1;
}

/* Offset of `at` in the input buffer; the head starts at offset 0. */
static uint32_t offset_of(const struct lb_http_parser *p, const char *at)
{
    return (uint32_t)(at - p->in->data);
}

static int check_head_size(struct lb_http_parser *p, const char *at, size_t len)
{
    if ((size_t)(at - p->in->data) + len > p->limits->max_header_size)
        return fail(p, 431, "request header too large");
    return 0;
}

/* Extends slice `s` by a callback's span, which continues it in the buffer. */
static void extend(struct lb_http_parser *p, struct lb_slice *s, const char *at, size_t len)
{
    if (s->len == 0)
        s->off = offset_of(p, at);
    s->len = (uint32_t)(offset_of(p, at) + len - s->off);
}

static int on_message_begin(llhttp_t *ll)
{
    struct lb_http_parser *p = parser_of(ll);
    memset(&p->head, 0, offsetof(struct lb_http_head, headers));
    p->phase = PHASE_HEAD;
    p->last_cb = CB_NONE;
    p->body_bytes = 0;
    p->extra_bytes = 0;
    p->in_chunk = false;
    return 0;
}

static int on_method(llhttp_t *ll, const char *at, size_t len)
{
    struct lb_http_parser *p = parser_of(ll);
    extend(p, &p->head.method_text, at, len);
    return check_head_size(p, at, len);
}

static int on_url(llhttp_t *ll, const char *at, size_t len)
{
    struct lb_http_parser *p = parser_of(ll);
    extend(p, &p->head.target, at, len);
    if (p->head.target.len > p->limits->max_uri_size)
        return fail(p, 414, "URI too long");
    return check_head_size(p, at, len);
}

static int on_status(llhttp_t *ll, const char *at, size_t len)
{
    struct lb_http_parser *p = parser_of(ll);
    extend(p, &p->head.reason, at, len);
    if (memchr(at, '\r', len))
        return fail(p, 502, "bare CR in the status line");
    return check_head_size(p, at, len);
}

static int error_status(const struct lb_http_parser *p)
{
    return p->type == LB_HTTP_REQUEST ? 400 : 502;
}

/* Trailers and chunk extensions are dropped, but an endless stream of them
 * could keep a connection busy forever (CVE-2024-22019): both are capped. */
static int count_trailer(struct lb_http_parser *p, size_t len)
{
    p->extra_bytes += len;
    if (p->extra_bytes > p->limits->max_header_size)
        return fail(p, error_status(p), "trailers too large");
    return 0;
}

static int on_chunk_extension(llhttp_t *ll, const char *at, size_t len)
{
    (void)at;
    struct lb_http_parser *p = parser_of(ll);
    p->extra_bytes += len;
    if (p->extra_bytes > LB_HTTP_MAX_CHUNK_EXTENSION)
        return fail(p, error_status(p), "chunk extension too long");
    return 0;
}

static int on_header_field(llhttp_t *ll, const char *at, size_t len)
{
    struct lb_http_parser *p = parser_of(ll);
    if (p->phase != PHASE_HEAD)
        return count_trailer(p, len); /* trailer fields are dropped, within a cap */
    if (p->last_cb != CB_FIELD) {
        if (p->head.n_headers == LB_HTTP_MAX_HEADERS)
            return fail(p, 431, "too many header fields");
        struct lb_header *h = &p->head.headers[p->head.n_headers++];
        h->name = (struct lb_slice){offset_of(p, at), 0};
        h->value = (struct lb_slice){0, 0};
        p->last_cb = CB_FIELD;
    }
    extend(p, &p->head.headers[p->head.n_headers - 1].name, at, len);
    return check_head_size(p, at, len);
}

static int on_header_value(llhttp_t *ll, const char *at, size_t len)
{
    struct lb_http_parser *p = parser_of(ll);
    if (p->phase != PHASE_HEAD)
        return count_trailer(p, len);
    p->last_cb = CB_VALUE;
    extend(p, &p->head.headers[p->head.n_headers - 1].value, at, len);
    return check_head_size(p, at, len);
}

static int on_headers_complete(llhttp_t *ll)
{
    struct lb_http_parser *p = parser_of(ll);
    struct lb_http_head *h = &p->head;
    h->method = ll->method;
    h->status = ll->status_code;
    h->version_major = ll->http_major;
    h->version_minor = ll->http_minor;
    h->chunked = (ll->flags & F_CHUNKED) != 0;
    h->has_content_length = (ll->flags & F_CONTENT_LENGTH) != 0;
    h->content_length = h->has_content_length ? ll->content_length : 0;
    h->upgrade = ll->upgrade != 0;
    h->keep_alive = llhttp_should_keep_alive(ll) != 0;
    for (unsigned i = 0; i < h->n_headers; i++) { /* llhttp keeps trailing whitespace */
        struct lb_slice *v = &h->headers[i].value;
        while (v->len > 0 && (p->in->data[v->off + v->len - 1] == ' ' ||
                              p->in->data[v->off + v->len - 1] == '\t'))
            v->len--;
    }
    if (p->type == LB_HTTP_REQUEST && (ll->flags & F_TRANSFER_ENCODING)) {
        if (h->version_major == 1 && h->version_minor == 0)
            return fail(p, 400, "Transfer-Encoding on HTTP/1.0");
        if (!h->chunked)
            return fail(p, 400, "Transfer-Encoding without a final chunked");
    }
    if (p->type == LB_HTTP_RESPONSE && (ll->flags & F_TRANSFER_ENCODING) && !h->chunked)
        return fail(p, 502, "Transfer-Encoding without a final chunked");
    /* No body on a response to HEAD, nor on 1xx, 204 or 304 whatever their
     * Content-Length says (llhttp would wait for it): the pause comes at
     * message complete; bytes that follow make the connection unusable. */
    if (p->type == LB_HTTP_RESPONSE &&
        (p->skip_body || (h->status / 100 == 1 && h->status != 101) || h->status == 204 ||
         h->status == 304)) {
        h->has_body = false;
        return 1;
    }
    if (p->type == LB_HTTP_REQUEST)
        h->has_body = h->chunked || h->content_length > 0;
    else
        h->has_body = !(h->status / 100 == 1 || h->status == 204 || h->status == 304) &&
                      (h->chunked || h->content_length > 0 || llhttp_message_needs_eof(ll));
    if (p->limits->max_body_size && h->content_length > p->limits->max_body_size)
        return fail(p, 413, "request body too large");
    return HPE_PAUSED;
}

/* Writes body bytes to `out` in the framing the caller chose. The caller
 * guaranteed room: what lb adds never exceeds what it removed plus the margin. */
static int on_body(llhttp_t *ll, const char *at, size_t len)
{
    struct lb_http_parser *p = parser_of(ll);
    p->body_bytes += len;
    if (p->limits->max_body_size && p->body_bytes > p->limits->max_body_size)
        return fail(p, 413, "request body too large");
    switch (p->out_framing) {
    case LB_FRAMING_LENGTH:
    case LB_FRAMING_CLOSE:
        lb_buf_append(p->out, at, len);
        break;
    case LB_FRAMING_CHUNKED:
        if (p->in_chunk) { /* chunk size already written by on_chunk_header */
            lb_buf_append(p->out, at, len);
        } else {
            lb_buf_append_hex(p->out, len);
            lb_buf_append(p->out, "\r\n", 2);
            lb_buf_append(p->out, at, len);
            lb_buf_append(p->out, "\r\n", 2);
        }
        break;
    case LB_FRAMING_NONE:
    case LB_FRAMING_DISCARD:
        break;
    }
    return 0;
}

static int on_chunk_header(llhttp_t *ll)
{
    struct lb_http_parser *p = parser_of(ll);
    if (ll->content_length == 0)
        return 0; /* the last chunk: written at message complete */
    p->in_chunk = true;
    if (p->out_framing == LB_FRAMING_CHUNKED) {
        lb_buf_append_hex(p->out, ll->content_length);
        lb_buf_append(p->out, "\r\n", 2);
    }
    return 0;
}

static int on_chunk_complete(llhttp_t *ll)
{
    struct lb_http_parser *p = parser_of(ll);
    p->extra_bytes = 0;
    if (p->in_chunk && p->out_framing == LB_FRAMING_CHUNKED)
        lb_buf_append(p->out, "\r\n", 2);
    p->in_chunk = false;
    return 0;
}

static void write_last_chunk(struct lb_http_parser *p, struct lb_buf *out)
{
    if (p->out_framing == LB_FRAMING_CHUNKED && p->head.has_body)
        lb_buf_append(out, "0\r\n\r\n", 5);
}

static int on_message_complete(llhttp_t *ll)
{
    struct lb_http_parser *p = parser_of(ll);
    if (p->phase == PHASE_HEAD) {
        /* Completed without a pause after the head (a response to HEAD):
         * report the head first, the end on the next call. */
        p->done_pending = true;
    } else {
        write_last_chunk(p, p->out);
    }
    return HPE_PAUSED;
}

static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_method = on_method,
    .on_url = on_url,
    .on_status = on_status,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_chunk_extension_name = on_chunk_extension,
    .on_chunk_extension_value = on_chunk_extension,
    .on_chunk_header = on_chunk_header,
    .on_chunk_complete = on_chunk_complete,
    .on_message_complete = on_message_complete,
};

void lb_http_parser_init(struct lb_http_parser *p, enum lb_http_type type,
                         const struct lb_http_limits *limits)
{
    memset(p, 0, offsetof(struct lb_http_parser, head) + offsetof(struct lb_http_head, headers));
    p->type = type;
    p->limits = limits;
    llhttp_init(&p->ll, type == LB_HTTP_REQUEST ? HTTP_REQUEST : HTTP_RESPONSE, &settings);
    p->ll.data = p;
}

void lb_http_parser_next(struct lb_http_parser *p)
{
    if (p->ll.upgrade || p->ll.error == HPE_PAUSED_UPGRADE)
        llhttp_reset(&p->ll); /* an upgrade was refused: HTTP goes on */
    else if (p->ll.error == HPE_PAUSED)
        llhttp_resume(&p->ll);
    p->phase = PHASE_IDLE;
    p->fed = 0;
    p->head_pending = false;
    p->done_pending = false;
    p->skip_body = false;
    p->out_framing = LB_FRAMING_NONE;
}

bool lb_http_parser_idle(const struct lb_http_parser *p)
{
    return p->phase == PHASE_IDLE;
}

/* Maps an llhttp error to the status lb answers with. */
static enum lb_http_status parse_error(struct lb_http_parser *p, llhttp_errno_t err)
{
    if (p->error_status == 0) {
        p->error_status = p->type == LB_HTTP_REQUEST ? 400 : 502;
        p->error_text = llhttp_get_error_reason(&p->ll);
        if (!p->error_text)
            p->error_text = llhttp_errno_name(err);
    }
    return LB_HTTP_ERROR;
}

/* Feeds head bytes not yet seen by llhttp. Head bytes stay in `in`. */
static enum lb_http_status parse_head(struct lb_http_parser *p, struct lb_buf *in)
{
    if (p->phase == PHASE_IDLE && p->fed == 0)
        lb_buf_compact(in);
    const char *start = lb_buf_start(in) + p->fed;
    size_t len = lb_buf_len(in) - p->fed;
    if (len == 0)
        return LB_HTTP_AGAIN;
    llhttp_errno_t err = llhttp_execute(&p->ll, start, len);
    if (err == HPE_OK) {
        p->fed += len;
        if (p->fed >= p->limits->max_header_size) {
            p->error_status = 431;
            p->error_text = "request header too large";
            return LB_HTTP_ERROR;
        }
        return LB_HTTP_AGAIN;
    }
    if (err != HPE_PAUSED && err != HPE_PAUSED_UPGRADE)
        return parse_error(p, err);
    p->fed += (size_t)(llhttp_get_error_pos(&p->ll) - start);
    p->head.size = (uint32_t)p->fed;
    const char *invalid;
    if (p->type == LB_HTTP_REQUEST)
        invalid = lb_validate_request(&p->head, in->data, &p->error_status);
    else
        invalid = lb_validate_response(&p->head, in->data);
    if (invalid) {
        if (p->type == LB_HTTP_RESPONSE)
            p->error_status = 502;
        p->error_text = invalid;
        return LB_HTTP_ERROR;
    }
    p->head_pending = true;
    p->phase = PHASE_BODY;
    if (err == HPE_PAUSED_UPGRADE)
        p->done_pending = true;
    return LB_HTTP_HEAD;
}

enum lb_http_status lb_http_parse(struct lb_http_parser *p, struct lb_buf *in,
                                  struct lb_buf *out)
{
    p->in = in;
    if (p->phase != PHASE_BODY)
        return parse_head(p, in);
    bool resumed = false;
    if (p->head_pending) {
        lb_buf_consume(in, p->head.size);
        p->head_pending = false;
        llhttp_resume(&p->ll);
        resumed = true; /* llhttp may end the message without another byte */
    }
    if (p->done_pending) {
        p->done_pending = false;
        return LB_HTTP_DONE;
    }
    size_t len = lb_buf_len(in);
    if (p->out_framing != LB_FRAMING_NONE && p->out_framing != LB_FRAMING_DISCARD) {
        size_t margin = p->out_framing == LB_FRAMING_CHUNKED ? LB_HTTP_CHUNK_MARGIN : 0;
        if (lb_buf_room(out) < margin + 1)
            lb_buf_compact(out);
        size_t room = lb_buf_room(out);
        if (room < margin + 1)
            return LB_HTTP_AGAIN;
        if (len > room - margin)
            len = room - margin;
    }
    if (len == 0 && !resumed)
        return LB_HTTP_AGAIN;
    p->out = out;
    const char *start = lb_buf_start(in);
    llhttp_errno_t err = llhttp_execute(&p->ll, start, len);
    if (err == HPE_OK) {
        lb_buf_consume(in, len);
        return LB_HTTP_AGAIN;
    }
    if (err != HPE_PAUSED && err != HPE_PAUSED_UPGRADE)
        return parse_error(p, err);
    lb_buf_consume(in, (size_t)(llhttp_get_error_pos(&p->ll) - start));
    return LB_HTTP_DONE;
}

enum lb_http_status lb_http_finish(struct lb_http_parser *p, struct lb_buf *out)
{
    if (p->phase == PHASE_IDLE)
        return LB_HTTP_AGAIN;
    if (p->phase == PHASE_HEAD) {
        p->error_status = p->type == LB_HTTP_REQUEST ? 400 : 502;
        p->error_text = "connection closed inside the head";
        return LB_HTTP_ERROR;
    }
    p->out = out;
    llhttp_errno_t err = llhttp_finish(&p->ll);
    /* A body delimited by close ends here; anything else was cut short. */
    if (err == HPE_OK && llhttp_message_needs_eof(&p->ll) && p->head.has_body &&
        !p->head.chunked && !p->head.has_content_length) {
        write_last_chunk(p, out);
        return LB_HTTP_DONE;
    }
    if (err == HPE_PAUSED)
        return LB_HTTP_DONE;
    p->error_status = 502;
    p->error_text = "connection closed before the end of the message";
    return LB_HTTP_ERROR;
}

bool lb_http_value_has_token(const char *value, size_t len, const char *token)
{
    size_t tlen = strlen(token);
    size_t i = 0;
    while (i < len) {
        while (i < len && (value[i] == ' ' || value[i] == '\t' || value[i] == ','))
            i++;
        size_t start = i;
        while (i < len && value[i] != ',')
            i++;
        size_t end = i;
        while (end > start && (value[end - 1] == ' ' || value[end - 1] == '\t'))
            end--;
        if (end - start == tlen && strncasecmp(value + start, token, tlen) == 0)
            return true;
    }
    return false;
}

const char *lb_http_reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Error";
    }
}
