/* lb/http1.c: heads, bodies re-framed, pipelining, errors, byte-by-byte input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "http1.h"

static const struct lb_http_limits limits = {
    .max_header_size = 1024, .max_uri_size = 64, .max_body_size = 0};

/* Feeds `input` (in pieces of `step` bytes, 0 = all at once) and records
 * every head and body as text: "HEAD <method> <target> <status>|BODY <bytes>|DONE|ERROR <status>". */
struct run {
    char log[8192];
    size_t log_len;
    char body[4096];
    size_t body_len;
    int heads, dones, error_status;
    struct lb_http_head last_head;
    char last_base[2048];
};

static void note(struct run *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    r->log_len += (size_t)vsnprintf(r->log + r->log_len, sizeof(r->log) - r->log_len, fmt, ap);
    va_end(ap);
}

static void run_parser(enum lb_http_type type, const char *input, size_t len, size_t step,
                       enum lb_body_framing framing, bool skip_body, struct run *r,
                       const struct lb_http_limits *lim)
{
    memset(r, 0, sizeof(*r));
    struct lb_http_parser p;
    struct lb_buf in, out;
    assert_int_equal(lb_buf_init(&in, 4096), 0);
    assert_int_equal(lb_buf_init(&out, 512), 0);
    lb_http_parser_init(&p, type, lim ? lim : &limits);
    p.skip_body = skip_body;
    size_t pos = 0;
    for (int guard = 0; guard < 100000; guard++) {
        size_t in_before = lb_buf_len(&in);
        enum lb_http_status st = lb_http_parse(&p, &in, &out);
        /* drain `out` like a socket that takes everything */
        memcpy(r->body + r->body_len, lb_buf_start(&out), lb_buf_len(&out));
        r->body_len += lb_buf_len(&out);
        lb_buf_consume(&out, lb_buf_len(&out));
        if (st == LB_HTTP_HEAD) {
            r->heads++;
            r->last_head = p.head;
            memcpy(r->last_base, in.data, p.head.size);
            note(r, "HEAD %u|", p.head.status);
            p.out_framing = p.head.has_body ? framing : LB_FRAMING_NONE;
            continue;
        }
        if (st == LB_HTTP_DONE) {
            r->dones++;
            note(r, "DONE|");
            bool upgrade = p.head.upgrade;
            lb_http_parser_next(&p);
            p.skip_body = skip_body;
            if (upgrade)
                break;
            continue;
        }
        if (st == LB_HTTP_ERROR) {
            r->error_status = p.error_status;
            note(r, "ERROR %d|", p.error_status);
            break;
        }
        if (lb_buf_len(&in) > 0 && lb_buf_len(&in) != in_before)
            continue; /* stopped for room in `out`, which was just drained */
        if (pos == len) {
            enum lb_http_status fin = lb_http_finish(&p, &out);
            memcpy(r->body + r->body_len, lb_buf_start(&out), lb_buf_len(&out));
            r->body_len += lb_buf_len(&out);
            if (fin == LB_HTTP_DONE)
                note(r, "EOF-DONE|");
            else if (fin == LB_HTTP_ERROR)
                note(r, "EOF-ERROR|");
            break;
        }
        size_t n = step ? step : len - pos;
        if (n > len - pos)
            n = len - pos;
        if (lb_buf_room(&in) < n)
            lb_buf_compact(&in);
        if (lb_buf_room(&in) < n)
            n = lb_buf_room(&in);
        lb_buf_append(&in, input + pos, n);
        pos += n;
    }
    r->body[r->body_len] = '\0';
    lb_buf_free(&in);
    lb_buf_free(&out);
}

struct body_case {
    const char *name;
    enum lb_http_type type;
    const char *input;
    enum lb_body_framing framing;
    bool skip_body;
    const char *events;
    const char *body;
    bool whole_only; /* lb's chunk sizes follow the reads: compare whole input only */
};

static const struct body_case body_cases[] = {
    {"get", LB_HTTP_REQUEST, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", LB_FRAMING_LENGTH, false,
     "HEAD 0|DONE|", ""},
    {"content-length", LB_HTTP_REQUEST,
     "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", LB_FRAMING_LENGTH, false,
     "HEAD 0|DONE|", "hello"},
    {"chunked kept chunked", LB_HTTP_REQUEST,
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
     "5;ext=1\r\nhello\r\n003\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n",
     LB_FRAMING_CHUNKED, false, "HEAD 0|DONE|", "5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n"},
    {"chunked to close", LB_HTTP_RESPONSE,
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
     LB_FRAMING_CLOSE, false, "HEAD 200|DONE|", "hello"},
    {"close-delimited to chunked", LB_HTTP_RESPONSE, "HTTP/1.1 200 OK\r\n\r\nuntil close",
     LB_FRAMING_CHUNKED, false, "HEAD 200|EOF-DONE|", "b\r\nuntil close\r\n0\r\n\r\n", true},
    {"pipelined", LB_HTTP_REQUEST,
     "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n"
     "okGET /3 HTTP/1.1\r\nHost: a\r\n\r\n",
     LB_FRAMING_LENGTH, false, "HEAD 0|DONE|HEAD 0|DONE|HEAD 0|DONE|", "ok"},
    {"head response has no body", LB_HTTP_RESPONSE,
     "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
     LB_FRAMING_LENGTH, true, "HEAD 200|DONE|HEAD 200|DONE|", ""},
    {"304 with a content-length has no body", LB_HTTP_RESPONSE,
     "HTTP/1.1 304 Not Modified\r\nContent-Length: 1234\r\n\r\nHTTP/1.1 204 No\r\n"
     "Content-Length: 9\r\n\r\n",
     LB_FRAMING_LENGTH, false, "HEAD 304|DONE|HEAD 204|DONE|", ""},
    {"interim then final", LB_HTTP_RESPONSE,
     "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 304 NM\r\n\r\n",
     LB_FRAMING_LENGTH, false, "HEAD 100|DONE|HEAD 204|DONE|HEAD 304|DONE|", ""},
    {"upgrade stops", LB_HTTP_REQUEST,
     "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nFRAMES",
     LB_FRAMING_LENGTH, false, "HEAD 0|DONE|", ""},
    {"response cut short", LB_HTTP_RESPONSE, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
     LB_FRAMING_LENGTH, false, "HEAD 200|EOF-ERROR|", "abc"},
    {"chunked response cut short", LB_HTTP_RESPONSE,
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", LB_FRAMING_CHUNKED, false,
     "HEAD 200|EOF-ERROR|", "5\r\nhel"},
};

static void test_bodies(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(body_cases) / sizeof(body_cases[0]); i++) {
        const struct body_case *c = &body_cases[i];
        for (size_t step = 0; step <= (c->whole_only ? 0 : 1); step++) { /* whole, then bytewise */
            struct run r;
            run_parser(c->type, c->input, strlen(c->input), step, c->framing, c->skip_body, &r,
                       NULL);
            if (strcmp(r.log, c->events) != 0 || strcmp(r.body, c->body) != 0)
                fail_msg("%s (step %zu): events '%s' body '%s'", c->name, step, r.log, r.body);
        }
    }
}

#define LONG_EXT16 "aaaaaaaaaaaaaaaa"
#define LONG_EXT128 LONG_EXT16 LONG_EXT16 LONG_EXT16 LONG_EXT16 LONG_EXT16 LONG_EXT16 LONG_EXT16 LONG_EXT16
#define LONG_EXT LONG_EXT128 LONG_EXT128 LONG_EXT128 LONG_EXT128 LONG_EXT128 LONG_EXT128 LONG_EXT128 LONG_EXT128 LONG_EXT128

struct error_case {
    const char *name;
    enum lb_http_type type;
    const char *input;
    int status;
};

static const struct error_case error_cases[] = {
    {"garbage", LB_HTTP_REQUEST, "HELLO\r\n\r\n", 400},
    {"CL and TE", LB_HTTP_REQUEST,
     "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
    {"TE not chunked", LB_HTTP_REQUEST,
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400},
    {"TE on 1.0", LB_HTTP_REQUEST,
     "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
    {"bad content-length", LB_HTTP_REQUEST,
     "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n", 400},
    {"bad chunk size", LB_HTTP_REQUEST,
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400},
    {"space before colon", LB_HTTP_REQUEST, "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400},
    {"empty header name", LB_HTTP_REQUEST, "GET / HTTP/1.1\r\n: a\r\nHost: a\r\n\r\n", 400},
    {"bare CR in value", LB_HTTP_REQUEST, "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", 400},
    {"http/0.9", LB_HTTP_REQUEST, "GET /\r\n\r\n", 400},
    {"two spaces", LB_HTTP_REQUEST, "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
    {"http/2.0 line", LB_HTTP_REQUEST, "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 400},
    {"gzip, chunked", LB_HTTP_REQUEST,
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501},
    {"chunked, chunked", LB_HTTP_REQUEST,
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400},
    {"chunked, gzip", LB_HTTP_REQUEST,
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400},
    {"duplicate content-length", LB_HTTP_REQUEST,
     "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400},
    {"no host on 1.1", LB_HTTP_REQUEST, "GET / HTTP/1.1\r\nX: y\r\n\r\n", 400},
    {"two hosts", LB_HTTP_REQUEST, "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
    {"bad host", LB_HTTP_REQUEST, "GET / HTTP/1.1\r\nHost: a b/c\r\n\r\n", 400},
    {"bad host port", LB_HTTP_REQUEST, "GET / HTTP/1.1\r\nHost: a:80x\r\n\r\n", 400},
    {"absolute form without host on 1.1", LB_HTTP_REQUEST, "GET http://a/p HTTP/1.1\r\n\r\n", 400},
    {"empty transfer-encoding", LB_HTTP_REQUEST,
     "POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400},
    {"status 20", LB_HTTP_RESPONSE, "HTTP/1.1 20 OK\r\nContent-Length: 2\r\n\r\nok", 502},
    {"status double space", LB_HTTP_RESPONSE, "HTTP/1.1  200 OK\r\nContent-Length: 2\r\n\r\nok",
     502},
    {"control in reason", LB_HTTP_RESPONSE,
     "HTTP/1.1 200 O\x01K\r\nContent-Length: 2\r\n\r\nok", 502},
    {"absolute form disagrees", LB_HTTP_REQUEST,
     "GET http://a/p HTTP/1.1\r\nHost: b\r\n\r\n", 400},
    {"userinfo", LB_HTTP_REQUEST, "GET http://u@a/p HTTP/1.1\r\nHost: a\r\n\r\n", 400},
    {"asterisk not options", LB_HTTP_REQUEST, "GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400},
    {"long chunk extension", LB_HTTP_REQUEST,
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;x=" LONG_EXT "\r\n",
     400},
    {"response transfer-encoding gzip", LB_HTTP_RESPONSE,
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", 502},
    {"response CR CR", LB_HTTP_RESPONSE, "HTTP/1.1 200 OK\r\r\nContent-Length: 0\r\n\r\n",
     502},
    {"response obs-fold", LB_HTTP_RESPONSE,
     "HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n", 502},
    {"obs-fold", LB_HTTP_REQUEST, "GET / HTTP/1.1\r\nHost: a\r\n  folded\r\n\r\n", 400},
    {"uri too long", LB_HTTP_REQUEST,
     "GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n\r\n",
     414},
    {"bad status line", LB_HTTP_RESPONSE, "HTTP/1.1 2000 OK\r\n\r\n", 502},
    {"response CL and TE", LB_HTTP_RESPONSE,
     "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 502},
};

static void test_errors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(error_cases) / sizeof(error_cases[0]); i++) {
        const struct error_case *c = &error_cases[i];
        for (size_t step = 0; step <= 1; step++) {
            struct run r;
            run_parser(c->type, c->input, strlen(c->input), step, LB_FRAMING_LENGTH, false, &r,
                       NULL);
            if (r.error_status != c->status)
                fail_msg("%s (step %zu): got status %d, events '%s'", c->name, step,
                         r.error_status, r.log);
        }
    }
}

static void test_header_too_large(void **state)
{
    (void)state;
    char input[1600];
    int n = snprintf(input, sizeof(input), "GET / HTTP/1.1\r\nHost: a\r\nX-Big: ");
    memset(input + n, 'x', 1200);
    strcpy(input + n + 1200, "\r\n\r\n");
    struct run r;
    run_parser(LB_HTTP_REQUEST, input, strlen(input), 0, LB_FRAMING_LENGTH, false, &r, NULL);
    assert_int_equal(r.error_status, 431);
    run_parser(LB_HTTP_REQUEST, input, strlen(input), 7, LB_FRAMING_LENGTH, false, &r, NULL);
    assert_int_equal(r.error_status, 431);
}

static void test_body_limit(void **state)
{
    (void)state;
    const struct lb_http_limits small = {.max_header_size = 1024, .max_uri_size = 64,
                                         .max_body_size = 4};
    struct run r;
    const char *cl = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
    run_parser(LB_HTTP_REQUEST, cl, strlen(cl), 0, LB_FRAMING_LENGTH, false, &r, &small);
    assert_int_equal(r.error_status, 413);
    const char *chunked =
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\nabc\r\n";
    run_parser(LB_HTTP_REQUEST, chunked, strlen(chunked), 0, LB_FRAMING_CHUNKED, false, &r,
               &small);
    assert_int_equal(r.error_status, 413);
}

static void test_head_fields(void **state)
{
    (void)state;
    const char *req = "PUT /p?q=1 HTTP/1.0\r\nHost: example.com:8080\r\nX-Pad:   v w  \r\n"
                      "Connection: keep-alive\r\nContent-Length: 0\r\n\r\n";
    struct run r;
    for (size_t step = 0; step <= 1; step++) {
        run_parser(LB_HTTP_REQUEST, req, strlen(req), step, LB_FRAMING_LENGTH, false, &r, NULL);
        const struct lb_http_head *h = &r.last_head;
        const char *base = r.last_base;
        assert_int_equal(h->method, HTTP_PUT);
        assert_true(lb_slice_equals_ci(base, h->method_text, "PUT"));
        assert_true(lb_slice_equals_ci(base, h->target, "/p?q=1"));
        assert_int_equal(h->version_major, 1);
        assert_int_equal(h->version_minor, 0);
        assert_true(h->keep_alive);
        assert_true(h->has_content_length);
        assert_false(h->has_body);
        assert_int_equal(h->n_headers, 4);
        int pad = lb_http_find_header(h, base, "x-pad", 0);
        assert_int_equal(pad, 1);
        assert_true(lb_slice_equals_ci(base, h->headers[pad].value, "v w"));
        assert_int_equal(lb_http_find_header(h, base, "missing", 0), -1);
        assert_int_equal(h->size, strlen(req));
    }
}

static void test_value_tokens(void **state)
{
    (void)state;
    struct {
        const char *value, *token;
        bool found;
    } cases[] = {
        {"close", "close", true},       {"Keep-Alive, Upgrade", "upgrade", true},
        {" a ,b,  c ", "b", true},      {"closed", "close", false},
        {"", "close", false},           {"x-close", "close", false},
        {"a,,close,", "close", true},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_int_equal(
            lb_http_value_has_token(cases[i].value, strlen(cases[i].value), cases[i].token),
            cases[i].found);
}

/* A tiny output buffer: the body moves in pieces, never past the room. */
static void test_back_pressure(void **state)
{
    (void)state;
    struct lb_http_parser p;
    struct lb_buf in, out;
    lb_buf_init(&in, 4096);
    lb_buf_init(&out, 64);
    lb_http_parser_init(&p, LB_HTTP_RESPONSE, &limits);
    const char *head = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n";
    lb_buf_append(&in, head, strlen(head));
    char body[1000];
    memset(body, 'b', sizeof(body));
    lb_buf_append(&in, body, sizeof(body));
    assert_int_equal(lb_http_parse(&p, &in, &out), LB_HTTP_HEAD);
    p.out_framing = LB_FRAMING_LENGTH;
    size_t total = 0;
    enum lb_http_status st;
    int rounds = 0;
    while ((st = lb_http_parse(&p, &in, &out)) == LB_HTTP_AGAIN && rounds++ < 1000) {
        assert_true(lb_buf_len(&out) <= 64);
        total += lb_buf_len(&out);
        lb_buf_consume(&out, lb_buf_len(&out));
    }
    assert_int_equal(st, LB_HTTP_DONE);
    total += lb_buf_len(&out);
    assert_int_equal(total, 1000);
    lb_buf_free(&in);
    lb_buf_free(&out);
}

/* A refused upgrade: the connection goes on with HTTP. */
static void test_upgrade_refused_then_next(void **state)
{
    (void)state;
    struct lb_http_parser p;
    struct lb_buf in;
    lb_buf_init(&in, 1024);
    lb_http_parser_init(&p, LB_HTTP_REQUEST, &limits);
    const char *a = "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
    const char *b = "GET /next HTTP/1.1\r\nHost: y\r\n\r\n";
    lb_buf_append(&in, a, strlen(a));
    assert_int_equal(lb_http_parse(&p, &in, NULL), LB_HTTP_HEAD);
    assert_true(p.head.upgrade);
    assert_int_equal(lb_http_parse(&p, &in, NULL), LB_HTTP_DONE);
    lb_http_parser_next(&p);
    lb_buf_append(&in, b, strlen(b));
    assert_int_equal(lb_http_parse(&p, &in, NULL), LB_HTTP_HEAD);
    assert_true(lb_slice_equals_ci(in.data, p.head.target, "/next"));
    assert_false(p.head.upgrade);
    assert_int_equal(lb_http_parse(&p, &in, NULL), LB_HTTP_DONE);
    lb_buf_free(&in);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bodies),       cmocka_unit_test(test_errors),
        cmocka_unit_test(test_header_too_large), cmocka_unit_test(test_body_limit),
        cmocka_unit_test(test_head_fields),  cmocka_unit_test(test_value_tokens),
        cmocka_unit_test(test_back_pressure),
        cmocka_unit_test(test_upgrade_refused_then_next),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
