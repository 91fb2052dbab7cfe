/* The endpoints of lb-backend. be_route_head() reads what a request asks for
 * from its head (while the head's slices are alive), be_route_answer() answers
 * once the body was read. Answers go through backend_conn.c, which adds the
 * headers every answer carries (X-Backend-Id, Content-Length, Connection). */
#include "backend.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define BE_DELAY_MAX_MS (10u * 60u * 1000u)
#define BE_REQUEST_ID_MAX 200 /* longer X-Request-Id values are cut in the post log */

struct str {
    const char *p;
    size_t len;
};

static bool str_is(struct str s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len == n && memcmp(s.p, lit, n) == 0;
}

/* `path` is `base` or `base/...`. */
static bool path_under(struct str path, const char *base)
{
    size_t n = strlen(base);
    return path.len >= n && memcmp(path.p, base, n) == 0 && (path.len == n || path.p[n] == '/');
}

/* The value of query parameter `name`, if present. */
static bool query_param(struct str query, const char *name, struct str *value)
{
    size_t nlen = strlen(name);
    const char *p = query.p, *end = query.p + query.len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        if ((size_t)(stop - p) >= nlen && memcmp(p, name, nlen) == 0 &&
            (p + nlen == stop || p[nlen] == '=')) {
            const char *v = p + nlen == stop ? stop : p + nlen + 1;
            *value = (struct str){v, (size_t)(stop - v)};
            return true;
        }
        p = stop + 1;
    }
    return false;
}

/* Strict decimal: digits only, no sign, no overflow. */
static bool parse_u64(struct str s, uint64_t *out)
{
    if (s.len == 0 || s.len > 20)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < s.len; i++) {
        if (s.p[i] < '0' || s.p[i] > '9')
            return false;
        unsigned d = (unsigned)(s.p[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

static bool number_param(struct str query, const char *name, uint64_t max, uint64_t *out)
{
    struct str v;
    return query_param(query, name, &v) && parse_u64(v, out) && *out <= max;
}

static void reject(struct be_request *rq, int status, const char *text)
{
    rq->route = BE_ROUTE_ERROR;
    rq->error_status = status;
    rq->error_text = text;
}

static bool is_lower_hex(const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return false;
    }
    return true;
}

/* Finds a well-formed `sid` among the request's cookies. */
static void find_sid(struct be_request *rq, const struct lb_http_head *h, const char *base)
{
    for (int i = lb_http_find_header(h, base, "cookie", 0); i >= 0;
         i = lb_http_find_header(h, base, "cookie", i + 1)) {
        const char *p = lb_slice_ptr(base, h->headers[i].value);
        const char *end = p + h->headers[i].value.len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == '\t' || *p == ';'))
                p++;
            const char *semi = memchr(p, ';', (size_t)(end - p));
            const char *stop = semi ? semi : end;
            if (stop - p == 4 + BE_SID_HEX && memcmp(p, "sid=", 4) == 0 &&
                is_lower_hex(p + 4, BE_SID_HEX)) {
                memcpy(rq->sid, p + 4, BE_SID_HEX);
                rq->sid[BE_SID_HEX] = '\0';
                rq->has_sid = true;
                return;
            }
            p = stop;
        }
    }
}

static bool expects_continue(const struct lb_http_head *h, const char *base)
{
    int i = lb_http_find_header(h, base, "expect", 0);
    return i >= 0 && lb_slice_equals_ci(base, h->headers[i].value, "100-continue");
}

static void copy_text(char *dst, size_t cap, const char *src, size_t len)
{
    if (len >= cap)
        len = cap - 1;
    memcpy(dst, src, len);
    dst[len] = '\0';
}

/* --post-log: a POST carrying X-Request-Id is recorded as one line "ID\n"
 * with a single write() on an O_APPEND file, so the lines of every backend
 * sharing the file (or of several files) never interleave. Recorded when the
 * head arrives: a POST whose body never completed still counts as delivered,
 * which is what a duplicate count must assume. Bytes that are not visible
 * ASCII become '?'. */
static void log_post(struct be_server *srv, const struct lb_http_head *h, const char *base)
{
    if (srv->post_log_fd < 0 || h->method != HTTP_POST)
        return;
    int i = lb_http_find_header(h, base, "x-request-id", 0);
    if (i < 0 || h->headers[i].value.len == 0)
        return;
    char line[BE_REQUEST_ID_MAX + 1];
    const char *v = lb_slice_ptr(base, h->headers[i].value);
    size_t n =
        h->headers[i].value.len < BE_REQUEST_ID_MAX ? h->headers[i].value.len : BE_REQUEST_ID_MAX;
    for (size_t k = 0; k < n; k++) {
        unsigned char ch = (unsigned char)v[k];
        line[k] = ch > 0x20 && ch < 0x7f ? (char)ch : '?';
    }
    line[n] = '\n';
    ssize_t w = write(srv->post_log_fd, line, n + 1);
    if (w != (ssize_t)(n + 1))
        fprintf(stderr, "lb-backend %s: --post-log write failed\n", srv->id);
}

void be_route_head(struct be_conn *c, const struct lb_http_head *h, const char *base)
{
    struct be_request *rq = &c->req;
    rq->route = BE_ROUTE_NOT_FOUND;
    rq->error_status = 0;
    rq->error_text = NULL;
    rq->reject_now = false;
    rq->is_head = h->method == HTTP_HEAD;
    rq->keep_alive = h->keep_alive && !h->upgrade;
    rq->http10 = h->version_major == 1 && h->version_minor == 0;
    rq->number = 0;
    rq->chunked = false;
    rq->has_sid = false;
    rq->body_bytes = 0;

    struct str target = {lb_slice_ptr(base, h->target), h->target.len};
    if (c->srv->log) {
        copy_text(rq->method, sizeof(rq->method), lb_slice_ptr(base, h->method_text),
                  h->method_text.len);
        copy_text(rq->target, sizeof(rq->target), target.p, target.len);
    }
    /* absolute-form (http://host/path?q): keep the path and query. */
    if (target.len >= 7 && strncasecmp(target.p, "http://", 7) == 0) {
        const char *p = target.p + 7, *end = target.p + target.len;
        while (p < end && *p != '/' && *p != '?')
            p++;
        target = (struct str){p, (size_t)(end - p)};
    }
    const char *q = memchr(target.p, '?', target.len);
    struct str path = {target.p, q ? (size_t)(q - target.p) : target.len};
    struct str query = {q ? q + 1 : target.p + target.len, q ? target.len - path.len - 1 : 0};
    if (path.len == 0)
        path = (struct str){"/", 1};

    if (str_is(path, "/")) {
        rq->route = BE_ROUTE_ROOT;
    } else if (str_is(path, "/health")) {
        rq->route = BE_ROUTE_HEALTH;
    } else if (str_is(path, "/admin/health")) {
        struct str state;
        rq->route = BE_ROUTE_ADMIN_HEALTH;
        if (h->method != HTTP_POST)
            reject(rq, 405, "use POST /admin/health?state=up|down");
        else if (!query_param(query, "state", &state) ||
                 !(str_is(state, "up") || str_is(state, "down")))
            reject(rq, 400, "state must be up or down");
        else
            rq->state_up = str_is(state, "up");
    } else if (path_under(path, "/echo")) {
        rq->route = BE_ROUTE_ECHO;
        if (h->has_content_length && h->content_length > BE_ECHO_MAX_BODY) {
            reject(rq, 413, "request body over 1 MiB");
            rq->reject_now = true;
        }
    } else if (path_under(path, "/sink")) {
        rq->route = BE_ROUTE_SINK;
    } else if (str_is(path, "/delay")) {
        rq->route = BE_ROUTE_DELAY;
        if (!number_param(query, "ms", BE_DELAY_MAX_MS, &rq->number))
            reject(rq, 400, "ms must be a number of milliseconds up to 600000");
    } else if (str_is(path, "/status")) {
        rq->route = BE_ROUTE_STATUS;
        if (!number_param(query, "code", 599, &rq->number) || rq->number < 100)
            reject(rq, 400, "code must be 100..599");
        else if (rq->number == 101)
            reject(rq, 400, "101 needs an Upgrade request");
    } else if (str_is(path, "/bytes")) {
        struct str chunked;
        rq->route = BE_ROUTE_BYTES;
        if (!number_param(query, "n", INT64_MAX, &rq->number))
            reject(rq, 400, "n must be a number of bytes");
        else if (query_param(query, "chunked", &chunked))
            rq->chunked = str_is(chunked, "1") || str_is(chunked, "true");
    } else if (str_is(path, "/session")) {
        rq->route = BE_ROUTE_SESSION;
        find_sid(rq, h, base);
    } else if (str_is(path, "/reset")) {
        rq->route = BE_ROUTE_RESET;
    } else if (str_is(path, "/hang")) {
        rq->route = BE_ROUTE_HANG;
    }
    log_post(c->srv, h, base);

    /* The client waits for a go-ahead before sending the body. */
    if (!rq->reject_now && h->has_body && !rq->http10 && expects_continue(h, base))
        lb_buf_append(&c->out, "HTTP/1.1 100 Continue\r\n\r\n", 25);
}

static void answer_text(struct be_conn *c, int status, const char *extra_headers, const char *fmt,
                        ...) __attribute__((format(printf, 4, 5)));

static void answer_text(struct be_conn *c, int status, const char *extra_headers, const char *fmt,
                        ...)
{
    char body[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(body, sizeof(body), fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    be_conn_respond(c, status, extra_headers, body,
                    (size_t)n < sizeof(body) ? (size_t)n : sizeof(body) - 1);
}

static void answer_session(struct be_conn *c)
{
    struct be_request *rq = &c->req;
    uint64_t count = rq->has_sid ? be_sessions_hit(c->srv->sessions, rq->sid) : 0;
    char cookie[64 + BE_SID_HEX] = "";
    if (count == 0) {
        if (be_sessions_create(c->srv->sessions, rq->sid) < 0) {
            answer_text(c, 500, NULL, "out of memory\n");
            return;
        }
        count = 1;
        snprintf(cookie, sizeof(cookie), "Set-Cookie: sid=%s; Path=/\r\n", rq->sid);
    }
    answer_text(c, 200, cookie, "server=%s session=%s count=%" PRIu64 "\n", c->srv->id, rq->sid,
                count);
}

void be_route_answer(struct be_conn *c)
{
    struct be_request *rq = &c->req;
    struct be_server *srv = c->srv;
    switch (rq->route) {
    case BE_ROUTE_ROOT:
        if (!rq->is_head && !c->close_after && !rq->http10 && !srv->log) {
            /* The benchmark's path: one prepared answer, one copy. */
            lb_buf_append(&c->out, srv->root_response, srv->root_response_len);
            return;
        }
        answer_text(c, 200, NULL, "hello from %s\n", srv->id);
        return;
    case BE_ROUTE_HEALTH:
        if (srv->healthy)
            be_conn_respond(c, 200, NULL, "ok", 2);
        else
            be_conn_respond(c, 503, NULL, "down", 4);
        return;
    case BE_ROUTE_ADMIN_HEALTH:
        srv->healthy = rq->state_up;
        answer_text(c, 200, NULL, "health %s\n", rq->state_up ? "up" : "down");
        return;
    case BE_ROUTE_ECHO:
        be_conn_respond_echo(c);
        return;
    case BE_ROUTE_SINK:
        answer_text(c, 200, NULL, "received %" PRIu64 "\n", rq->body_bytes);
        return;
    case BE_ROUTE_DELAY:
        be_conn_delay(c, rq->number);
        return;
    case BE_ROUTE_STATUS: {
        int code = (int)rq->number;
        if (code < 200) {
            /* An interim answer cannot end an exchange: a final one follows. */
            be_conn_interim(c, code);
            answer_text(c, 200, NULL, "status %d\n", code);
        } else {
            answer_text(c, code, NULL, "status %d\n", code);
        }
        return;
    }
    case BE_ROUTE_BYTES:
        be_conn_respond_bytes(c, rq->number, rq->chunked && !rq->http10);
        return;
    case BE_ROUTE_SESSION:
        answer_session(c);
        return;
    case BE_ROUTE_RESET:
        be_conn_reset(c);
        return;
    case BE_ROUTE_HANG:
        be_conn_hang(c);
        return;
    case BE_ROUTE_NOT_FOUND:
        answer_text(c, 404, NULL, "not found\n");
        return;
    case BE_ROUTE_ERROR:
        answer_text(c, rq->error_status, NULL, "%s\n", rq->error_text);
        return;
    }
}

void be_route_delayed(struct be_conn *c)
{
    answer_text(c, 200, NULL, "delayed %" PRIu64 " ms\n", c->req.number);
}

static const struct {
    int status;
    const char *reason;
} reasons[] = {
    {100, "Continue"},
    {101, "Switching Protocols"},
    {102, "Processing"},
    {103, "Early Hints"},
    {200, "OK"},
    {201, "Created"},
    {202, "Accepted"},
    {203, "Non-Authoritative Information"},
    {204, "No Content"},
    {205, "Reset Content"},
    {206, "Partial Content"},
    {300, "Multiple Choices"},
    {301, "Moved Permanently"},
    {302, "Found"},
    {303, "See Other"},
    {304, "Not Modified"},
    {307, "Temporary Redirect"},
    {308, "Permanent Redirect"},
    {400, "Bad Request"},
    {401, "Unauthorized"},
    {403, "Forbidden"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {408, "Request Timeout"},
    {409, "Conflict"},
    {410, "Gone"},
    {411, "Length Required"},
    {413, "Content Too Large"},
    {414, "URI Too Long"},
    {415, "Unsupported Media Type"},
    {417, "Expectation Failed"},
    {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"},
    {500, "Internal Server Error"},
    {501, "Not Implemented"},
    {502, "Bad Gateway"},
    {503, "Service Unavailable"},
    {504, "Gateway Timeout"},
    {505, "HTTP Version Not Supported"},
};

const char *be_reason(int status)
{
    for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++) {
        if (reasons[i].status == status)
            return reasons[i].reason;
    }
    return "Unknown";
}
