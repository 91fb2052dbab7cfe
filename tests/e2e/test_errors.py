#!/usr/bin/env python3
"""The errors lb answers itself: 502 (no server reachable, a bad or missing
response), 503 (no backend for the request), 504 (server timeout), 400
(malformed request), 431, 414, 413 (limits), 408 (slow client). Each is a
small body, `Connection: close`, the connection closed after it, and an
access log line with the status."""
import select
import time

import lbtest as T
from lbtest import check, check_eq


def expect_error(lb, data, status, timeout=10, log_request=None):
    """Sends `data` on a fresh connection and checks lb's error answer.
    Returns (response, seconds it took)."""
    logged = len(lb.access_lines())
    c = T.Conn(lb.port, timeout=timeout)
    t0 = time.monotonic()
    try:
        c.send(data)
    except (BrokenPipeError, ConnectionResetError):
        pass  # lb may answer and close before reading everything
    r = c.read_response()
    took = time.monotonic() - t0
    check_eq(r.status, status, "status for %r" % data[:80])
    check(len(r.body) > 0 and str(status).encode() in r.body, "error body %r" % r.body)
    check_eq(r.header("content-length"), str(len(r.body)), "Content-Length of the error")
    check_eq(r.header("connection"), "close", "Connection header of a %d" % status)
    check(c.is_closed(), "connection left open after %d" % status)
    c.close()
    lines = lb.wait_access(logged + 1)[logged:]
    entries = [T.parse_access(l) for l in lines]
    check(any(e["status"] == str(status) for e in entries),
          "no access log line with %d: %r" % (status, lines))
    if log_request is not None:
        e = [e for e in entries if e["status"] == str(status)][-1]
        check_eq(e["request"], log_request, "request in the log line")
    return r, took


def test_502_no_server_reachable():
    dead = ["127.0.0.1:%d" % T.free_port() for _ in range(3)]
    lb = T.start_lb(dead)
    r, took = expect_error(lb, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n", 502, log_request="GET /x")
    check(took < 1.0, "502 took %.2fs with every server refusing" % took)
    # a POST is refused the same way (nothing was sent anywhere)
    expect_error(lb, b"POST /y HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nab", 502)


def test_503_no_route():
    bs = T.start_backends(2)
    lb = T.start_lb(backends={"a": {"servers": [bs[0]]}, "b": {"servers": [bs[1]]}},
                    routes=[{"host": "a.example", "backend": "a"},
                            {"host": "b.example", "path_prefix": "/b/", "backend": "b"}])
    check_eq(T.request(lb.port, "GET", "/", host="a.example").status, 200, "routed request")
    expect_error(lb, b"GET / HTTP/1.1\r\nHost: c.example\r\n\r\n", 503, log_request="GET /")
    expect_error(lb, b"GET /a/ HTTP/1.1\r\nHost: b.example\r\n\r\n", 503)


def test_504_server_timeout():
    b = T.start_backends(1)[0]
    lb = T.start_lb([b], timeouts={"server": "1s"})
    r, took = expect_error(lb, b"GET /delay?ms=5000 HTTP/1.1\r\nHost: a\r\n\r\n", 504)
    check(0.9 <= took < 3.5, "504 after %.2fs with timeouts.server 1s" % took)
    # a delay under the timeout is fine
    check_eq(T.request(lb.port, "GET", "/delay?ms=300").status, 200, "a 300 ms answer")


def test_error_log_names_server():
    # The access log line of a 504 or 502 from a server says which server.
    b = T.start_backends(1)[0]
    lb = T.start_lb([b], timeouts={"server": "1s"})
    expect_error(lb, b"GET /delay?ms=3000 HTTP/1.1\r\nHost: a\r\n\r\n", 504)
    e = T.parse_access(lb.wait_access(1)[-1])
    check_eq(e["server"], b.address, "server in the 504 log line")


def garbage_server(reply):
    def handler(s, fake):
        buf = bytearray()
        if T.recv_request(s, buf) is not None:
            fake.count()
            s.sendall(reply)
            time.sleep(0.2)
    return T.FakeServer(handler)


def test_502_garbage_response():
    fake = garbage_server(b"garbage\r\n\r\n")
    lb = T.start_lb([fake])
    expect_error(lb, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 502)
    check(fake.requests >= 1, "the server got the request")


def test_502_bad_responses():
    for reply in (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
                  b"HTTP/1.1 2000 Huge\r\n\r\n",
                  b"HTTP/1.1 200 OK\r\nBad Header Line\r\n\r\n",
                  b"HTTP/1.1 200 OK\r\nContent-Length: 5"):          # closes inside the head
        fake = garbage_server(reply)
        lb = T.start_lb([fake])
        try:
            expect_error(lb, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 502)
        except T.TestFailure as e:
            raise T.TestFailure("server reply %r: %s" % (reply, e))
        lb.expect_clean_exit()
        fake.stop()


def test_short_body_after_head():
    # The server closes in the middle of its body: the head already went to
    # the client, so lb can only cut the response short and close.
    fake = garbage_server(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
    lb = T.start_lb([fake])
    c = T.Conn(lb.port)
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    r = c.read_head()
    check_eq(r.status, 200, "head of a short response")
    check_eq(c.read_to_eof(), b"short", "what arrives of a short body")


def test_502_server_closes_without_answer():
    def handler(s, fake):
        T.recv_request(s, bytearray())
        fake.count()
    fake = T.FakeServer(handler)   # reads the request, closes
    lb = T.start_lb([fake])
    expect_error(lb, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx", 502)
    check_eq(fake.requests, 1, "a non-idempotent request is not retried")


def test_400_malformed():
    b = T.start_backends(1)[0]
    lb = T.start_lb([b])
    for data in (b"GARBAGE\r\n\r\n",
                 b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n",
                 b"GET / HTTP/1.1\r\n\r\n",                                   # no Host
                 b"GET / HTTP/9.1\r\nHost: a\r\n\r\n",
                 b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
                 b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                 b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                 b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
                 b"GET / HTTP/1.1\nHost: a\n\n"):                             # bare LF
        expect_error(lb, data, 400)
    # after good pipelined requests: those first, then the 400, then close
    c = T.Conn(lb.port)
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nBAD\x01 / HTTP/1.1\r\n\r\n")
    check_eq(c.read_response().status, 200, "good request first")
    r = c.read_response()
    check_eq(r.status, 400, "then the bad one")
    check(c.is_closed(), "then close")


def test_431_header_too_large():
    b = T.start_backends(1)[0]
    lb = T.start_lb([b], limits={"max_header_size": "4k"})
    check_eq(T.request(lb.port, "GET", "/", headers=[("X-Big", "a" * 3000)]).status, 200,
             "a 3k header under the 4k limit")
    expect_error(lb, b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n", 431)
    # many small headers add up too
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 40) for i in range(200))
    expect_error(lb, b"GET / HTTP/1.1\r\nHost: a\r\n" + many + b"\r\n", 431)


def test_414_uri_too_long():
    b = T.start_backends(1)[0]
    lb = T.start_lb([b], limits={"max_uri_size": "1k"})
    check_eq(T.request(lb.port, "GET", "/?" + "a" * 900).status, 200, "a 900-byte URI")
    expect_error(lb, b"GET /?" + b"a" * 2048 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414)


def test_413_body_too_large():
    b = T.start_backends(1)[0]
    lb = T.start_lb([b], limits={"max_body_size": "1k"})
    check_eq(T.request(lb.port, "POST", "/sink", body=b"x" * 1024).body, b"received 1024\n",
             "a body of exactly 1k")
    expect_error(lb, b"POST /sink HTTP/1.1\r\nHost: a\r\nContent-Length: 2048\r\n\r\n"
                 + b"x" * 2048, 413)
    body = b"x" * 2048
    expect_error(lb, b"POST /sink HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"400\r\n" + body[:1024] + b"\r\n400\r\n" + body[1024:] + b"\r\n0\r\n\r\n", 413)


def test_408_slow_head():
    b = T.start_backends(1)[0]
    lb = T.start_lb([b], timeouts={"client_header": "1s"})
    r, took = expect_error(lb, b"GET / HTTP/1.1\r\nHost: a\r\n", 408)
    check(0.8 <= took < 3, "408 after %.2fs with client_header 1s" % took)
    # a slowloris that keeps trickling header bytes does not extend the deadline
    c = T.Conn(lb.port, timeout=6)
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n")
    t0 = time.monotonic()
    try:
        for i in range(60):
            if select.select([c.sock], [], [], 0.1)[0]:
                break   # lb answered
            c.send(b"X-%d: y\r\n" % i)
    except (BrokenPipeError, ConnectionResetError):
        pass
    r = c.read_response()
    took = time.monotonic() - t0
    check_eq(r.status, 408, "slowloris")
    check(took < 3, "slowloris answered after %.2fs" % took)


def test_408_slow_body():
    # The head arrives, the body stops: lb answers 408 and gives up the server.
    b = T.start_backends(1)[0]
    lb = T.start_lb([b], timeouts={"client_header": "1s", "server": "3s"})
    r, took = expect_error(lb, b"POST /sink HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n"
                           b"0123456789", 408)
    check(took < 2.5, "408 after %.2fs" % took)


def test_errors_after_a_keepalive_request():
    # The same errors on the second request of a keep-alive connection: the
    # first exchange went well, the second still gets its error answer.
    b = T.start_backends(1)[0]
    lb = T.start_lb([b], timeouts={"client_header": "1s"},
                    limits={"max_header_size": "4k", "max_uri_size": "1k"})
    cases = [(b"BAD\x01 / HTTP/1.1\r\n\r\n", 400),
             (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 5000 + b"\r\n\r\n", 431),
             (b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
             (b"GET / HTTP/1.1\r\nHost: a\r\n", 408)]
    problems = []
    for data, status in cases:
        c = T.Conn(lb.port)
        c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        check_eq(c.read_response().status, 200, "first request")
        c.send(data)
        try:
            r = c.read_response()
        except EOFError:
            problems.append("%d: connection closed without an answer" % status)
            continue
        if r.status != status or r.header("connection") != "close" or not c.is_closed():
            problems.append("%d: got %r" % (status, r))
        c.close()
    check(not problems, "second request on a keep-alive connection: " + "; ".join(problems))


def test_idle_connection_without_request():
    # A client that connects and sends nothing is closed (408 or a silent
    # close) within client_header, not held forever.
    b = T.start_backends(1)[0]
    lb = T.start_lb([b], timeouts={"client_header": "1s"})
    c = T.Conn(lb.port, timeout=5)
    t0 = time.monotonic()
    try:
        data = c.read_to_eof()
    except T.TestFailure:
        raise T.TestFailure("an idle fresh connection still open after 5s")
    check(time.monotonic() - t0 < 4, "closed after %.2fs" % (time.monotonic() - t0))
    check(data == b"" or data.startswith(b"HTTP/1.1 408"), "got %r" % data[:60])


if __name__ == "__main__":
    T.run([test_502_no_server_reachable, test_503_no_route, test_504_server_timeout,
           test_error_log_names_server, test_502_garbage_response, test_502_bad_responses, test_short_body_after_head,
           test_502_server_closes_without_answer, test_400_malformed, test_431_header_too_large,
           test_414_uri_too_long, test_413_body_too_large, test_408_slow_head,
           test_408_slow_body, test_errors_after_a_keepalive_request,
           test_idle_connection_without_request])
