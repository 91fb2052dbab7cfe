/* libFuzzer target: response bytes → parse → validate → rewritten head and
 * re-framed body. Invariants: no crash or sanitizer report; a rewritten head
 * parses again as a valid response with the same status. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http1.h"
#include "http_rewrite.h"

static const struct lb_http_limits limits = {
    .max_header_size = 8192, .max_uri_size = 8192, .max_body_size = 0};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void reparse(const char *head, size_t len, unsigned status)
{
    struct lb_http_parser p;
    struct lb_buf in;
    if (lb_buf_init(&in, len + 1) < 0)
        return;
    lb_buf_append(&in, head, len);
    lb_http_parser_init(&p, LB_HTTP_RESPONSE, &limits);
    p.skip_body = true; /* only the head matters */
    if (lb_http_parse(&p, &in, NULL) != LB_HTTP_HEAD || p.head.status != status)
        abort();
    lb_buf_free(&in);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    /* The first byte picks the request the response answers. */
    static const char *const requests[] = {
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n", "HEAD / HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.0\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"};
    const char *request = requests[data[0] % 4];
    data++, size--;

    struct lb_http_parser req, p;
    struct lb_buf req_in, in, out, head;
    if (lb_buf_init(&req_in, 256) < 0 || lb_buf_init(&in, size + 1) < 0 ||
        lb_buf_init(&out, 4096) < 0 || lb_buf_init(&head, 16384) < 0)
        abort();
    lb_buf_append(&req_in, request, strlen(request));
    lb_http_parser_init(&req, LB_HTTP_REQUEST, &limits);
    if (lb_http_parse(&req, &req_in, NULL) != LB_HTTP_HEAD)
        abort();
    lb_buf_append(&in, data, size);
    lb_http_parser_init(&p, LB_HTTP_RESPONSE, &limits);
    p.skip_body = req.head.method == HTTP_HEAD;
    for (int messages = 0; messages < 8; messages++) {
        enum lb_http_status st = lb_http_parse(&p, &in, &out);
        if (st != LB_HTTP_HEAD)
            break;
        enum lb_body_framing framing = lb_response_framing(&p.head, &req.head);
        lb_buf_consume(&head, lb_buf_len(&head));
        if (lb_rewrite_response(&p.head, in.data, &req.head, framing, true, NULL, &head) == NULL &&
            p.head.n_headers <= LB_HTTP_MAX_HEADERS - 8) /* lb adds up to 8 */
            reparse(lb_buf_start(&head), lb_buf_len(&head), p.head.status);
        bool interim = p.head.status / 100 == 1 && p.head.status != 101;
        p.out_framing = interim ? LB_FRAMING_NONE : framing;
        do {
            lb_buf_consume(&out, lb_buf_len(&out));
            st = lb_http_parse(&p, &in, &out);
        } while (st == LB_HTTP_AGAIN && lb_buf_len(&in) > 0 && lb_buf_len(&out) > 0);
        if (st == LB_HTTP_AGAIN && lb_buf_len(&in) == 0)
            lb_http_finish(&p, &out);
        if (st != LB_HTTP_DONE || p.head.upgrade || !interim)
            break;
        bool skip = p.skip_body;
        lb_http_parser_next(&p);
        p.skip_body = skip;
    }
    lb_buf_free(&req_in);
    lb_buf_free(&in);
    lb_buf_free(&out);
    lb_buf_free(&head);
    return 0;
}
