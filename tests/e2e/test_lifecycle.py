#!/usr/bin/env python3
"""lb's life: graceful stop on SIGTERM/SIGINT (in-flight requests finish,
idle connections close, new connections are refused, exit 0 within the drain
timeout), the drain timeout itself, and the connection limit."""
import os
import select
import signal
import socket
import time

import lbtest as T
from lbtest import check, check_eq


def refused(port):
    try:
        socket.create_connection((T.HOST, port), timeout=0.5).close()
        return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def test_sigterm_drains_in_flight_request():
    b = T.start_backends(1)[0]
    lb = T.start_lb([b], timeouts={"drain": "5s"})
    busy = T.Conn(lb.port, timeout=10)
    t0 = time.monotonic()
    busy.send(b"GET /delay?ms=1500 HTTP/1.1\r\nHost: x\r\n\r\n")
    T.wait_for(lambda: T.established_to(b.port) >= 1, 2, "lb to connect to the backend")
    time.sleep(0.2)
    idle = T.Conn(lb.port)   # a keep-alive connection between requests
    idle.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    check_eq(idle.read_response().status, 200, "idle connection's request")
    lb.signal(signal.SIGTERM)
    # new connections are refused soon after the signal
    T.wait_for(lambda: refused(lb.port), 2, "new connections to be refused")
    # the idle keep-alive connection is closed at once
    check(idle.is_closed(1.0), "idle keep-alive connection not closed on SIGTERM")
    # the request in flight still completes
    r = busy.read_response()
    took = time.monotonic() - t0
    check_eq(r.status, 200, "in-flight request")
    check_eq(r.body, b"delayed 1500 ms\n", "in-flight body")
    check(took >= 1.4, "answered after %.2fs" % took)
    check_eq(r.header("connection"), "close", "Connection on the drained answer")
    check(busy.is_closed(), "connection closed after its drained request")
    busy.close()
    # and lb exits 0 soon after, well within the drain timeout
    rc = lb.wait(4)
    lb.checked = True
    check(rc is not None, "lb still running 4s after its last request ended:\n%s" % lb.tail())
    check_eq(rc, 0, "exit status")
    check(time.monotonic() - t0 < 5.5, "lb exited %.2fs after the signal" % (time.monotonic() - t0))
    check(not lb.sanitizer_report(), "sanitizer report:\n%s" % lb.tail(60))


def test_sigterm_drains_pipelined_rest():
    # A request in flight ends the connection on drain: pipelined requests
    # behind it are not started.
    b = T.start_backends(1)[0]
    lb = T.start_lb([b], workers=1)
    c = T.Conn(lb.port)
    c.send(b"GET /delay?ms=800 HTTP/1.1\r\nHost: x\r\n\r\nGET /status?code=201 HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.3)
    lb.signal(signal.SIGTERM)
    r = c.read_response()
    check_eq(r.body, b"delayed 800 ms\n", "first answer")
    check_eq(r.header("connection"), "close", "Connection on the drained answer")
    check(c.is_closed(), "closed after the request in flight")
    c.close()
    check_eq(lb.wait(6), 0, "exit status")
    lb.checked = True


def test_drain_timeout():
    # A request longer than the drain timeout: lb exits when the timeout
    # ends (status 0), closing the connection.
    b = T.start_backends(1)[0]
    lb = T.start_lb([b], timeouts={"drain": "1s"})
    c = T.Conn(lb.port, timeout=10)
    c.send(b"GET /delay?ms=6000 HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.3)
    t0 = time.monotonic()
    lb.signal(signal.SIGTERM)
    rc = lb.wait(5)
    took = time.monotonic() - t0
    lb.checked = True
    check(rc is not None, "lb still running 5s after SIGTERM with drain: 1s")
    check_eq(rc, 0, "exit status")
    check(0.8 <= took < 3, "exited %.2fs after SIGTERM with drain: 1s" % took)
    check(c.is_closed(2), "the unfinished connection is closed")


def test_sigint():
    b = T.start_backends(1)[0]
    lb = T.start_lb([b])
    check_eq(T.request(lb.port, "GET", "/").status, 200, "a request")
    lb.signal(signal.SIGINT)
    check_eq(lb.wait(6), 0, "exit status on SIGINT")
    lb.checked = True
    check(not lb.sanitizer_report(), "sanitizer report:\n%s" % lb.tail(60))


def test_sigterm_idle_exits_fast():
    b = T.start_backends(1)[0]
    lb = T.start_lb([b], timeouts={"drain": "10s"})
    for _ in range(5):
        T.request(lb.port, "GET", "/")
    t0 = time.monotonic()
    lb.signal(signal.SIGTERM)
    rc = lb.wait(5)
    lb.checked = True
    check_eq(rc, 0, "exit status")
    check(time.monotonic() - t0 < 1.5, "an idle lb took %.2fs to stop" % (time.monotonic() - t0))


def test_max_connections():
    # With max_connections: 2, a third client waits in the kernel backlog
    # (its connect succeeds, nothing is answered) until one of the two closes.
    b = T.start_backends(1)[0]
    lb = T.start_lb([b], workers=1, limits={"max_connections": 2})
    time.sleep(0.2)   # the readiness probe's connection is gone
    first = [T.Conn(lb.port) for _ in range(2)]
    for c in first:
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        check_eq(c.read_response().status, 200, "within the limit")
    third = T.Conn(lb.port, timeout=5)
    third.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    check(not select.select([third.sock], [], [], 0.7)[0],
          "a connection over the limit was served")
    first[0].close()
    t0 = time.monotonic()
    r = third.read_response()
    check_eq(r.status, 200, "served once a slot is free")
    check(time.monotonic() - t0 < 2, "took %.2fs after a slot was freed" % (time.monotonic() - t0))
    # lb did not spin while connections waited in the backlog
    with open("/proc/%d/stat" % lb.pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    check(cpu < 2.0, "lb used %.2fs of CPU" % cpu)


if __name__ == "__main__":
    T.run([test_sigterm_drains_in_flight_request, test_sigterm_drains_pipelined_rest,
           test_drain_timeout, test_sigint, test_sigterm_idle_exits_fast, test_max_connections])
