#!/usr/bin/env python3
"""End-to-end test of the sample server lb-backend, on its own, over loopback.

Starts lb-backend (LB_BACKEND_BIN) on a free port, checks every endpoint with
raw sockets, and stops it by pid at the end, also when a check fails.
Python 3 standard library only. Exit status 0 when every check passed.
"""
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback

BIN = os.environ.get("LB_BACKEND_BIN", "build/backends/lb-backend")
ID = "test-b1"
PATTERN = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_"
MiB = 1024 * 1024


def pattern_bytes(n):
    return (PATTERN * (n // len(PATTERN) + 1))[:n]


class Backend:
    """One lb-backend process; its stderr is kept for failure reports."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [BIN, "--listen", "127.0.0.1:0", "--id", ID],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.stderr = b""
        try:
            line = self._ready_line(10.0)
            m = re.match(rb"lb-backend (\S+) listening on 127\.0\.0\.1:(\d+)$", line)
            if not m:
                raise RuntimeError("unexpected ready line: %r" % line)
            if m.group(1).decode() != ID:
                raise RuntimeError("ready line names %r, not %r" % (m.group(1), ID))
            self.port = int(m.group(2))
        except BaseException:
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            raise
        threading.Thread(target=self._drain, daemon=True).start()

    def _ready_line(self, timeout):
        fd = self.proc.stderr.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self.stderr:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise RuntimeError("lb-backend did not get ready: %r" % self.stderr)
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise RuntimeError("lb-backend exited: %r" % self.stderr)
                self.stderr += chunk
        line, _, rest = self.stderr.partition(b"\n")
        self.stderr = rest
        return line

    def _drain(self):
        for chunk in iter(lambda: self.proc.stderr.read1(4096), b""):
            self.stderr += chunk

    def stop(self):
        """SIGTERM, then SIGKILL if it lingers. Returns the exit status."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


class Response:
    def __init__(self, status, headers, body, raw_head):
        self.status = status
        self.headers = headers  # lower-case name -> list of values
        self.body = body
        self.raw_head = raw_head

    def header(self, name):
        values = self.headers.get(name.lower())
        return values[0] if values else None


class Conn:
    """A raw HTTP/1.1 client connection with its own response reader."""

    def __init__(self, port, timeout=20.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = bytearray()

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        data = self.sock.recv(1 << 20)
        if not data:
            raise EOFError("connection closed by the server")
        self.buf += data

    def read_until(self, sep):
        while True:
            i = self.buf.find(sep)
            if i >= 0:
                out = bytes(self.buf[:i + len(sep)])
                del self.buf[:i + len(sep)]
                return out
            self._fill()

    def read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_chunked(self):
        body = bytearray()
        while True:
            size_line = self.read_until(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while self.read_until(b"\r\n") != b"\r\n":
                    pass  # trailers
                return bytes(body)
            body += self.read_exact(size)
            if self.read_exact(2) != b"\r\n":
                raise AssertionError("chunk not followed by CRLF")

    def read_response(self, head=False, allow_interim=False):
        raw = self.read_until(b"\r\n\r\n")
        lines = raw[:-4].split(b"\r\n")
        m = re.match(rb"HTTP/1\.1 (\d{3}) ", lines[0] + b" ")
        if not m:
            raise AssertionError("bad status line %r" % lines[0])
        status = int(m.group(1))
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.setdefault(name.decode().lower(), []).append(value.strip().decode())
        if 100 <= status < 200:
            if not allow_interim:
                raise AssertionError("unexpected interim %d" % status)
            return Response(status, headers, b"", raw)
        check(headers.get("x-backend-id") == [ID], "X-Backend-Id on %r" % lines[0])
        if head or status in (204, 304):
            body = b""
        elif "chunked" in ",".join(headers.get("transfer-encoding", [])):
            body = self.read_chunked()
        elif "content-length" in headers:
            body = self.read_exact(int(headers["content-length"][0]))
        else:
            raise AssertionError("response without length: %r" % raw)
        return Response(status, headers, body, raw)

    def is_closed(self, wait=3.0):
        """True when the server closed (EOF) with nothing more to read."""
        if self.buf:
            return False
        self.sock.settimeout(wait)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def get(port, target, method="GET", headers=b"", body=b""):
    c = Conn(port)
    try:
        extra = b"Content-Length: %d\r\n" % len(body) if body or method == "POST" else b""
        c.send(b"%s %s HTTP/1.1\r\nHost: t\r\n%s%s\r\n%s" % (
            method.encode(), target.encode(), headers, extra, body))
        return c.read_response(head=(method == "HEAD"))
    finally:
        c.close()


# ---- the checks ----

def t_root(port):
    r = get(port, "/")
    check(r.status == 200, "status %d" % r.status)
    check(r.body == b"hello from %s\n" % ID.encode(), "body %r" % r.body)
    check(r.header("content-length") == str(len(r.body)), "content-length")


def t_not_found(port):
    r = get(port, "/no/such/path")
    check(r.status == 404, "status %d" % r.status)


def t_pipelined_keepalive(port):
    c = Conn(port)
    try:
        c.send(b"GET /status?code=201 HTTP/1.1\r\nHost: t\r\n\r\n"
               b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
               b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        r1, r2, r3 = c.read_response(), c.read_response(), c.read_response()
        check(r1.status == 201 and r1.body == b"status 201\n", "first %d %r" % (r1.status, r1.body))
        check(r2.status == 200 and r2.body.endswith(b"\r\n\r\nabc"), "second %r" % r2.body)
        check(r3.status == 200 and r3.body.startswith(b"hello from"), "third %r" % r3.body)
        # still open: a fourth request on the same connection
        c.send(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        check(c.read_response().status == 200, "keep-alive after pipelining")
    finally:
        c.close()


def t_pipelined_many(port):
    # more pipelined answers than fit one output buffer, and a delayed one
    c = Conn(port)
    try:
        n = 2000
        reqs = b"".join(b"GET /status?code=%d HTTP/1.1\r\nHost: t\r\n\r\n" % (200 + i % 3)
                        for i in range(n))
        c.send(b"GET /delay?ms=50 HTTP/1.1\r\nHost: t\r\n\r\n" + reqs)
        r = c.read_response()
        check(r.body == b"delayed 50 ms\n", "delayed first: %r" % r.body)
        for i in range(n):
            r = c.read_response()
            check(r.status == 200 + i % 3, "answer %d out of order: %d" % (i, r.status))
    finally:
        c.close()


def t_head(port):
    c = Conn(port)
    try:
        c.send(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.read_response(head=True)
        check(r.status == 200, "status %d" % r.status)
        check(r.header("content-length") == str(len("hello from %s\n" % ID)), "length of HEAD")
        c.send(b"HEAD /bytes?n=1000000 HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.read_response(head=True)
        check(r.header("content-length") == "1000000", "HEAD /bytes length")
        # no stray body: the next answer follows the head directly
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.read_response()
        check(r.body.startswith(b"hello from"), "after HEAD: %r" % r.body)
    finally:
        c.close()


def t_expect_continue(port):
    c = Conn(port)
    try:
        head = (b"POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                b"Content-Length: 11\r\n\r\n")
        c.send(head)
        interim = c.read_until(b"\r\n\r\n")
        check(interim == b"HTTP/1.1 100 Continue\r\n\r\n", "interim %r" % interim)
        c.send(b"hello world")
        r = c.read_response()
        check(r.status == 200 and r.body == head + b"hello world", "echo %r" % r.body)
        # too big for /echo: a final 413 instead of 100 Continue, then close
        c2 = Conn(port)
        c2.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                b"Content-Length: 5000000\r\n\r\n")
        r = c2.read_response()
        check(r.status == 413, "big expect: %d" % r.status)
        check(c2.is_closed(), "closed after 413")
        c2.close()
    finally:
        c.close()


def t_echo_exact(port):
    body = bytes(range(256)) * 40
    req = (b"PUT /echo/some/path?x=1&y=%%20z HTTP/1.1\r\nHost: t\r\n"
           b"X-Odd-Case:   spaced value  \r\nx-dup: 1\r\nX-Dup: 2\r\n"
           b"Content-Length: %d\r\n\r\n" % len(body)) + body
    c = Conn(port)
    try:
        c.send(req)
        r = c.read_response()
        check(r.status == 200, "status %d" % r.status)
        check(r.body == req, "echo differs")
        check(r.header("content-type") == "text/plain", "content-type")
        # chunked request: the head as it came, then the decoded body
        head = b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        c.send(head + b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        r = c.read_response()
        check(r.body == head + b"hello world", "chunked echo %r" % r.body)
        # a body just under the limit, in chunks, is echoed whole
        big = pattern_bytes(MiB)
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(big[i:i + 100000]), big[i:i + 100000])
                          for i in range(0, len(big), 100000))
        c.send(head + chunks + b"0\r\n\r\n")
        r = c.read_response()
        check(r.body == head + big, "1 MiB chunked echo (%d bytes)" % len(r.body))
    finally:
        c.close()
    # over the limit in chunks: 413 and close
    c = Conn(port)
    try:
        c.send(head)
        try:
            for _ in range(20):
                c.send(b"10000\r\n" + b"x" * 0x10000 + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = c.read_response()
        check(r.status == 413, "chunked over 1 MiB: %d" % r.status)
    finally:
        c.close()


def t_sink_chunked_50mb(port):
    total = 50 * MiB
    piece = pattern_bytes(256 * 1024)
    c = Conn(port, timeout=60)
    try:
        c.send(b"POST /sink HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        frame = b"%x\r\n%s\r\n" % (len(piece), piece)
        for _ in range(total // len(piece)):
            c.send(frame)
        c.send(b"0\r\n\r\n")
        r = c.read_response()
        check(r.status == 200 and r.body == b"received %d\n" % total, "sink %r" % r.body)
        # and with a Content-Length
        c.send(b"PUT /sink HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (4 * MiB))
        for _ in range(16):
            c.send(piece)
        r = c.read_response()
        check(r.body == b"received %d\n" % (4 * MiB), "sink length %r" % r.body)
    finally:
        c.close()


def t_bytes(port):
    n = 10 * 1000 * 1000 + 7
    c = Conn(port, timeout=60)
    try:
        c.send(b"GET /bytes?n=%d HTTP/1.1\r\nHost: t\r\n\r\n" % n)
        r = c.read_response()
        check(r.header("content-length") == str(n), "length header")
        check(r.body == pattern_bytes(n), "content-length body")
        c.send(b"GET /bytes?n=%d&chunked=1 HTTP/1.1\r\nHost: t\r\n\r\n" % n)
        r = c.read_response()
        check(r.header("transfer-encoding") == "chunked", "chunked header")
        check(r.header("content-length") is None, "no length with chunked")
        check(r.body == pattern_bytes(n), "chunked body")
        for q in (b"n=0", b"n=0&chunked=1", b"n=1&chunked=1"):
            c.send(b"GET /bytes?%s HTTP/1.1\r\nHost: t\r\n\r\n" % q)
            r = c.read_response()
            check(r.body == pattern_bytes(int(q[2:3])), "%r" % q)
        c.send(b"GET /bytes?n=abc HTTP/1.1\r\nHost: t\r\n\r\n")
        check(c.read_response().status == 400, "bad n")
    finally:
        c.close()


def t_bytes_slow_reader(port):
    # back-pressure: a reader that stops reading does not make the server
    # buffer the body; it resumes where it stopped.
    n = 64 * MiB
    c = Conn(port, timeout=60)
    try:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        c.send(b"GET /bytes?n=%d HTTP/1.1\r\nHost: t\r\n\r\n" % n)
        time.sleep(0.5)
        c.read_until(b"\r\n\r\n")
        got = len(c.buf)
        while got < n:
            data = c.sock.recv(1 << 20)
            check(data, "EOF after %d bytes" % got)
            got += len(data)
        check(got == n, "got %d" % got)
    finally:
        c.close()


def t_status(port):
    c = Conn(port)
    try:
        for code in (204, 304):
            c.send(b"GET /status?code=%d HTTP/1.1\r\nHost: t\r\n\r\n" % code)
            r = c.read_response()
            check(r.status == code and r.body == b"", "%d" % code)
            check(r.header("content-length") is None, "no length on %d" % code)
        c.send(b"GET /status?code=503 HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.read_response()
        check(r.status == 503 and r.body == b"status 503\n", "503 %r" % r.body)
        c.send(b"GET /status?code=103 HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.read_response(allow_interim=True)
        check(r.status == 103, "interim %d" % r.status)
        r = c.read_response()
        check(r.status == 200 and r.body == b"status 103\n", "after 103 %r" % r.body)
        for bad in (b"99", b"600", b"x", b""):
            c.send(b"GET /status?code=%s HTTP/1.1\r\nHost: t\r\n\r\n" % bad)
            check(c.read_response().status == 400, "code=%r" % bad)
    finally:
        c.close()


def t_health(port):
    r = get(port, "/health")
    check(r.status == 200 and r.body == b"ok", "up %d %r" % (r.status, r.body))
    r = get(port, "/admin/health?state=down", method="POST")
    check(r.status == 200, "down: %d" % r.status)
    r = get(port, "/health")
    check(r.status == 503, "after down %d" % r.status)
    r = get(port, "/admin/health?state=up", method="POST")
    check(r.status == 200, "up: %d" % r.status)
    check(get(port, "/health").status == 200, "after up")
    check(get(port, "/admin/health?state=down").status == 405, "GET admin")
    check(get(port, "/admin/health?state=sideways", method="POST").status == 400, "bad state")


def t_session(port):
    c = Conn(port)
    try:
        c.send(b"GET /session HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.read_response()
        m = re.match(r"sid=([0-9a-f]{32}); Path=/$", r.header("set-cookie") or "")
        check(m, "set-cookie %r" % r.header("set-cookie"))
        sid = m.group(1)
        check(r.body == b"server=%s session=%s count=1\n" % (ID.encode(), sid.encode()),
              "first %r" % r.body)
        for n in (2, 3):
            c.send(b"GET /session HTTP/1.1\r\nHost: t\r\nCookie: a=b; sid=%s; c=d\r\n\r\n"
                   % sid.encode())
            r = c.read_response()
            check(r.header("set-cookie") is None, "no new cookie")
            check(r.body.endswith(b"count=%d\n" % n), "count %r" % r.body)
        c.send(b"GET /session HTTP/1.1\r\nHost: t\r\nCookie: sid=%s\r\n\r\n" % (b"0" * 32))
        r = c.read_response()
        check(r.header("set-cookie") and sid not in r.header("set-cookie"), "unknown sid")
        check(r.body.endswith(b"count=1\n"), "unknown sid count %r" % r.body)
    finally:
        c.close()


def t_delay(port):
    t0 = time.monotonic()
    r = get(port, "/delay?ms=300")
    took = time.monotonic() - t0
    check(r.status == 200 and r.body == b"delayed 300 ms\n", "delay %r" % r.body)
    check(took >= 0.3, "answered after %.3fs" % took)
    # a delayed connection does not hold the others up
    slow = Conn(port)
    try:
        slow.send(b"GET /delay?ms=1000 HTTP/1.1\r\nHost: t\r\n\r\n")
        t0 = time.monotonic()
        get(port, "/")
        check(time.monotonic() - t0 < 0.5, "blocked behind a delay")
        check(slow.read_response().status == 200, "slow answer")
    finally:
        slow.close()


def t_bad_request(port):
    for req in (b"GARBAGE\r\n\r\n",
                b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
                b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"):
        c = Conn(port)
        try:
            c.send(req)
            r = c.read_response()
            check(r.status == 400, "%r: %d" % (req, r.status))
            check(r.header("connection") == "close", "Connection: close on 400")
            check(c.is_closed(), "closed after 400 for %r" % req)
        finally:
            c.close()
    # an error after good pipelined requests: those are answered first
    c = Conn(port)
    try:
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\nBAD\x01 / HTTP/1.1\r\n\r\n")
        check(c.read_response().status == 200, "good one first")
        check(c.read_response().status == 400, "then 400")
        check(c.is_closed(), "then close")
    finally:
        c.close()


def t_connection_close_and_http10(port):
    c = Conn(port)
    try:
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
               b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.read_response()
        check(r.header("connection") == "close", "Connection: close answered")
        check(c.is_closed(), "closed after Connection: close (second not answered)")
    finally:
        c.close()
    c = Conn(port)
    try:
        c.send(b"GET / HTTP/1.0\r\n\r\n")
        r = c.read_response()
        check(r.status == 200 and r.body.startswith(b"hello"), "1.0 answer")
        check(c.is_closed(), "HTTP/1.0 closes by default")
    finally:
        c.close()
    c = Conn(port)
    try:
        for _ in range(2):
            c.send(b"GET /bytes?n=10&chunked=1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            r = c.read_response()
            check(r.header("connection") == "keep-alive", "1.0 keep-alive")
            check(r.header("content-length") == "10", "no chunked to 1.0")
    finally:
        c.close()


def t_half_close(port):
    # the client sends its requests and shuts its side: answers still come
    c = Conn(port)
    try:
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\nGET /delay?ms=100 HTTP/1.1\r\nHost: t\r\n\r\n")
        c.sock.shutdown(socket.SHUT_WR)
        check(c.read_response().status == 200, "first")
        check(c.read_response().body == b"delayed 100 ms\n", "second")
        check(c.is_closed(), "closed at the end")
    finally:
        c.close()


TESTS = [t_root, t_not_found, t_pipelined_keepalive, t_pipelined_many, t_head,
         t_expect_continue, t_echo_exact, t_sink_chunked_50mb, t_bytes, t_bytes_slow_reader,
         t_status, t_health, t_session, t_delay, t_bad_request, t_connection_close_and_http10,
         t_half_close]


def main():
    passed = failed = 0
    backend = Backend()
    try:
        for t in TESTS:
            t0 = time.monotonic()
            try:
                t(backend.port)
                passed += 1
                print("ok   %-34s %.2fs" % (t.__name__, time.monotonic() - t0), flush=True)
            except Exception:
                failed += 1
                print("FAIL %s" % t.__name__, flush=True)
                traceback.print_exc()
            if backend.proc.poll() is not None:
                print("lb-backend died: %r" % backend.stderr.decode(errors="replace"))
                failed += 1
                break
        rc = backend.stop()
        if rc != 0:
            failed += 1
            print("FAIL lb-backend exit status %d on SIGTERM" % rc)
        else:
            passed += 1
            print("ok   SIGTERM exits 0")
    finally:
        if backend.proc.poll() is None:
            os.kill(backend.proc.pid, signal.SIGKILL)
            backend.proc.wait()
    if failed and backend.stderr:
        print("lb-backend stderr:\n" + backend.stderr.decode(errors="replace"))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
