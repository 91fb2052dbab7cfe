#!/usr/bin/env python3
"""Keep-alive on both sides and pipelining: client connections serve many
requests, upstream connections are pooled and reused (bounded, with an idle
timeout, never after an unclean exchange), pipelined requests are answered
in order however their bytes arrive."""
import socket
import time

import lbtest as T
from lbtest import check, check_eq


def count_accepts_server():
    return T.FakeServer(T.http_handler(T.ok_response(b"ok")))


def test_client_keepalive():
    b = T.start_backends(1)[0]
    lb = T.start_lb([b])
    c = T.Conn(lb.port)
    for i in range(20):
        c.send(b"GET /?i=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
        r = c.read_response()
        check_eq(r.status, 200, "request %d" % i)
        check(r.header("connection") != "close", "lb closes after request %d" % i)
    check(not c.is_closed(0.3), "connection still open")


def test_upstream_reuse_exact():
    # A Python server counts the TCP connections lb opens to it: with one
    # worker, 10 sequential requests on one client connection and 10 more on
    # fresh client connections all ride on one upstream connection.
    fake = count_accepts_server()
    lb = T.start_lb([fake], workers=1)
    c = T.Conn(lb.port)
    for _ in range(10):
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        check_eq(c.read_response().body, b"ok", "answer")
    c.close()
    for _ in range(10):
        check_eq(T.request(lb.port, "GET", "/").body, b"ok", "answer")
    check_eq(fake.requests, 20, "requests seen by the server")
    check_eq(fake.accepts, 1, "upstream connections for 20 sequential requests")


def test_upstream_reuse_lb_backend():
    # Same with lb-backend and two workers, measured from the outside: after
    # the requests, lb's idle pooled connections to the backend are still
    # ESTABLISHED, at most one per worker (sequential requests never need a
    # second one), far fewer than the requests made.
    b = T.start_backends(1)[0]
    lb = T.start_lb([b], workers=2)
    c = T.Conn(lb.port)
    for _ in range(10):
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        c.read_response()
    for _ in range(10):
        T.request(lb.port, "GET", "/")
    n = T.established_to(b.port)
    check(1 <= n <= 2, "established connections to the backend after 20 requests: %d" % n)


def test_pool_bounded():
    # keepalive: 2 → after 6 concurrent requests at most 2 idle connections stay.
    b = T.start_backends(1)[0]
    lb = T.start_lb([b], workers=1, keepalive=2)
    conns = [T.Conn(lb.port) for _ in range(6)]
    for c in conns:
        c.send(b"GET /delay?ms=300 HTTP/1.1\r\nHost: x\r\n\r\n")
    for c in conns:
        check_eq(c.read_response().status, 200, "delayed answer")
    time.sleep(0.1)
    check_eq(T.established_to(b.port), 2, "pooled connections with keepalive: 2")


def test_pool_disabled():
    fake = count_accepts_server()
    lb = T.start_lb([fake], workers=1, keepalive=0)
    for _ in range(5):
        check_eq(T.request(lb.port, "GET", "/").body, b"ok", "answer")
    check_eq(fake.accepts, 5, "keepalive: 0 opens a connection per request")


def test_pool_idle_timeout():
    b = T.start_backends(1)[0]
    lb = T.start_lb([b], workers=1, keepalive_timeout="1s")
    T.request(lb.port, "GET", "/")
    check_eq(T.established_to(b.port), 1, "pooled right after the request")
    T.wait_for(lambda: T.established_to(b.port) == 0, 4, "the idle pooled connection to close")


def test_no_reuse_after_unclean_exchange():
    # The client goes away in the middle of a response: that upstream
    # connection has unread bytes and must not be reused. The body (64 MiB,
    # to a client with a small receive buffer) is far more than the socket
    # buffers on the way can hold, so the exchange cannot have ended.
    def handler(s, fake):
        buf = bytearray()
        while True:
            req = T.recv_request(s, buf)
            if req is None:
                return
            fake.count()
            if req[0].startswith(b"GET /big "):
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (64 * T.MiB))
                block = b"x" * T.MiB
                for _ in range(64):
                    s.sendall(block)
            else:
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    fake = T.FakeServer(handler)
    lb = T.start_lb([fake], workers=1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    sock.settimeout(10)
    sock.connect((T.HOST, lb.port))
    sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
    check(sock.recv(100).startswith(b"HTTP/1.1 200"), "response head")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()   # reset, with most of the body not yet read
    time.sleep(0.3)
    r = T.request(lb.port, "GET", "/again")
    check_eq((r.status, r.body), (200, b"ok"), "the next exchange")
    check_eq(fake.accepts, 2, "upstream connections (the cut one is not reused)")


def test_stale_pooled_connection_after_backend_restart():
    # The backend restarts: lb's pooled connections to it are dead. The next
    # requests (idempotent or not) must still succeed.
    b = T.start_backends(1)[0]
    port = b.port
    lb = T.start_lb([b], workers=1)
    check_eq(T.request(lb.port, "GET", "/").status, 200, "before")
    rc, _ = b.stop()
    b.checked = True
    b2 = T.Backend("b1-again", port=port)
    for method, body in (("GET", None), ("POST", b"x"), ("GET", None)):
        r = T.request(lb.port, method, "/echo" if body else "/", body=body)
        check_eq(r.status, 200, "%s after the restart" % method)
        check_eq(r.header("x-backend-id"), "b1-again", "served by the new backend")


def test_client_idle_timeout():
    b = T.start_backends(1)[0]
    lb = T.start_lb([b], timeouts={"client_idle": "1s"})
    c = T.Conn(lb.port)
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    c.read_response()
    t0 = time.monotonic()
    check(c.is_closed(4), "idle connection not closed within 4s")
    took = time.monotonic() - t0
    check(0.7 <= took <= 3, "closed after %.2fs idle (client_idle: 1s)" % took)


def test_connection_close_request():
    b = T.start_backends(1)[0]
    lb = T.start_lb([b])
    c = T.Conn(lb.port)
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    r = c.read_response()
    check_eq(r.status, 200, "status")
    check_eq(r.header("connection"), "close", "Connection: close answered")
    check(c.is_closed(), "lb closes after Connection: close")


PIPELINE = (b"GET /status?code=201 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
            b"GET /bytes?n=10&chunked=1 HTTP/1.1\r\nHost: x\r\n\r\n")


def check_pipeline_answers(c):
    r1, r2, r3 = c.read_response(), c.read_response(), c.read_response()
    check_eq((r1.status, r1.body), (201, b"status 201\n"), "first answer")
    check(r2.status == 200 and r2.body.startswith(b"POST /echo HTTP/1.1\r\n")
          and r2.body.endswith(b"\r\n\r\nabc"), "second answer %r" % r2)
    check_eq((r3.status, r3.body), (200, T.pattern_bytes(10)), "third answer")
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    check_eq(c.read_response().status, 200, "the connection goes on")


def test_pipelined_one_write():
    bs = T.start_backends(3)
    lb = T.start_lb(bs)
    c = T.Conn(lb.port)
    c.send(PIPELINE)
    check_pipeline_answers(c)


def test_pipelined_byte_by_byte():
    bs = T.start_backends(3)
    lb = T.start_lb(bs)
    c = T.Conn(lb.port)
    c.send_bytewise(PIPELINE, pause=0.001)
    check_pipeline_answers(c)


def test_pipelined_order_with_slow_first():
    # Different servers answer at different speeds; the answers still come
    # in request order.
    bs = T.start_backends(3)
    lb = T.start_lb(bs, workers=1)
    c = T.Conn(lb.port)
    c.send(b"GET /delay?ms=400 HTTP/1.1\r\nHost: x\r\n\r\n"
           + b"".join(b"GET /status?code=%d HTTP/1.1\r\nHost: x\r\n\r\n" % (200 + i)
                      for i in range(1, 8)))
    check_eq(c.read_response().body, b"delayed 400 ms\n", "slow first answer")
    for i in range(1, 8):
        check_eq(c.read_response().status, 200 + i, "answer %d" % i)


def test_pipelined_many():
    # More pipelined exchanges than lb handles in one wake-up, with a fast
    # server: a stall shows as a response head without its body. 3 rounds
    # of 2000 requests, as the stall depends on timing.
    b = T.start_backends(1)[0]
    lb = T.start_lb([b], timeouts={"server": "3s"})
    n = 2000
    for rnd in range(3):
        c = T.Conn(lb.port, timeout=10)
        c.send(b"".join(b"GET /status?code=%d HTTP/1.1\r\nHost: x\r\n\r\n" % (200 + i % 7)
                        for i in range(n)))
        for i in range(n):
            try:
                r = c.read_response()
            except EOFError as e:
                raise T.TestFailure("round %d: answer %d of %d cut: %s" % (rnd, i, n, e))
            check_eq(r.status, 200 + i % 7, "round %d answer %d" % (rnd, i))
        c.close()
    check_eq(len(lb.wait_access(3 * n)), 3 * n, "log lines")


if __name__ == "__main__":
    T.run([test_client_keepalive, test_upstream_reuse_exact, test_upstream_reuse_lb_backend,
           test_pool_bounded, test_pool_disabled, test_pool_idle_timeout,
           test_no_reuse_after_unclean_exchange, test_stale_pooled_connection_after_backend_restart,
           test_client_idle_timeout, test_connection_close_request, test_pipelined_one_write,
           test_pipelined_byte_by_byte, test_pipelined_order_with_slow_first,
           test_pipelined_many])
