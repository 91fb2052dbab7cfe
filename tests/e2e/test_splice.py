#!/usr/bin/env python3
"""Large response bodies go server → pipe → client with splice(2) (see
lb/splice.h): the bytes are exact and in order; a server that slows down
below lb's raised low-water mark still has its bytes forwarded at once; the
server connection goes back to the pool afterwards and small responses on it
are not held; a server or a client that goes away mid-body costs no
descriptor; pipelined requests and HEAD behave as without splicing. And the
three defects a review found: small server writes that fill the pipe's slots
(not its bytes) while the client pauses must not make lb spin; bytes a broken
server sends past the body must not become the next request's response; bytes
below a raised mark must come while the request body is still open."""
import os
import socket
import threading
import time

import lbtest as T
from lbtest import check, check_eq

BIG = 4 * T.MiB  # well over LB_SPLICE_MIN_BODY (256 KiB)


def read_body_exact(c, n):
    """n body bytes from c (buffered bytes first)."""
    return c.read_exact(n)


def test_spliced_body_exact_and_logged():
    b = T.start_backends(1)[0]
    lb = T.start_lb([b], workers=1)
    c = T.Conn(lb.port, timeout=20)
    for n in (BIG, 256 * 1024, 256 * 1024 + 1, 3 * T.MiB + 12345):
        c.send(b"GET /bytes?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % n)
        r = c.read_head()
        check_eq(r.status, 200, "status for n=%d" % n)
        check_eq(r.header("content-length"), str(n), "Content-Length")
        check(read_body_exact(c, n) == T.pattern_bytes(n), "body of %d bytes differs" % n)
    lines = lb.wait_access(4)
    check_eq(T.parse_access(lines[-1])["bytes"], str(3 * T.MiB + 12345), "logged bytes")


def test_stalling_server_bytes_not_held():
    # The server sends 8 MiB at once to a client that waits before reading:
    # lb's pipe fills, so lb raises the server socket's low-water mark to a
    # whole pipe. The end of the burst is then below the mark, and so are
    # the 1000-byte pieces that follow, each sent only after the client got
    # the one before. lb must notice the stall and forward them.
    burst = 8 * T.MiB
    pieces = 4
    got_piece = [threading.Event() for _ in range(pieces)]
    total = burst + 1000 * pieces

    def handler(s, fake):
        if T.recv_request(s, bytearray()) is None:
            return
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        s.sendall(T.pattern_bytes(burst))
        for i in range(pieces):
            s.sendall(T.pattern_bytes(1000, burst + 1000 * i))
            if not got_piece[i].wait(5):
                return
        time.sleep(0.5)

    fake = T.FakeServer(handler)
    lb = T.start_lb([fake], workers=1, timeouts={"server": "30s"})
    c = T.Conn(lb.port, timeout=3, rcvbuf=32 * 1024)
    c.send(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.5)
    check_eq(c.read_head().status, 200, "status")
    got = 0
    try:
        while got < burst:
            data = c.read_exact(min(T.MiB, burst - got))
            check(data == T.pattern_bytes(len(data), got), "burst differs near byte %d" % got)
            got += len(data)
        for i in range(pieces):
            data = c.read_exact(1000)
            check(data == T.pattern_bytes(1000, burst + 1000 * i), "piece %d differs" % i)
            got_piece[i].set()
            got += len(data)
    except (socket.timeout, TimeoutError):
        raise T.TestFailure("bytes held by lb for 3 s after %d of %d" % (got, total))


def test_pool_reused_after_spliced_body():
    # After a spliced body the server connection is pooled with its
    # low-water mark back at 1: a small response on it comes at once (with
    # a mark left high it would wait for timeouts.server: 504).
    b = T.start_backends(1)[0]
    lb = T.start_lb([b], workers=1, timeouts={"server": "3s"})
    c = T.Conn(lb.port, timeout=20)
    for round_ in range(3):
        c.send(b"GET /bytes?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % BIG)
        check_eq(c.read_head().status, 200, "big response status")
        read_body_exact(c, BIG)
        for i in range(20):
            c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            r = c.read_response()
            check_eq(r.status, 200, "small response %d after big one %d" % (i, round_))
    check_eq(T.established_to(b.port), 1, "server connections (one pooled, reused)")


def test_pipelined_after_spliced_body():
    b = T.start_backends(1)[0]
    lb = T.start_lb([b], workers=1)
    c = T.Conn(lb.port, timeout=20)
    c.send(b"GET /bytes?n=%d HTTP/1.1\r\nHost: x\r\n\r\n"
           b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n"
           b"GET /bytes?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % (BIG, BIG + 7))
    r = c.read_head()
    check_eq(r.status, 200, "first status")
    check(read_body_exact(c, BIG) == T.pattern_bytes(BIG), "first body differs")
    r = c.read_response()
    check_eq(r.status, 200, "second status")
    check(b"GET /echo" in r.body, "second response is /echo's: %r" % r.body[:80])
    r = c.read_head()
    check_eq(r.status, 200, "third status")
    check(read_body_exact(c, BIG + 7) == T.pattern_bytes(BIG + 7), "third body differs")


def test_head_with_large_length():
    b = T.start_backends(1)[0]
    lb = T.start_lb([b], workers=1)
    c = T.Conn(lb.port)
    c.send(b"HEAD /bytes?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % BIG)
    r = c.read_response(method="HEAD")
    check_eq(r.status, 200, "status")
    check_eq(r.header("content-length"), str(BIG), "Content-Length")
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    check_eq(c.read_response().status, 200, "next request on the connection")


def test_server_gone_mid_body():
    # The server closes after 6 MiB of 16 while the client is not reading:
    # the client still gets every byte that came (some waited in lb's pipe),
    # then the connection closes (a short body, never a made-up end).
    def handler(s, fake):
        buf = bytearray()
        req = T.recv_request(s, buf)
        if req is None:
            return
        if req[0].startswith(b"GET /small"):
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            return
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (16 * T.MiB))
        s.sendall(T.pattern_bytes(6 * T.MiB))

    fake = T.FakeServer(handler)
    lb = T.start_lb([fake], workers=1)
    base = T.fd_count(lb.pid)
    c = T.Conn(lb.port, timeout=10, rcvbuf=32 * 1024)
    c.send(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(1)  # the server is gone before the client reads
    check_eq(c.read_head().status, 200, "status")
    body = c.read_to_eof()
    check(body == T.pattern_bytes(len(body)), "the bytes that came differ")
    check(len(body) == 6 * T.MiB, "got %d bytes; the server sent 6 MiB then closed" % len(body))
    check_eq(T.request(lb.port, "GET", "/small").status, 200, "lb still answers")
    # (+2: the emptied pipe is kept for the next body)
    T.wait_for(lambda: T.fd_count(lb.pid) <= base + 2, 5,
               "lb's descriptors back to %d (+2) (have %d)" % (base, T.fd_count(lb.pid)))


def test_clients_gone_mid_body_leak_nothing():
    # 30 clients each take 1 MiB of a 64 MiB body and vanish: lb closes the
    # pipes that still held bytes, and its descriptors come back to where
    # they were.
    b = T.start_backends(1)[0]
    lb = T.start_lb([b], workers=1)
    T.request(lb.port, "GET", "/")
    base = T.fd_count(lb.pid)
    for i in range(30):
        c = T.Conn(lb.port, timeout=10)
        c.send(b"GET /bytes?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % (64 * T.MiB))
        check_eq(c.read_head().status, 200, "status %d" % i)
        c.read_exact(T.MiB)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c.close()  # a reset, with bytes unread
    check_eq(T.request(lb.port, "GET", "/").status, 200, "lb still answers")
    T.wait_for(lambda: T.fd_count(lb.pid) <= base + 2, 10,
               "lb's descriptors back to %d (+2) (have %d)" % (base, T.fd_count(lb.pid)))
    lb.expect_clean_exit()


def cpu_seconds(pid):
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def test_small_pieces_to_a_paused_client_no_busy_loop():
    # A server writing 1000-byte pieces fills the pipe's slots (one per
    # piece) long before its byte capacity. With the client not reading, lb
    # must wait for the client, not poll the readable server socket.
    sent = {"n": 0}
    done = threading.Event()
    total = 64 * T.MiB

    def handler(s, fake):
        if T.recv_request(s, bytearray()) is None:
            return
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        s.settimeout(0.5)
        t0 = time.monotonic()
        while sent["n"] < 8 * T.MiB and time.monotonic() - t0 < 10:
            try:
                s.send(T.pattern_bytes(1000, sent["n"]))
            except (socket.timeout, TimeoutError):
                break  # lb stopped taking: back-pressure
            sent["n"] += 1000
            if sent["n"] % 64000 == 0:
                time.sleep(0.001)  # separate packets, separate slots
        done.set()
        time.sleep(3)

    fake = T.FakeServer(handler)
    lb = T.start_lb([fake], workers=1, timeouts={"server": "30s"})
    c = T.Conn(lb.port, timeout=10, rcvbuf=32 * 1024)
    c.send(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
    check(done.wait(20), "the server never finished sending")
    time.sleep(0.3)
    before = cpu_seconds(lb.pid)
    time.sleep(2)
    spent = cpu_seconds(lb.pid) - before
    check(spent < 0.3, "lb spent %.2f s of CPU in 2 s waiting for a paused client" % spent)
    check_eq(c.read_head().status, 200, "status")
    body = c.read_exact(sent["n"])
    check(body == T.pattern_bytes(sent["n"]), "the bytes the server sent differ")
    c.close()  # the rest of the 64 MiB never comes: no drain to wait for


def test_bytes_past_the_body_never_reach_the_next_request():
    # A broken server sends a second "response" right after a spliced body.
    # The connection must not be pooled: the pipelined request gets its own.
    evil = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL"

    def handler(s, fake):
        buf = bytearray()
        while True:
            req = T.recv_request(s, buf)
            if req is None:
                return
            if req[0].startswith(b"GET /big"):
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG +
                          T.pattern_bytes(BIG) + evil)
            else:
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    fake = T.FakeServer(handler)
    lb = T.start_lb([fake], workers=1)
    c = T.Conn(lb.port, timeout=10)
    c.send(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\nGET /small HTTP/1.1\r\nHost: x\r\n\r\n")
    check_eq(c.read_head().status, 200, "/big status")
    check(c.read_exact(BIG) == T.pattern_bytes(BIG), "/big body differs")
    r = c.read_response()
    check_eq(r.status, 200, "/small status")
    check_eq(r.body, b"ok", "/small's body (not the bytes past /big's)")


def test_bytes_below_the_mark_while_request_body_open():
    # The client sent a head with Content-Length: 10 but no body yet; the
    # server answers at once: a 2 MiB burst (lb raises the mark), then 1000
    # bytes the client waits for before it sends its body. They must come.
    burst = 2 * T.MiB

    def handler(s, fake):
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            data = s.recv(65536)
            if not data:
                return
            buf += data
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (burst + 2000) +
                  T.pattern_bytes(burst))
        time.sleep(0.3)
        s.sendall(T.pattern_bytes(1000, burst))
        while len(buf) < buf.index(b"\r\n\r\n") + 4 + 10:
            data = s.recv(65536)
            if not data:
                return
            buf += data
        s.sendall(T.pattern_bytes(1000, burst + 1000))
        time.sleep(1)

    fake = T.FakeServer(handler)
    lb = T.start_lb([fake], workers=1, timeouts={"client_header": "4s", "server": "30s"})
    c = T.Conn(lb.port, timeout=3, rcvbuf=32 * 1024)
    c.send(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
    time.sleep(0.5)  # the pipe fills meanwhile
    check_eq(c.read_head().status, 200, "status")
    check(c.read_exact(burst) == T.pattern_bytes(burst), "the burst differs")
    check(c.read_exact(1000) == T.pattern_bytes(1000, burst), "the 1000 bytes after it")
    c.send(b"0123456789")
    check(c.read_exact(1000) == T.pattern_bytes(1000, burst + 1000), "the last 1000 bytes")


if __name__ == "__main__":
    T.run([test_spliced_body_exact_and_logged, test_stalling_server_bytes_not_held,
           test_pool_reused_after_spliced_body, test_pipelined_after_spliced_body,
           test_head_with_large_length, test_server_gone_mid_body,
           test_clients_gone_mid_body_leak_nothing,
           test_small_pieces_to_a_paused_client_no_busy_loop,
           test_bytes_past_the_body_never_reach_the_next_request,
           test_bytes_below_the_mark_while_request_body_open])
