/* lb/http_rewrite.c: the heads lb sends on, byte for byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "http_rewrite.h"

static const struct lb_http_limits limits = {
    .max_header_size = 4096, .max_uri_size = 1024, .max_body_size = 0};

/* Parses one head into `in` and returns the parser (head valid while `in` lives). */
static void parse_head(enum lb_http_type type, const char *text, struct lb_http_parser *p,
                       struct lb_buf *in, bool skip_body)
{
    assert_int_equal(lb_buf_init(in, 8192), 0);
    lb_http_parser_init(p, type, &limits);
    p->skip_body = skip_body;
    assert_int_equal(lb_buf_append(in, text, strlen(text)), 0);
    assert_int_equal(lb_http_parse(p, in, NULL), LB_HTTP_HEAD);
}

struct request_case {
    const char *name;
    const char *in;
    bool tunnel;
    const char *out;
};

static const struct request_case request_cases[] = {
    {"plain get", "GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n", false,
     "GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nX-Forwarded-For: 10.0.0.9\r\n"
     "X-Forwarded-Proto: http\r\nX-Forwarded-Host: example.com\r\nVia: 1.1 lb\r\n\r\n"},
    {"hop-by-hop removed", "GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Secret\r\n"
     "Keep-Alive: 300\r\nProxy-Connection: x\r\nTE: trailers\r\nX-Secret: s\r\nUpgrade: h2c\r\n"
     "Trailer: X\r\nX-Kept: k\r\n\r\n", false,
     "GET / HTTP/1.1\r\nHost: h\r\nX-Kept: k\r\nTE: trailers\r\nX-Forwarded-For: 10.0.0.9\r\n"
     "X-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\nVia: 1.1 lb\r\nConnection: TE\r\n\r\n"},
    {"TE other than trailers dropped", "GET / HTTP/1.1\r\nHost: h\r\nTE: gzip\r\n\r\n", false,
     "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.9\r\n"
     "X-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\nVia: 1.1 lb\r\n\r\n"},
    {"nomination cannot remove lb's headers",
     "GET / HTTP/1.1\r\nHost: h\r\nConnection: Host, X-Forwarded-For, Via\r\n"
     "X-Forwarded-For: 1.1.1.1\r\n\r\n", false,
     "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.9\r\n"
     "X-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\nVia: 1.1 lb\r\n\r\n"},
    {"underscored names dropped", "GET / HTTP/1.1\r\nHost: h\r\nX_Forwarded_For: 6.6.6.6\r\n"
     "My_Header: 1\r\n\r\n", false,
     "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.9\r\n"
     "X-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\nVia: 1.1 lb\r\n\r\n"},
    /* kept headers are copied in runs of canonical "name: value\r\n" lines;
     * other spellings, and lines between dropped or rewritten ones, end a run */
    {"runs and odd spellings", "GET / HTTP/1.1\r\nX-A: 1\r\nX-B: 2\r\nKeep-Alive: 9\r\n"
     "X-C:3\r\nX-D:  4\r\nX-E: 5 \r\nX-F:\r\nX-G: 7\r\nHost: h\r\nX-H: 8\r\nX-I: 9\r\n\r\n",
     false,
     "GET / HTTP/1.1\r\nX-A: 1\r\nX-B: 2\r\nX-C: 3\r\nX-D: 4\r\nX-E: 5\r\nX-F: \r\nX-G: 7\r\n"
     "Host: h\r\nX-H: 8\r\nX-I: 9\r\nX-Forwarded-For: 10.0.0.9\r\n"
     "X-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\nVia: 1.1 lb\r\n\r\n"},
    {"absolute form", "GET http://Example.com:81/p?q HTTP/1.1\r\nHost: example.com:81\r\n\r\n",
     false,
     "GET /p?q HTTP/1.1\r\nHost: Example.com:81\r\nX-Forwarded-For: 10.0.0.9\r\n"
     "X-Forwarded-Proto: http\r\nX-Forwarded-Host: Example.com:81\r\nVia: 1.1 lb\r\n\r\n"},
    {"absolute form without path", "GET http://a.b HTTP/1.0\r\n\r\n", false,
     "GET / HTTP/1.1\r\nHost: a.b\r\nX-Forwarded-For: 10.0.0.9\r\n"
     "X-Forwarded-Proto: http\r\nX-Forwarded-Host: a.b\r\nVia: 1.1 lb\r\n\r\n"},
    {"xff appended and merged", "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.2.3.4\r\n"
     "x-forwarded-for: 5.6.7.8, 9.9.9.9\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\n\r\n",
     false,
     "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.2.3.4, 5.6.7.8, 9.9.9.9, 10.0.0.9\r\n"
     "X-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\nVia: 1.1 lb\r\n\r\n"},
    {"content-length rewritten", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0005\r\n\r\n",
     false,
     "POST / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\n"
     "X-Forwarded-Host: h\r\nVia: 1.1 lb\r\nContent-Length: 5\r\n\r\n"},
    {"chunked", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", false,
     "POST / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\n"
     "X-Forwarded-Host: h\r\nVia: 1.1 lb\r\nTransfer-Encoding: chunked\r\n\r\n"},
    {"http/1.0 gets a host and speaks 1.1", "GET / HTTP/1.0\r\n\r\n", false,
     "GET / HTTP/1.1\r\nHost: lb.local\r\nX-Forwarded-For: 10.0.0.9\r\n"
     "X-Forwarded-Proto: http\r\nVia: 1.1 lb\r\n\r\n"},
    {"websocket tunnel keeps upgrade",
     "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
     "Sec-WebSocket-Key: k\r\n\r\n",
     true,
     "GET /ws HTTP/1.1\r\nHost: h\r\nSec-WebSocket-Key: k\r\nX-Forwarded-For: 10.0.0.9\r\n"
     "X-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\nVia: 1.1 lb\r\nUpgrade: websocket\r\n"
     "Connection: upgrade\r\n\r\n"},
};

static void test_requests(void **state)
{
    (void)state;
    const struct lb_forward_info info = {
        .client_addr = "10.0.0.9", .proto = "http", .default_host = "lb.local"};
    for (size_t i = 0; i < sizeof(request_cases) / sizeof(request_cases[0]); i++) {
        const struct request_case *c = &request_cases[i];
        struct lb_http_parser p;
        struct lb_buf in, out;
        parse_head(LB_HTTP_REQUEST, c->in, &p, &in, false);
        lb_buf_init(&out, 8192);
        const char *err = lb_rewrite_request(&p.head, in.data, &info, lb_request_framing(&p.head),
                                             c->tunnel, &out);
        assert_null(err);
        if (lb_buf_len(&out) != strlen(c->out) || memcmp(lb_buf_start(&out), c->out, strlen(c->out)))
            fail_msg("%s: got\n%.*s", c->name, (int)lb_buf_len(&out), lb_buf_start(&out));
        lb_buf_free(&in);
        lb_buf_free(&out);
    }
}

static void test_xff_replace_and_h2c(void **state)
{
    (void)state;
    const struct lb_forward_info info = {.client_addr = "10.0.0.9", .proto = "https",
                                         .xff_replace = true, .allow_underscores = true};
    struct lb_http_parser p;
    struct lb_buf in, out;
    parse_head(LB_HTTP_REQUEST,
               "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 6.6.6.6\r\nA_B: 1\r\n"
               "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: x\r\n\r\n",
               &p, &in, false);
    assert_false(lb_request_wants_tunnel(&p.head, in.data));
    lb_buf_init(&out, 8192);
    assert_null(lb_rewrite_request(&p.head, in.data, &info, LB_FRAMING_NONE, false, &out));
    const char *want = "GET / HTTP/1.1\r\nHost: h\r\nA_B: 1\r\nX-Forwarded-For: 10.0.0.9\r\n"
                       "X-Forwarded-Proto: https\r\nX-Forwarded-Host: h\r\nVia: 1.1 lb\r\n\r\n";
    if (lb_buf_len(&out) != strlen(want) || memcmp(lb_buf_start(&out), want, strlen(want)))
        fail_msg("got\n%.*s", (int)lb_buf_len(&out), lb_buf_start(&out));
    lb_buf_free(&in);
    lb_buf_free(&out);
}

struct response_case {
    const char *name;
    const char *request;
    const char *in;
    bool keep_alive;
    const char *out;
};

static const struct response_case response_cases[] = {
    {"length kept", "GET / HTTP/1.1\r\nHost: h\r\n\r\n",
     "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\nKeep-Alive: t=5\r\n\r\n",
     true, "HTTP/1.1 200 OK\r\nVia: 1.1 lb\r\nContent-Length: 3\r\n\r\n"},
    {"chunked to 1.1 client", "GET / HTTP/1.1\r\nHost: h\r\n\r\n",
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n", true,
     "HTTP/1.1 200 OK\r\nX-A: 1\r\nVia: 1.1 lb\r\nTransfer-Encoding: chunked\r\n\r\n"},
    {"chunked to 1.0 client closes", "GET / HTTP/1.0\r\n\r\n",
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false,
     "HTTP/1.1 200 OK\r\nVia: 1.1 lb\r\nConnection: close\r\n\r\n"},
    {"1.0 keep-alive client told so", "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
     "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", true,
     "HTTP/1.1 200 OK\r\nVia: 1.1 lb\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n"},
    {"close-delimited becomes chunked", "GET / HTTP/1.1\r\nHost: h\r\n\r\n",
     "HTTP/1.0 200 OK\r\nServer: s\r\n\r\n", true,
     "HTTP/1.1 200 OK\r\nServer: s\r\nVia: 1.1 lb\r\nTransfer-Encoding: chunked\r\n\r\n"},
    {"304 keeps its length", "GET / HTTP/1.1\r\nHost: h\r\n\r\n",
     "HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\nETag: \"x\"\r\n\r\n", true,
     "HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\nETag: \"x\"\r\nVia: 1.1 lb\r\n\r\n"},
    {"nominated header removed", "GET / HTTP/1.1\r\nHost: h\r\n\r\n",
     "HTTP/1.1 204 No Content\r\nConnection: X-Hop\r\nX-Hop: 1\r\nX-End: 2\r\n\r\n", false,
     "HTTP/1.1 204 No Content\r\nX-End: 2\r\nVia: 1.1 lb\r\nConnection: close\r\n\r\n"},
    {"101 switching", "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
     "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
     "Sec-WebSocket-Accept: a\r\n\r\n",
     true,
     "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: a\r\nVia: 1.1 lb\r\n"
     "Upgrade: websocket\r\nConnection: upgrade\r\n\r\n"},
    {"100 continue", "POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
     "HTTP/1.1 100 Continue\r\n\r\n", true, "HTTP/1.1 100 Continue\r\nVia: 1.1 lb\r\n\r\n"},
};

static void test_responses(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(response_cases) / sizeof(response_cases[0]); i++) {
        const struct response_case *c = &response_cases[i];
        struct lb_http_parser req, resp;
        struct lb_buf req_in, in, out;
        parse_head(LB_HTTP_REQUEST, c->request, &req, &req_in, false);
        parse_head(LB_HTTP_RESPONSE, c->in, &resp, &in, false);
        lb_buf_init(&out, 8192);
        enum lb_body_framing framing = lb_response_framing(&resp.head, &req.head);
        assert_null(lb_rewrite_response(&resp.head, in.data, &req.head, framing, c->keep_alive, NULL,
                                        &out));
        if (lb_buf_len(&out) != strlen(c->out) || memcmp(lb_buf_start(&out), c->out, strlen(c->out)))
            fail_msg("%s: got\n%.*s", c->name, (int)lb_buf_len(&out), lb_buf_start(&out));
        lb_buf_free(&req_in);
        lb_buf_free(&in);
        lb_buf_free(&out);
    }
}

static void test_framing(void **state)
{
    (void)state;
    struct {
        const char *request, *response;
        enum lb_body_framing framing;
    } cases[] = {
        {"GET / HTTP/1.1\r\nHost: h\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
         LB_FRAMING_LENGTH},
        {"GET / HTTP/1.1\r\nHost: h\r\n\r\n", "HTTP/1.1 200 OK\r\n\r\n", LB_FRAMING_CHUNKED},
        {"GET / HTTP/1.0\r\n\r\n", "HTTP/1.1 200 OK\r\n\r\n", LB_FRAMING_CLOSE},
        {"GET / HTTP/1.0\r\n\r\n", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
         LB_FRAMING_CLOSE},
        {"GET / HTTP/1.1\r\nHost: h\r\n\r\n", "HTTP/1.1 204 No Content\r\n\r\n", LB_FRAMING_NONE},
        {"GET / HTTP/1.1\r\nHost: h\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
         LB_FRAMING_NONE},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct lb_http_parser req, resp;
        struct lb_buf a, b;
        parse_head(LB_HTTP_REQUEST, cases[i].request, &req, &a, false);
        parse_head(LB_HTTP_RESPONSE, cases[i].response, &resp, &b, false);
        if (lb_response_framing(&resp.head, &req.head) != cases[i].framing)
            fail_msg("case %zu: framing %d", i, lb_response_framing(&resp.head, &req.head));
        lb_buf_free(&a);
        lb_buf_free(&b);
    }
}

static void test_head_too_large_leaves_out_unchanged(void **state)
{
    (void)state;
    const struct lb_forward_info info = {.client_addr = "1.1.1.1", .proto = "http"};
    struct lb_http_parser p;
    struct lb_buf in, out;
    parse_head(LB_HTTP_REQUEST, "GET /long/path HTTP/1.1\r\nHost: h\r\n\r\n", &p, &in, false);
    lb_buf_init(&out, 40);
    lb_buf_append(&out, "keep", 4);
    assert_non_null(lb_rewrite_request(&p.head, in.data, &info, LB_FRAMING_NONE, false, &out));
    assert_int_equal(lb_buf_len(&out), 4);
    assert_memory_equal(lb_buf_start(&out), "keep", 4);
    lb_buf_free(&in);
    lb_buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_requests),
        cmocka_unit_test(test_xff_replace_and_h2c),
        cmocka_unit_test(test_responses),
        cmocka_unit_test(test_framing),
        cmocka_unit_test(test_head_too_large_leaves_out_unchanged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
