#!/usr/bin/env python3
"""Slow and greedy clients (docs/SECURITY.md "Slow and greedy clients",
README timeouts): a whole-head deadline that trickled bytes do not extend;
a stalled request body gets 408 and never completes at the backend; a slow
reader costs lb at most a buffer per direction; running out of file
descriptors neither spins nor stops existing connections, and lb recovers;
a bounded slowhttptest slowloris run while a normal client keeps getting
answers."""
import os
import re
import select
import shutil
import socket
import subprocess
import threading
import time

import lbtest as T
from lbtest import check, check_eq
import conformance_lib as L


def read_answer(c, timeout):
    """(Response or None, seconds until it came)."""
    t0 = time.monotonic()
    try:
        r = c.read_response()
    except (EOFError, ConnectionResetError, T.TestFailure):
        r = None
    return r, time.monotonic() - t0


def trickle(c, data, every, limit):
    """Sends data one byte every `every` seconds until lb answers (the socket
    turns readable) or `limit` seconds pass. Returns the seconds it took."""
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < limit:
        if select.select([c.sock], [], [], every)[0]:
            break
        try:
            c.send(data[i % len(data):i % len(data) + 1])
        except (BrokenPipeError, ConnectionResetError):
            break
        i += 1
    return time.monotonic() - t0


def test_header_deadline_not_reset_by_trickling():
    be = L.RecordingBackend()
    lb = L.start_lb_conf([be.address], timeouts={"client_header": "1s"})
    fails = L.Failures()
    for name, prefix, drip in (
            ("trickled header value", b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ", b"a"),
            ("trickled header lines", b"GET / HTTP/1.1\r\nHost: a\r\n", b"X-A: b\r\n"),
            ("trickled request line", b"", b"GET /" + b"a" * 100)):
        c = T.Conn(lb.port, timeout=5)
        t0 = time.monotonic()
        if prefix:
            c.send(prefix)
        took = trickle(c, drip, 0.1, 4)
        r, _ = read_answer(c, 3)
        took = time.monotonic() - t0
        if r is None or r.status != 408:
            fails.add("%s: expected 408, got %r after %.2fs" % (name, r, took))
        elif not (0.85 <= took <= 1.8):
            fails.add("%s: 408 after %.2fs with client_header 1s (one byte every 100 ms)" % (
                name, took))
        elif r.header("connection") != "close" or not c.is_closed(2):
            fails.add("%s: not closed after the 408: %r" % (name, r))
        c.close()
    time.sleep(0.1)
    if be.n_conns():
        fails.add("the backend saw %d connection(s): %r" % (be.n_conns(), be.all_received()))
    fails.check()


def test_body_stall_408_backend_never_completes():
    be = L.RecordingBackend()
    lb = L.start_lb_conf([be.address], workers=1, timeouts={"client_header": "1s",
                                                            "server": "10s"})
    fails = L.Failures()
    for name, head, part in (
            ("Content-Length body", b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n",
             b"0123456789"),
            ("chunked body", b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
             b"a\r\n0123456789\r\n")):
        first = be.n_conns()
        c = T.Conn(lb.port, timeout=5)
        c.send(head + part)
        t0 = time.monotonic()
        r, _ = read_answer(c, 5)
        took = time.monotonic() - t0
        if r is None or r.status != 408:
            fails.add("%s: expected 408, got %r after %.2fs" % (name, r, took))
        elif not 0.85 <= took <= 2.5:
            fails.add("%s: 408 after %.2fs with client_header 1s" % (name, took))
        elif r.header("connection") != "close" or not c.is_closed(2):
            fails.add("%s: not closed after the 408" % name)
        c.close()
        if be.n_conns() <= first:
            fails.add("%s: the backend never saw the request head" % name)
            continue
        bc = be.conns[first]
        if not bc.wait_eof(3):
            fails.add("%s: lb left the backend connection open" % name)
        got = bc.received()
        body = got.partition(b"\r\n\r\n")[2]
        if be.n_requests:
            fails.add("%s: the request completed at the backend: %r" % (name, got))
        if b"0123456789" not in body or b"0\r\n\r\n" in body or len(body) > len(part) + 8:
            fails.add("%s: the backend got %r after the head" % (name, body))
    # a body that keeps moving, slower than client_header overall, is fine:
    # the body timeout is an inactivity timeout
    c = T.Conn(lb.port, timeout=5)
    c.send(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 8\r\n\r\n")
    for ch in b"01234567":
        time.sleep(0.3)
        c.send(bytes([ch]))
    r, _ = read_answer(c, 3)
    if r is None or r.status != 200:
        fails.add("a body trickled every 300 ms (2.4 s in all) got %r" % r)
    fails.check()


class RssSampler:
    def __init__(self, lb, every=0.05):
        self.lb = lb
        self.base = lb.rss_kb()
        self.max = self.base
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stop_ev.wait(0.05):
            try:
                self.max = max(self.max, self.lb.rss_kb())
            except (OSError, T.TestFailure):
                return

    def stop(self):
        self.stop_ev.set()
        self.t.join(1)
        return self.max - self.base


def test_slow_reader_bounded_memory():
    b = T.start_backends(1)[0]
    lb = T.start_lb([b], workers=1, timeouts={"client_idle": "30s"})
    for _ in range(3):   # warm-up: buffers, spares, the pooled connection
        check_eq(T.request(lb.port, "GET", "/bytes?n=%d" % (4 * T.MiB)).status, 200, "warm-up")
    n = 50 * 1000 * 1000
    c = T.Conn(lb.port, timeout=20, rcvbuf=64 * 1024)
    time.sleep(0.2)
    sampler = RssSampler(lb)
    c.send(b"GET /bytes?n=%d HTTP/1.1\r\nHost: a\r\n\r\n" % n)
    time.sleep(2.0)   # not reading
    queued = L.recv_queues_to(b.port)
    growth = sampler.stop()
    print("  RSS growth while the client did not read: %d KiB; unread by lb from the "
          "server: %s bytes" % (growth, queued))
    check(queued and max(queued) > 0, "lb kept reading from the server for a client that "
          "does not read (its receive queues: %s)" % queued)
    check(growth < 4 * 1024, "lb's RSS grew by %d KiB while its client did not read "
          "(at most a buffer per direction expected)" % growth)
    r = c.read_head()
    check_eq(r.status, 200, "status")
    check_eq(r.header("content-length"), str(n), "length")
    got = 0
    while got < n:
        piece = c.read_exact(min(1 << 20, n - got))
        if piece != T.pattern_bytes(len(piece), got):
            raise T.TestFailure("body differs from the pattern at offset %d" % got)
        got += len(piece)
    check_eq(got, n, "bytes received after the pause")
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    check_eq(c.read_response().status, 200, "the connection carries on")


def test_slow_reader_keepalive_gets_the_whole_response():
    # The response is complete at lb before a slow client (a 4 KiB receive
    # window) has read it; the connection then waits for a next request while
    # the tail of the response still has to leave.
    b = T.start_backends(1)[0]
    lb = T.start_lb([b], workers=1)
    n = 3000000
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window
    s.connect(("127.0.0.1", lb.port))
    try:
        s.sendall(b"GET /bytes?n=%d HTTP/1.1\r\nHost: a\r\n\r\n" % n)
        time.sleep(1.0)  # lb has the response; the client has read nothing
        s.settimeout(5)
        got = b""
        while True:
            try:
                d = s.recv(65536)
            except socket.timeout:
                break
            if not d:
                break
            got += d
            head, sep, body = got.partition(b"\r\n\r\n")
            if sep and len(body) >= n:
                break
        head, sep, body = got.partition(b"\r\n\r\n")
        check(head.startswith(b"HTTP/1.1 200"), "status line %r" % head[:40])
        check_eq(len(body), n, "body bytes of a response lb had finished before the client read it")
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        check(b"200 OK" in s.recv(4096), "the connection carries on")
    finally:
        s.close()


def test_body_stall_after_20k_is_408_not_504():
    # While the request is still replayable lb keeps the bytes it sent; a
    # stall of the client must still be the client's (408), never the
    # server's (504 and a health failure against it).
    b = T.start_backends(1)[0]
    lb = T.start_lb([b], workers=1, timeouts={"client_header": "1s", "server": "3s"})
    c = T.Conn(lb.port, timeout=10)
    c.send(b"POST /sink HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n" + b"x" * 20000)
    t0 = time.monotonic()
    r = c.read_response()
    took = time.monotonic() - t0
    check_eq(r.status, 408, "a stalled body")
    check(took < 2.5, "answered after %.2fs (client_header 1s, server 3s)" % took)


def test_slow_reader_send_timeout():
    # A client that takes nothing is closed after client_idle, and so is the
    # server connection behind it.
    b = T.start_backends(1)[0]
    lb = T.start_lb([b], workers=1, keepalive=0, timeouts={"client_idle": "1s"})
    c = T.Conn(lb.port, timeout=10, rcvbuf=64 * 1024)
    n = 50 * 1000 * 1000
    c.send(b"GET /bytes?n=%d HTTP/1.1\r\nHost: a\r\n\r\n" % n)
    time.sleep(0.5)
    check_eq(T.established_to(b.port), 1, "lb's connection to the server while streaming")
    t0 = time.monotonic()
    T.wait_for(lambda: T.established_to(b.port) == 0, 5,
               "lb to close the server connection of a client that reads nothing")
    took = time.monotonic() - t0
    check(took < 3.0, "closed after %.2fs with client_idle 1s" % took)
    got = len(c.read_to_eof())
    check(got < n, "the client that stopped reading still got the whole body")


def test_fd_exhaustion_no_spin_and_recovery():
    if not shutil.which("prlimit"):
        raise T.TestFailure("prlimit (util-linux) is not installed")
    b = T.start_backends(1)[0]
    limit = 64
    lb = L.start_lb_conf([b], workers=2, prefix=["prlimit", "--nofile=%d:%d" % (limit, limit)],
                         timeouts={"client_header": "60s", "client_idle": "60s"})
    check_eq(L.nofile_limits(lb.pid), (limit, limit), "lb's RLIMIT_NOFILE")
    # connections that exist before the shortage, each with its answer (and
    # each worker's pool keeps its server connection)
    existing = []
    for i in range(6):
        c = T.Conn(lb.port, timeout=5)
        c.send(b"GET /?e=%d HTTP/1.1\r\nHost: a\r\n\r\n" % i)
        check_eq(c.read_response().status, 200, "existing connection %d" % i)
        existing.append(c)
    # open idle connections until lb stops accepting them
    accepted, waiting = saturate(lb, limit, 3 * limit)
    check(waiting, "lb accepted %d connections with %d descriptors" % (len(accepted), limit))
    check(T.fd_count(lb.pid) >= limit - 2, "lb holds %d descriptors of %d at saturation" % (
        T.fd_count(lb.pid), limit))
    for _ in range(3):
        waiting.append(socket.create_connection((T.HOST, lb.port), timeout=5))
    fds = T.fd_count(lb.pid)
    # saturated: lb must not spin on its listeners
    cpu0, t0 = L.cpu_seconds(lb.pid), time.monotonic()
    time.sleep(2.0)
    cpu = L.cpu_seconds(lb.pid) - cpu0
    wall = time.monotonic() - t0
    print("  %d accepted, %d in the backlog, lb holds %d fds; %.3fs CPU in %.1fs saturated" % (
        len(accepted), len(waiting), fds, cpu, wall))
    check(cpu < 0.5, "lb used %.2fs of CPU in %.1fs out of descriptors (accept spin?)" % (
        cpu, wall))
    # the existing connections keep working
    for i, c in enumerate(existing):
        c.send(b"GET /?again=%d HTTP/1.1\r\nHost: a\r\n\r\n" % i)
        r, took = read_answer(c, 3)
        check(r is not None and r.status == 200,
              "existing connection %d while lb is out of descriptors (%d open): %r" % (
                  i, fds, r))
    # the waiting ones get nothing yet
    check(not select.select(waiting, [], [], 0.2)[0], "a connection in the backlog got bytes")
    # free some descriptors: the waiting connections are accepted and served
    for s in accepted[:10]:
        s.close()
    for i, s in enumerate(waiting):
        s.settimeout(5)
        s.sendall(b"GET /?w=%d HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" % i)
        data = b""
        t0 = time.monotonic()
        try:
            while True:
                d = s.recv(65536)
                if not d:
                    break
                data += d
        except (socket.timeout, ConnectionResetError):
            pass
        check(data.startswith(b"HTTP/1.1 200"), "waiting connection %d after fds were freed "
              "(%.2fs): %r" % (i, time.monotonic() - t0, data[:100]))
        s.close()
    r = T.request(lb.port, "GET", "/", timeout=5)
    check_eq(r.status, 200, "a new connection after recovery")
    for s in accepted[10:]:
        s.close()
    time.sleep(0.3)
    check_eq(T.request(lb.port, "GET", "/", timeout=5).status, 200, "after closing the rest")
    errs = lb.stderr().decode(errors="replace")
    n_pause = errs.count("pausing accepts")
    check(n_pause > 0, "lb never logged running out of descriptors")
    check(n_pause < 200, "%d 'pausing accepts' log lines: the pause is not bounding retries"
          % n_pause)


def saturate(lb, limit, max_conns):
    """Opens idle connections until lb stops accepting; returns (accepted,
    waiting)."""
    accepted, waiting = [], []
    for _ in range(max_conns):
        paused = lb.stderr().count(b"pausing accepts")
        s = socket.create_connection((T.HOST, lb.port), timeout=5)
        # accepted, or lb says it ran out of descriptors (after this connect)
        state = T.wait_for(
            lambda: ("accepted" if L.accepted_by(lb.port, s) else
                     "full" if lb.stderr().count(b"pausing accepts") > paused else None),
            5, "lb to accept or to run out of descriptors", interval=0.01)
        if state == "accepted":
            accepted.append(s)
        else:
            waiting.append(s)
            break
    return accepted, waiting


def test_fd_exhaustion_connect_503_not_blamed():
    # Without pooled connections, a request that arrives while lb has no
    # descriptor left cannot reach a server: lb answers 503 at once, and does
    # not count it against the servers (passive ejection stays off them).
    bs = T.start_backends(2)
    limit = 48
    lb = L.start_lb_conf(bs, workers=1, keepalive=0,
                         prefix=["prlimit", "--nofile=%d:%d" % (limit, limit)],
                         timeouts={"client_header": "60s", "client_idle": "60s"})
    accepted, waiting = saturate(lb, limit, 3 * limit)
    check(waiting, "lb accepted %d connections with %d descriptors" % (len(accepted), limit))
    check(T.fd_count(lb.pid) >= limit - 2, "lb holds %d descriptors of %d at saturation" % (
        T.fd_count(lb.pid), limit))
    answers = []
    for i, s in enumerate(accepted[:7]):   # more than passive.failures (5)
        s.settimeout(3)
        t0 = time.monotonic()
        s.sendall(b"GET /?n=%d HTTP/1.1\r\nHost: a\r\n\r\n" % i)
        try:
            data = s.recv(4096)
        except socket.timeout:
            data = b"(nothing within 3s)"
        answers.append((data[:12], time.monotonic() - t0))
        # not closed here: lb keeps the descriptor while it lingers
    check(all(a.startswith(b"HTTP/1.1 503") and t < 1.0 for a, t in answers),
          "requests while out of descriptors (expected a prompt 503 each): %r" % answers)
    for s in accepted + waiting:
        s.close()
    time.sleep(0.5)
    ids = set()
    for _ in range(6):
        r = T.request(lb.port, "GET", "/", timeout=5)
        check_eq(r.status, 200, "after recovery")
        ids.add(r.header("x-backend-id"))
    check_eq(ids, {"b1", "b2"}, "servers answering after lb's own shortage (none ejected)")


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def test_slowhttptest_slowloris():
    if not shutil.which("slowhttptest"):
        raise T.TestFailure("slowhttptest is not installed (scripts/setup.sh installs it)")
    b = T.start_backends(1)[0]
    # A typical default soft limit of 1024 would not hold 1,000 slowloris
    # connections: lb raises its soft limit itself (toward the hard one).
    hard = L.nofile_limits(os.getpid())[1]
    lb = L.start_lb_conf([b], workers=2, access="off", timeouts={"client_header": "5s"},
                         prefix=["prlimit", "--nofile=1024:%s" % (
                             "unlimited" if hard == float("inf") else hard)])
    soft, hard_lb = L.nofile_limits(lb.pid)
    want = min(hard_lb, 10000 * 2 + 64)
    check(soft >= want, "lb's open-files soft limit is %s (hard %s): not raised" % (soft,
                                                                                   hard_lb))
    check(soft >= 2100, "lb's open-files soft limit %s is too low for 1,000 slowloris "
          "connections" % soft)
    port = lb.port
    attack = subprocess.Popen(
        ["slowhttptest", "-c", "1000", "-H", "-i", "10", "-r", "200", "-t", "GET",
         "-u", "http://127.0.0.1:%d/" % port, "-x", "24", "-p", "3", "-l", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = []
    reader = threading.Thread(target=lambda: out.append(attack.stdout.read()), daemon=True)
    reader.start()
    failures, samples, max_conns = [], 0, 0
    t0 = time.monotonic()
    try:
        while attack.poll() is None and time.monotonic() - t0 < 40:
            max_conns = max(max_conns, L.established_from(port))
            ts = time.monotonic()
            try:
                r = T.request(port, "GET", "/", timeout=2)
                if r.status != 200:
                    failures.append("%.1fs: status %d" % (ts - t0, r.status))
            except Exception as e:   # a timeout, a reset, a close
                failures.append("%.1fs: %s: %s" % (ts - t0, type(e).__name__, e))
            samples += 1
            time.sleep(max(0, 0.2 - (time.monotonic() - ts)))
    finally:
        if attack.poll() is None:
            attack.kill()
        attack.wait(10)
        reader.join(5)
    text = ANSI.sub("", (out[0] if out else b"").decode(errors="replace"))
    connected = [int(x) for x in re.findall(r"connected:\s+(\d+)", text)]
    print("  slowhttptest held up to %d connections (%d seen at lb); %d probes, %d failed" % (
        max(connected or [0]), max_conns, samples, len(failures)))
    check(not failures, "normal client failed %d of %d times during the slowloris run: %s" % (
        len(failures), samples, "; ".join(failures[:10])))
    check(samples >= 20, "only %d probe samples" % samples)
    check(max(connected or [0]) >= 800 or max_conns >= 800,
          "the attack never held 800 connections (slowhttptest connected max %s, seen %d)" % (
              max(connected or [0]), max_conns))
    check("service available:   NO" not in text and "service available: NO" not in text,
          "slowhttptest found the service unavailable:\n%s" % text[-1500:])
    check(lb.alive(), "lb died")


if __name__ == "__main__":
    T.run([test_slow_reader_keepalive_gets_the_whole_response, test_body_stall_after_20k_is_408_not_504,
           test_header_deadline_not_reset_by_trickling, test_body_stall_408_backend_never_completes,
           test_slow_reader_bounded_memory, test_slow_reader_send_timeout,
           test_fd_exhaustion_no_spin_and_recovery, test_fd_exhaustion_connect_503_not_blamed,
           test_slowhttptest_slowloris])
