#!/usr/bin/env python3
"""Large bodies stream through lb with bounded memory: a 1 GiB download and
a 1 GiB upload (each byte counted, the download's content checked), with
lb's resident memory sampled during the transfer and required to grow by
less than 16 MiB; and back-pressure both ways (a client or a server that
stops reading makes lb stop reading the other side instead of buffering)."""
import socket
import threading
import time

import lbtest as T
from lbtest import check, check_eq

GiB = 1024 * T.MiB
RSS_LIMIT_KB = 16 * 1024


class RssSampler:
    """Samples lb's VmRSS every 20 ms in a thread; .max is the largest seen."""

    def __init__(self, lb):
        self.lb = lb
        self.base = lb.rss_kb()
        self.max = self.base
        self.samples = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            try:
                rss = self.lb.rss_kb()
            except (OSError, T.TestFailure):
                return
            self.max = max(self.max, rss)
            self.samples += 1
            time.sleep(0.02)

    def stop(self):
        self.stopping = True
        self.thread.join(2)
        return self.max - self.base

    def check(self, what):
        growth = self.stop()
        check(self.samples >= 5, "only %d RSS samples during %s" % (self.samples, what))
        check(growth < RSS_LIMIT_KB, "lb's RSS grew by %d KiB during %s (base %d KiB)" % (
            growth, what, self.base))


def warm_up(lb):
    """A few small exchanges first, so the baseline includes lb's buffers
    and the first-use allocations of its code paths."""
    for target in ("/", "/bytes?n=300000", "/bytes?n=300000&chunked=1"):
        T.request(lb.port, "GET", target)
    T.request(lb.port, "POST", "/sink", body=T.pattern_bytes(300000))
    c = T.Conn(lb.port)
    c.send(b"POST /sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"10000\r\n" + T.pattern_bytes(0x10000) + b"\r\n0\r\n\r\n")
    c.read_response()
    c.close()


def read_streamed(c, n, chunked_body, verify=True):
    """Reads an n-byte body from c without keeping it: counts it and, when
    `verify`, compares it with /bytes' pattern as it arrives. Returns the
    byte count."""
    big = T.pattern_bytes(len(T.PATTERN) + (1 << 20) + len(T.PATTERN))
    got = 0
    buf = bytearray(1 << 20)
    view = memoryview(buf)

    def take(data):
        nonlocal got
        if verify:
            off = got % len(T.PATTERN)
            if data != big[off:off + len(data)]:
                raise T.TestFailure("body differs from the pattern near byte %d" % got)
        got += len(data)

    def recv_some(limit):
        if c.buf:
            k = min(len(c.buf), limit)
            data = bytes(c.buf[:k])
            del c.buf[:k]
            return data
        k = c.sock.recv_into(view[:min(limit, len(buf))])
        if k == 0:
            raise T.TestFailure("connection closed after %d body bytes" % got)
        return bytes(view[:k])

    if not chunked_body:
        while got < n:
            take(recv_some(n - got))
        return got
    while True:
        size = int(c.read_until(b"\r\n").split(b";")[0], 16)
        if size == 0:
            c.read_until(b"\r\n")
            return got
        left = size
        while left:
            data = recv_some(left)
            take(data)
            left -= len(data)
        check_eq(c.read_exact(2), b"\r\n", "chunk end")


def download(lb, n, chunked):
    c = T.Conn(lb.port, timeout=30)
    sampler = RssSampler(lb)
    t0 = time.monotonic()
    c.send(b"GET /bytes?n=%d%s HTTP/1.1\r\nHost: x\r\n\r\n" % (n, b"&chunked=1" if chunked else b""))
    r = c.read_head()
    check_eq(r.status, 200, "status")
    if chunked:
        check_eq(r.header("transfer-encoding"), "chunked", "Transfer-Encoding")
    else:
        check_eq(r.header("content-length"), str(n), "Content-Length")
    got = read_streamed(c, n, chunked)
    took = time.monotonic() - t0
    sampler.check("a %d-byte download" % n)
    check_eq(got, n, "bytes received")
    # the connection is still good
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    check_eq(c.read_response().status, 200, "next request")
    line = T.parse_access(lb.wait_access(1)[-2])
    check_eq(line["bytes"], str(n), "bytes in the access log")
    return took


def body_pieces(n, chunked):
    """The n-byte body in 1 MiB pieces (chunk-framed when `chunked`), made
    as they are sent: the whole body never exists in memory."""
    block = T.pattern_bytes(T.MiB)
    frame = b"%x\r\n%s\r\n" % (len(block), block) if chunked else block
    left = n
    while left >= len(block):
        yield frame
        left -= len(block)
    if left:
        yield b"%x\r\n%s\r\n" % (left, block[:left]) if chunked else block[:left]
    if chunked:
        yield b"0\r\n\r\n"


def upload(lb, n, chunked):
    c = T.Conn(lb.port, timeout=15)
    sampler = RssSampler(lb)
    t0 = time.monotonic()
    if chunked:
        c.send(b"POST /sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    else:
        c.send(b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % n)
    sent = 0
    try:
        for piece in body_pieces(n, chunked):
            c.send(piece)
            sent += len(piece)
    except (socket.timeout, TimeoutError):
        raise T.TestFailure("lb stopped reading the upload after %d bytes" % sent)
    except (BrokenPipeError, ConnectionResetError) as e:
        raise T.TestFailure("lb closed the upload after %d bytes (%s)" % (sent, e))
    r = c.read_response()
    took = time.monotonic() - t0
    sampler.check("a %d-byte upload" % n)
    check_eq(r.status, 200, "status")
    check_eq(r.body, b"received %d\n" % n, "what the server received")
    return took


def test_download_1gib():
    b = T.start_backends(1)[0]
    lb = T.start_lb([b], workers=2)
    warm_up(lb)
    took = download(lb, GiB, chunked=False)
    print("  1 GiB download: %.1fs, %.0f MB/s" % (took, GiB / took / 1e6))


def test_upload_1gib():
    b = T.start_backends(1)[0]
    lb = T.start_lb([b], workers=2)
    warm_up(lb)
    took = upload(lb, GiB, chunked=False)
    print("  1 GiB upload: %.1fs, %.0f MB/s" % (took, GiB / took / 1e6))


def test_chunked_both_ways_256mib():
    b = T.start_backends(1)[0]
    lb = T.start_lb([b], workers=2)
    warm_up(lb)
    download(lb, 256 * T.MiB, chunked=True)
    upload(lb, 256 * T.MiB, chunked=True)


def test_slow_client_back_pressure():
    # A client that stops reading: lb must stop reading the server rather
    # than buffer the 256 MiB body.
    b = T.start_backends(1)[0]
    lb = T.start_lb([b], workers=1)
    warm_up(lb)
    c = T.Conn(lb.port, timeout=30, rcvbuf=64 * 1024)
    sampler = RssSampler(lb)
    n = 256 * T.MiB
    c.send(b"GET /bytes?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % n)
    time.sleep(1.5)   # not reading
    growth = sampler.max - sampler.base
    check(growth < RSS_LIMIT_KB, "lb buffered %d KiB for a client that does not read" % growth)
    c.read_head()
    got = read_streamed(c, n, False, verify=False)
    sampler.check("a download to a slow client")
    check_eq(got, n, "bytes received after the pause")


def test_slow_server_back_pressure():
    # A server that reads nothing for 1.5 s: lb must stop reading the
    # client (whose sends then block) rather than buffer the upload.
    n = 128 * T.MiB
    result = {}

    def handler(s, fake):
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            buf += s.recv(65536)
        time.sleep(1.5)
        got = len(buf) - buf.index(b"\r\n\r\n") - 4
        while got < n:
            data = s.recv(1 << 20)
            if not data:
                break
            got += len(data)
        result["got"] = got
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%d" % (len(str(got)), got))

    fake = T.FakeServer(handler)
    lb = T.start_lb([fake], workers=1)
    c = T.Conn(lb.port, timeout=30)
    sampler = RssSampler(lb)
    c.send(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % n)
    block = T.pattern_bytes(T.MiB)
    for _ in range(n // T.MiB):
        c.send(block)
    r = c.read_response()
    sampler.check("an upload to a server that pauses")
    check_eq(r.status, 200, "status")
    check_eq(r.body, str(n).encode(), "bytes the server got")


if __name__ == "__main__":
    T.run([test_download_1gib, test_upload_1gib, test_chunked_both_ways_256mib,
           test_slow_client_back_pressure, test_slow_server_back_pressure],
          per_test_timeout=150)
