#include "http_rewrite.h"

#include "affinity.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#define VIA_VALUE "1.1 lb"

/* Headers that describe one connection, never forwarded as they are
 * (RFC 9110 7.6.1), plus Content-Length, which lb always writes itself. */
static const char *const hop_by_hop[] = {
    "connection", "keep-alive", "proxy-connection", "te", "transfer-encoding",
    "upgrade",    "trailer",    "content-length",
};

static bool is_hop_by_hop(const char *base, struct lb_slice name)
{
    if (name.len < 2 || name.len > 17) /* "te" .. "transfer-encoding" */
        return false;
    for (size_t i = 0; i < sizeof(hop_by_hop) / sizeof(hop_by_hop[0]); i++)
        if (lb_slice_equals_ci(base, name, hop_by_hop[i]))
            return true;
    return false;
}

/* True if a Connection header of the message nominates `name` as hop-by-hop. */
static bool nominated_by_connection(const struct lb_http_head *h, const char *base,
                                    struct lb_slice name)
{
    char lower[64];
    if (name.len >= sizeof(lower))
        return false;
    memcpy(lower, base + name.off, name.len);
    lower[name.len] = '\0';
    for (int i = lb_http_find_header(h, base, "connection", 0); i >= 0;
         i = lb_http_find_header(h, base, "connection", i + 1)) {
        struct lb_slice v = h->headers[i].value;
        if (lb_http_value_has_token(base + v.off, v.len, lower))
            return true;
    }
    return false;
}

/* Appends "name: value\r\n" for a header as received. */
static int put_header(struct lb_buf *out, const char *base, const struct lb_header *hd)
{
    return lb_buf_append(out, base + hd->name.off, hd->name.len) |
           lb_buf_append(out, ": ", 2) |
           lb_buf_append(out, base + hd->value.off, hd->value.len) |
           lb_buf_append(out, "\r\n", 2);
}

/* Kept headers go out in runs: consecutive ones whose lines read exactly
 * "name: value\r\n" in the input are copied as one block, so a typical head
 * costs a few copies instead of four per header. [start, end) are offsets
 * of the input; every other write must flush the run first (order). */
struct run {
    size_t start, end;
};

static int flush_run(struct lb_buf *out, const char *base, struct run *r)
{
    int rc = r->end > r->start ? lb_buf_append(out, base + r->start, r->end - r->start) : 0;
    r->start = r->end = 0;
    return rc;
}

static int keep_header(struct lb_buf *out, const char *base, const struct lb_header *hd,
                       struct run *r)
{
    size_t line = hd->name.off, colon = line + hd->name.len;
    size_t end = (size_t)hd->value.off + hd->value.len;
    bool canonical = hd->value.off == colon + 2 && base[colon] == ':' && base[colon + 1] == ' ' &&
                     base[end] == '\r' && base[end + 1] == '\n';
    if (canonical && r->end == line && r->end > r->start) {
        r->end = end + 2;
        return 0;
    }
    int rc = flush_run(out, base, r);
    if (!canonical)
        return rc | put_header(out, base, hd);
    r->start = line;
    r->end = end + 2;
    return rc;
}

static int put_framing(struct lb_buf *out, const struct lb_http_head *h,
                       enum lb_body_framing framing)
{
    switch (framing) {
    case LB_FRAMING_LENGTH:
        return lb_buf_append(out, "Content-Length: ", 16) |
               lb_buf_append_u64(out, h->content_length) | lb_buf_append(out, "\r\n", 2);
    case LB_FRAMING_CHUNKED:
        return lb_buf_append(out, "Transfer-Encoding: chunked\r\n", 28);
    default:
        return 0;
    }
}

enum lb_body_framing lb_request_framing(const struct lb_http_head *req)
{
    if (req->chunked)
        return LB_FRAMING_CHUNKED;
    if (req->content_length > 0)
        return LB_FRAMING_LENGTH;
    return LB_FRAMING_NONE;
}

enum lb_body_framing lb_response_framing(const struct lb_http_head *resp,
                                         const struct lb_http_head *req)
{
    if (!resp->has_body)
        return LB_FRAMING_NONE;
    bool client_http11 = req->version_major == 1 && req->version_minor >= 1;
    if (resp->has_content_length && !resp->chunked)
        return LB_FRAMING_LENGTH;
    return client_http11 ? LB_FRAMING_CHUNKED : LB_FRAMING_CLOSE;
}

/* A Cookie header without the cookie lb consumed; every other cookie byte
 * for byte. No header at all when nothing remains. */
static int put_cookie_without(struct lb_buf *out, const char *base, const struct lb_header *hd,
                              const char *name)
{
    size_t start = out->tail, len;
    if (lb_buf_append(out, "Cookie: ", 8) < 0)
        return -1;
    int removed = lb_cookie_remove(base + hd->value.off, hd->value.len, name, lb_buf_end(out),
                                   lb_buf_room(out), &len);
    if (removed < 0)
        return -1;
    if (len == 0) {
        out->tail = start;
        return 0;
    }
    lb_buf_produce(out, len);
    return lb_buf_append(out, "\r\n", 2);
}

/* Host: the request's own (or its absolute-form authority), else the default. */
static int put_host(struct lb_buf *out, const struct lb_http_head *req, const char *base,
                    const struct lb_forward_info *info)
{
    if (req->has_host)
        return lb_buf_append(out, "Host: ", 6) |
               lb_buf_append(out, base + req->host.off, req->host.len) |
               lb_buf_append(out, "\r\n", 2);
    if (info->default_host)
        return lb_buf_append(out, "Host: ", 6) | lb_buf_append_str(out, info->default_host) |
               lb_buf_append(out, "\r\n", 2);
    return 0;
}

bool lb_request_wants_tunnel(const struct lb_http_head *req, const char *base)
{
    if (!req->upgrade || req->method == HTTP_CONNECT)
        return false;
    int i = lb_http_find_header(req, base, "upgrade", 0);
    if (i < 0)
        return false;
    struct lb_slice v = req->headers[i].value;
    return !lb_http_value_has_token(base + v.off, v.len, "h2c");
}

static bool has_underscore(const char *base, struct lb_slice name)
{
    return memchr(base + name.off, '_', name.len) != NULL;
}

const char *lb_rewrite_request(const struct lb_http_head *req, const char *base,
                               const struct lb_forward_info *info, enum lb_body_framing framing,
                               bool tunnel, struct lb_buf *out)
{
    lb_buf_compact(out); /* so a failed append can be undone by resetting tail */
    size_t saved_tail = out->tail;
    int rc = lb_buf_append(out, base + req->method_text.off, req->method_text.len) |
             lb_buf_append(out, " ", 1) |
             lb_buf_append(out, base + req->target.off, req->target.len) |
             lb_buf_append(out, " HTTP/1.1\r\n", 11);

    /* Headers lb owns (Host, X-Forwarded-*, Via, framing) are written after
     * the client's are filtered, so no nomination in Connection removes them. */
    int xff_first = -1;
    bool te_trailers = false, host_written = false;
    bool has_connection = lb_http_find_header(req, base, "connection", 0) >= 0;
    struct run run = {0, 0};
    for (unsigned i = 0; i < req->n_headers && rc == 0; i++) {
        const struct lb_header *hd = &req->headers[i];
        if (lb_slice_equals_ci(base, hd->name, "te"))
            te_trailers |= lb_http_value_has_token(base + hd->value.off, hd->value.len, "trailers");
        if (is_hop_by_hop(base, hd->name) ||
            (has_connection && nominated_by_connection(req, base, hd->name)))
            continue;
        if (!info->allow_underscores && has_underscore(base, hd->name))
            continue; /* X_Forwarded_For must not pass for X-Forwarded-For */
        if (info->strip_cookie && lb_slice_equals_ci(base, hd->name, "cookie")) {
            rc |= flush_run(out, base, &run) | put_cookie_without(out, base, hd, info->strip_cookie);
            continue;
        }
        if (lb_slice_equals_ci(base, hd->name, "host")) {
            if (!host_written) /* lb's Host, where the client had its own */
                rc |= flush_run(out, base, &run) | put_host(out, req, base, info);
            host_written = true;
            continue;
        }
        if (lb_slice_equals_ci(base, hd->name, "x-forwarded-proto") ||
            lb_slice_equals_ci(base, hd->name, "x-forwarded-host"))
            continue; /* lb sets these */
        if (lb_slice_equals_ci(base, hd->name, "x-forwarded-for")) {
            if (xff_first < 0)
                xff_first = (int)i;
            continue; /* merged below, the client's address last */
        }
        rc |= keep_header(out, base, hd, &run);
    }
    rc |= flush_run(out, base, &run);
    if (!host_written)
        rc |= put_host(out, req, base, info);
    if (te_trailers)
        rc |= lb_buf_append(out, "TE: trailers\r\n", 14);

    rc |= lb_buf_append(out, "X-Forwarded-For: ", 17);
    for (int i = info->xff_replace ? -1 : xff_first; i >= 0;
         i = lb_http_find_header(req, base, "x-forwarded-for", i + 1)) {
        const struct lb_slice v = req->headers[i].value;
        if (v.len == 0)
            continue;
        rc |= lb_buf_append(out, base + v.off, v.len) | lb_buf_append(out, ", ", 2);
    }
    rc |= lb_buf_append_str(out, info->client_addr) |
          lb_buf_append(out, "\r\nX-Forwarded-Proto: ", 21) | lb_buf_append_str(out, info->proto) |
          lb_buf_append(out, "\r\n", 2);
    if (req->has_host)
        rc |= lb_buf_append(out, "X-Forwarded-Host: ", 18) |
              lb_buf_append(out, base + req->host.off, req->host.len) |
              lb_buf_append(out, "\r\n", 2);
    rc |= lb_buf_append(out, "Via: " VIA_VALUE "\r\n", 5 + sizeof(VIA_VALUE) - 1 + 2);

    if (tunnel) {
        int up = lb_http_find_header(req, base, "upgrade", 0);
        if (up >= 0)
            rc |= put_header(out, base, &req->headers[up]);
    }
    /* TE is hop-by-hop: whoever sends it names it in Connection. */
    if (tunnel && te_trailers)
        rc |= lb_buf_append(out, "Connection: upgrade, TE\r\n", 25);
    else if (tunnel)
        rc |= lb_buf_append(out, "Connection: upgrade\r\n", 21);
    else if (te_trailers)
        rc |= lb_buf_append(out, "Connection: TE\r\n", 16);
    rc |= put_framing(out, req, framing);
    rc |= lb_buf_append(out, "\r\n", 2);
    if (rc != 0) {
        out->tail = saved_tail;
        return "request head too large to forward";
    }
    return NULL;
}

const char *lb_rewrite_response(const struct lb_http_head *resp, const char *base,
                                const struct lb_http_head *req, enum lb_body_framing framing,
                                bool keep_alive, const char *extra, struct lb_buf *out)
{
    lb_buf_compact(out); /* so a failed append can be undone by resetting tail */
    size_t saved_tail = out->tail;
    bool switching = resp->status == 101;
    bool has_connection = lb_http_find_header(resp, base, "connection", 0) >= 0;
    bool interim = resp->status / 100 == 1 && !switching;
    int rc = lb_buf_append(out, "HTTP/1.1 ", 9) | lb_buf_append_u64(out, resp->status) |
             lb_buf_append(out, " ", 1) |
             lb_buf_append(out, base + resp->reason.off, resp->reason.len) |
             lb_buf_append(out, "\r\n", 2);

    struct run run = {0, 0};
    for (unsigned i = 0; i < resp->n_headers && rc == 0; i++) {
        const struct lb_header *hd = &resp->headers[i];
        /* Without a body lb re-frames, Content-Length describes the resource
         * (HEAD, 304) and passes through. */
        bool keep_length = framing == LB_FRAMING_NONE &&
                           lb_slice_equals_ci(base, hd->name, "content-length");
        if (!keep_length && (is_hop_by_hop(base, hd->name) ||
                             (has_connection && nominated_by_connection(resp, base, hd->name))))
            continue;
        rc |= keep_header(out, base, hd, &run);
    }
    rc |= flush_run(out, base, &run);
    rc |= lb_buf_append(out, "Via: " VIA_VALUE "\r\n", 5 + sizeof(VIA_VALUE) - 1 + 2);
    if (extra)
        rc |= lb_buf_append(out, extra, strlen(extra));
    if (switching) {
        int up = lb_http_find_header(resp, base, "upgrade", 0);
        if (up >= 0)
            rc |= put_header(out, base, &resp->headers[up]);
        rc |= lb_buf_append(out, "Connection: upgrade\r\n", 21);
    } else if (!interim) {
        bool client_http10 = req->version_major == 1 && req->version_minor == 0;
        if (!keep_alive)
            rc |= lb_buf_append(out, "Connection: close\r\n", 19);
        else if (client_http10)
            rc |= lb_buf_append(out, "Connection: keep-alive\r\n", 24);
        rc |= put_framing(out, resp, framing);
    }
    rc |= lb_buf_append(out, "\r\n", 2);
    if (rc != 0) {
        out->tail = saved_tail;
        return "response head too large to forward";
    }
    return NULL;
}
