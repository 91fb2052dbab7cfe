/* lb's own HTTP/1.1 rules, on top of llhttp: what llhttp 8.1 lets through
 * (bare CR, HTTP/0.9 and malformed request lines, obfuscated framing, bad
 * Host) is refused here, so lb is strict whatever llhttp it is built with.
 * Pure: no I/O. */
#ifndef LB_HTTP_VALIDATE_H
#define LB_HTTP_VALIDATE_H

#include "http1.h"

/* Checks a parsed request head whose bytes are base[0, h->size), and fills
 * h->host (the Host value, or the authority of an absolute-form target, which
 * is then rewritten to origin form). Returns NULL, or an error text with
 * *status set (400, or 501 for an unsupported transfer coding). */
const char *lb_validate_request(struct lb_http_head *h, const char *base, int *status);

/* Checks a parsed response head (bytes base[0, h->size)). Returns NULL, or an
 * error text (the response is then answered 502). */
const char *lb_validate_response(const struct lb_http_head *h, const char *base);

#endif
