#include "http_validate.h"

#include <string.h>
#include <strings.h>

/* RFC 9110 5.6.2 token characters. */
static const bool tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
    ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
    ['8'] = 1, ['9'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1,
    ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1,
    ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
    ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1,
    ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1,
    ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
    ['y'] = 1, ['z'] = 1,
};

static bool is_tchar(unsigned char ch)
{
    return tchar[ch];
}

/* Line endings are CRLF and nothing else: no bare CR, no bare LF, no NUL, no
 * obs-fold (a line starting with whitespace). Leading empty lines are CRLFs.
 * Every LF is found with memchr and checked to follow a CR; then as many CRs
 * as LFs means no CR stands alone. */
static const char *check_lines(const char *base, size_t size)
{
    if (memchr(base, 0, size))
        return "NUL in the head";
    size_t lfs = 0, crs = 0;
    for (const char *p = base, *end = base + size; (p = memchr(p, '\n', (size_t)(end - p)));
         p++) {
        if (p == base || p[-1] != '\r')
            return "bare LF in the head";
        if (p + 1 < end && (p[1] == ' ' || p[1] == '\t'))
            return "obs-fold in the head";
        lfs++;
    }
    for (const char *p = base, *end = base + size; (p = memchr(p, '\r', (size_t)(end - p))); p++)
        crs++;
    return crs == lfs ? NULL : "bare CR in the head";
}

/* Header names are tokens. Values need no pass here: llhttp refuses control
 * characters in them, and check_lines() the CR, LF and NUL it lets by. */
static const char *check_fields(const struct lb_http_head *h, const char *base)
{
    for (unsigned i = 0; i < h->n_headers; i++) {
        const struct lb_header *hd = &h->headers[i];
        if (hd->name.len == 0)
            return "empty header name";
        const unsigned char *name = (const unsigned char *)base + hd->name.off;
        for (uint32_t k = 0; k < hd->name.len; k++)
            if (!tchar[name[k]])
                return "invalid header name";
    }
    return NULL;
}

/* "method SP target SP HTTP/1.x CRLF", single spaces, after any empty lines. */
static const char *check_request_line(const struct lb_http_head *h, const char *base)
{
    const char *m = base + h->method_text.off;
    if (h->method_text.len == 0 || h->target.len == 0)
        return "malformed request line";
    for (uint32_t i = 0; i < h->method_text.len; i++)
        if (!is_tchar((unsigned char)m[i]))
            return "malformed method";
    if (h->target.off != h->method_text.off + h->method_text.len + 1)
        return "malformed request line";
    const char *t = base + h->target.off;
    for (uint32_t i = 0; i < h->target.len; i++)
        if ((unsigned char)t[i] <= 0x20 || (unsigned char)t[i] == 0x7f)
            return "invalid character in the target";
    const char *v = t + h->target.len;
    if (h->target.off + h->target.len + 10 > h->size || memcmp(v, " HTTP/1.", 8) != 0 || (v[8] != '0' && v[8] != '1') || v[9] != '\r')
        return "malformed request line";
    return NULL;
}

/* Every Content-Length value: 1*DIGIT, and all of them equal. */
static const char *check_content_length(const struct lb_http_head *h, const char *base)
{
    int first = -1;
    for (int i = lb_http_find_header(h, base, "content-length", 0); i >= 0;
         i = lb_http_find_header(h, base, "content-length", i + 1)) {
        struct lb_slice v = h->headers[i].value;
        if (v.len == 0 || v.len > 19)
            return "malformed Content-Length";
        for (uint32_t k = 0; k < v.len; k++)
            if (base[v.off + k] < '0' || base[v.off + k] > '9')
                return "malformed Content-Length";
        if (first >= 0) {
            struct lb_slice f = h->headers[first].value;
            if (f.len != v.len || memcmp(base + f.off, base + v.off, v.len) != 0)
                return "conflicting Content-Length";
        }
        first = i;
    }
    return NULL;
}

/* Transfer-Encoding must be exactly one final "chunked". Returns 0 when it is
 * (or absent), 400 for a malformed or non-final chunked, 501 for a coding lb
 * does not decode ("gzip, chunked"). */
static int transfer_coding_status(const struct lb_http_head *h, const char *base)
{
    unsigned codings = 0, chunked = 0, headers = 0;
    bool last_chunked = false;
    for (int i = lb_http_find_header(h, base, "transfer-encoding", 0); i >= 0;
         i = lb_http_find_header(h, base, "transfer-encoding", i + 1)) {
        headers++;
        struct lb_slice v = h->headers[i].value;
        const char *p = base + v.off, *end = p + v.len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
                p++;
            const char *tok = p;
            while (p < end && *p != ',' && *p != ' ' && *p != '\t')
                p++;
            size_t len = (size_t)(p - tok);
            if (len == 0)
                continue;
            for (size_t k = 0; k < len; k++)
                if (!is_tchar((unsigned char)tok[k]))
                    return 400;
            while (p < end && (*p == ' ' || *p == '\t'))
                p++;
            if (p < end && *p != ',')
                return 400; /* parameters or junk after the coding */
            codings++;
            last_chunked = len == 7 && strncasecmp(tok, "chunked", 7) == 0;
            chunked += last_chunked;
        }
    }
    if (codings == 0)
        return headers ? 400 : 0; /* an empty Transfer-Encoding frames nothing */
    if (!last_chunked || chunked > 1)
        return 400;
    return codings > 1 ? 501 : 0;
}

static bool is_host_char(unsigned char ch)
{
    /* RFC 3986 reg-name: unreserved, pct-encoded, sub-delims */
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
        return true;
    return ch != 0 && strchr("-._~%!$&'()*+,;=", ch) != NULL;
}

/* host [ ":" port ], host a reg-name or an [IPv6] literal. */
static bool valid_authority(const char *p, size_t len)
{
    if (len == 0)
        return false;
    size_t i = 0;
    if (p[0] == '[') {
        while (i < len && p[i] != ']') {
            char ch = p[i];
            if (i > 0 && !((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') ||
                           (ch >= 'A' && ch <= 'F') || ch == ':' || ch == '.'))
                return false;
            i++;
        }
        if (i == len)
            return false;
        i++;
    } else {
        while (i < len && p[i] != ':') {
            if (!is_host_char((unsigned char)p[i]))
                return false;
            i++;
        }
        if (i == 0)
            return false;
    }
    if (i == len)
        return true;
    if (p[i] != ':')
        return false;
    size_t digits = len - i - 1;
    if (digits > 5)
        return false;
    for (size_t k = i + 1; k < len; k++)
        if (p[k] < '0' || p[k] > '9')
            return false;
    return true;
}

/* "http://authority/path" → target "/path", host "authority". */
static const char *normalize_absolute_form(struct lb_http_head *h, const char *base,
                                           struct lb_slice *authority)
{
    const char *t = base + h->target.off;
    size_t scheme = 0;
    if (h->target.len > 7 && strncasecmp(t, "http://", 7) == 0)
        scheme = 7;
    else if (h->target.len > 8 && strncasecmp(t, "https://", 8) == 0)
        scheme = 8;
    else
        return NULL;
    size_t a = scheme;
    while (a < h->target.len && t[a] != '/' && t[a] != '?' && t[a] != '#')
        a++;
    if (memchr(t + scheme, '@', a - scheme))
        return "userinfo in the target";
    *authority = (struct lb_slice){h->target.off + (uint32_t)scheme, (uint32_t)(a - scheme)};
    if (a == h->target.len) /* no path: the '/' of "http:/" stands for it */
        h->target = (struct lb_slice){h->target.off + (uint32_t)scheme - 1, 1};
    else if (t[a] == '/')
        h->target = (struct lb_slice){h->target.off + (uint32_t)a, h->target.len - (uint32_t)a};
    else
        return "absolute-form target without a path";
    return NULL;
}

static bool slices_equal_ci(const char *base, struct lb_slice a, struct lb_slice b)
{
    return a.len == b.len && strncasecmp(base + a.off, base + b.off, a.len) == 0;
}

static const char *check_request(struct lb_http_head *h, const char *base, int *status)
{
    const char *err;
    if ((err = check_lines(base, h->size)) || (err = check_request_line(h, base)) ||
        (err = check_fields(h, base)) || (err = check_content_length(h, base)))
        return err;
    int te = transfer_coding_status(h, base);
    if (te) {
        *status = te; /* 400 or 501 */
        return te == 501 ? "unsupported transfer coding" : "malformed Transfer-Encoding";
    }
    int host = lb_http_find_header(h, base, "host", 0);
    if (host >= 0 && lb_http_find_header(h, base, "host", host + 1) >= 0)
        return "several Host headers";
    struct lb_slice authority = {0, 0};
    bool asterisk = h->target.len == 1 && base[h->target.off] == '*';
    if (asterisk && h->method != HTTP_OPTIONS)
        return "invalid target";
    if (h->method != HTTP_CONNECT && base[h->target.off] != '/' && !asterisk) {
        if ((err = normalize_absolute_form(h, base, &authority)))
            return err;
        if (authority.len == 0)
            return "invalid target";
    }
    if (authority.len > 0) {
        if (!valid_authority(base + authority.off, authority.len))
            return "invalid authority";
        if (host < 0 && h->version_minor >= 1)
            return "HTTP/1.1 request without Host";
        if (host >= 0 && !slices_equal_ci(base, authority, h->headers[host].value))
            return "Host does not match the target";
        h->host = authority;
        h->has_host = true;
        return NULL;
    }
    if (host < 0) {
        if (h->version_minor >= 1)
            return "HTTP/1.1 request without Host";
        return NULL;
    }
    if (!valid_authority(base + h->headers[host].value.off, h->headers[host].value.len))
        return "invalid Host";
    h->host = h->headers[host].value;
    h->has_host = true;
    return NULL;
}

const char *lb_validate_request(struct lb_http_head *h, const char *base, int *status)
{
    int te_status = 400;
    const char *err = check_request(h, base, &te_status);
    if (err)
        *status = te_status;
    return err;
}

/* "HTTP/1.x SP 3DIGIT [SP reason] CRLF", status 100..599, a reason of
 * visible characters, spaces and tabs. */
static const char *check_status_line(const struct lb_http_head *h, const char *base)
{
    const char *p = base, *end = base + h->size;
    while (end - p >= 2 && p[0] == '\r' && p[1] == '\n')
        p += 2;
    if (end - p < 14 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') ||
        p[8] != ' ')
        return "malformed status line";
    for (int i = 9; i < 12; i++)
        if (p[i] < '0' || p[i] > '9')
            return "malformed status code";
    if (h->status < 100 || h->status > 599)
        return "status code out of range";
    p += 12;
    if (*p == ' ')
        p++;
    for (; p < end && *p != '\r'; p++)
        if ((unsigned char)*p < 0x20 ? *p != '\t' : *p == 0x7f)
            return "control character in the status line";
    return p < end ? NULL : "malformed status line";
}

const char *lb_validate_response(const struct lb_http_head *h, const char *base)
{
    const char *err;
    if ((err = check_lines(base, h->size)) || (err = check_status_line(h, base)) ||
        (err = check_fields(h, base)) || (err = check_content_length(h, base)))
        return err;
    if (transfer_coding_status(h, base) != 0)
        return "unsupported Transfer-Encoding in the response";
    return NULL;
}
