"""Helpers for test_affinity.py (on top of lbtest, which is not changed):
configs with `affinity`, `balance: hash`, `hash_key`, `hash_balance_factor`,
server ids and health checks; a cookie jar; a client that can pick its
source address; the token format of lb/affinity.h recomputed in Python; and
waiting for lb's health log lines."""
import base64
import fcntl
import hashlib
import hmac
import os
import re
import socket
import threading
import time

import lbtest as T
from lbtest import check, check_eq

SECRET = "correct-horse-battery-staple-42"
COOKIE = "LBSRV"
HEALTH = "{ interval: 200ms, timeout: 200ms, rise: 2, fall: 3 }"
HEALTH_DOWN_WITHIN = 3 * 0.2 + 0.2 + 1.5  # fall x interval + timeout + slack (ASan)
HEALTH_UP_WITHIN = 2 * 0.2 + 0.2 + 1.5
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{22}$")


def token_for(secret, server_id):
    """lb/affinity.h, token format version 1: the first 128 bits of
    HMAC-SHA256(secret, "lb-affinity-v1:" || id), base64url without padding
    (22 characters)."""
    mac = hmac.new(secret.encode(), b"lb-affinity-v1:" + server_id.encode(),
                   hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:16]).decode().rstrip("=")


def _map(d):
    return "{ " + ", ".join("%s: %s" % (k, v) for k, v in d.items()) + " }"


def backend_yaml(servers, affinity=None, balance=None, hash_key=None, factor=None, health=None,
                 extra=None):
    """The lines of one backend (indented for `backends:`). servers: (id,
    address) pairs; affinity: True for the default cookie/secret, or a dict;
    extra: a dict of further keys written verbatim."""
    lines = []
    if affinity:
        a = {"cookie": COOKIE, "secret": '"%s"' % SECRET, "max_age": 0}
        if isinstance(affinity, dict):
            a.update(affinity)
        lines.append("    affinity: %s" % _map(a))
    if balance:
        lines.append("    balance: %s" % balance)
    if hash_key:
        lines.append('    hash_key: "%s"' % hash_key)
    if factor is not None:
        lines.append("    hash_balance_factor: %s" % factor)
    if health:
        lines.append("    health: %s" % (HEALTH if health is True else health))
    for k, v in (extra or {}).items():
        lines.append("    %s: %s" % (k, v))
    lines.append("    servers:")
    for ident, address in servers:
        lines.append("      - { id: %s, address: %s }" % (ident, address))
    return lines


def config(port, servers=None, workers=2, backends=None, routes=None, access="stdout", **kw):
    """An lb config on 127.0.0.1:port: one backend "app" over `servers`
    (keywords as backend_yaml), or `backends` name -> backend_yaml kwargs
    with `routes` (dicts)."""
    lines = ["workers: %d" % workers,
             "listen:",
             "  - address: 127.0.0.1:%d" % port,
             "log: { access: %s }" % access,
             "timeouts: { drain: 5s, connect: 1s }",
             "backends:"]
    if backends is None:
        backends = {"app": dict(servers=servers, **kw)}
    for name, b in backends.items():
        lines.append("  %s:" % name)
        lines += backend_yaml(**b)
    if routes:
        lines.append("routes:")
        for r in routes:
            lines.append("  - %s" % _map(r))
    return "\n".join(lines) + "\n"


def start(servers=None, **kw):
    """lb over (id, address) pairs on a free port, accepting."""
    return T.start_lb_text(lambda port: config(port, servers, **kw))


def ids(backends):
    return [(b.ident, b.address) for b in backends]


# ---- client -------------------------------------------------------------------

def get(port, target="/", headers=None, source=None, method="GET", body=None, timeout=10.0,
        host="example.com"):
    """One request on a fresh connection, from `source` (a loopback address)
    when given. The lbtest Response, body read."""
    sock = socket.create_connection((T.HOST, port), timeout=timeout,
                                    source_address=(source, 0) if source else None)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c = _SockConn(sock, timeout)
        c.send(T.build_request(method, target, headers, body, host=host))
        return c.read_response(method)
    finally:
        sock.close()


class _SockConn(T.Conn):
    """lbtest's Conn reader over a socket made here (for source_address);
    closed by its maker, not by the harness."""

    def __init__(self, sock, timeout):  # pylint: disable=super-init-not-called
        self.sock = sock
        self.buf = bytearray()
        self.timeout = timeout


def server_of(r):
    return r.header("x-backend-id")


def parse_set_cookie(value):
    """(name, value, [attributes as sent]) of a Set-Cookie header value."""
    parts = [p.strip() for p in value.split(";")]
    name, _, val = parts[0].partition("=")
    return name, val, parts[1:]


def affinity_cookies(r):
    """The Set-Cookie values of r that set the affinity cookie."""
    return [v for v in r.all("set-cookie") if parse_set_cookie(v)[0] == COOKIE]


class Jar:
    """The cookies of one client: name -> value, updated from responses."""

    def __init__(self, **cookies):
        self.cookies = dict(cookies)

    def update(self, r):
        for v in r.all("set-cookie"):
            name, val, _ = parse_set_cookie(v)
            self.cookies[name] = val

    def headers(self, extra=None):
        h = list(extra or [])
        if self.cookies:
            h.append(("Cookie", "; ".join("%s=%s" % kv for kv in self.cookies.items())))
        return h


SESSION_RE = re.compile(rb"^server=(\S+) session=([0-9a-f]{32}) count=(\d+)\n$")


def session_get(port, jar, source=None):
    """GET /session with the jar's cookies; the jar takes the answer's
    cookies. Returns (response, server, sid, count)."""
    r = get(port, "/session", jar.headers(), source=source)
    check_eq(r.status, 200, "GET /session status (%r)" % r)
    m = SESSION_RE.match(r.body)
    check(m, "a /session body: %r" % r.body)
    jar.update(r)
    check_eq(m.group(1).decode(), server_of(r), "server in the body vs X-Backend-Id")
    return r, m.group(1).decode(), m.group(2).decode(), int(m.group(3))


def parallel(fn, items, threads=8):
    """fn(item) for every item over `threads` threads; results in order.
    The first exception (a TestFailure or other) is raised here."""
    results = [None] * len(items)
    errors = []
    next_i = [0]
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                if errors or next_i[0] >= len(items):
                    return
                i = next_i[0]
                next_i[0] += 1
            try:
                results[i] = fn(items[i])
            except BaseException as e:  # re-raised in the caller
                with lock:
                    errors.append(e)
                return

    ts = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]
    return results


# ---- health ---------------------------------------------------------------------

def set_health(backend, state):
    r = T.request(backend.port, "POST", "/admin/health?state=%s" % state, body=b"")
    check_eq(r.status, 200, "POST /admin/health?state=%s on %s" % (state, backend.ident))


def _changes(lb, ident, state):
    return len(re.findall(rb"server " + re.escape(ident.encode()) + rb"\b[^\n]* is " +
                          state.encode() + rb":", lb.stderr()))


def wait_change(lb, ident, state, timeout, before=0):
    """Waits until lb logged server `ident` going `state` (UP/DOWN) more than
    `before` times (pass the count read before causing it)."""
    T.wait_for(lambda: _changes(lb, ident, state) > before, timeout,
               "lb to log server %s %s" % (ident, state), interval=0.01)


def count_changes(lb, ident, state):
    return _changes(lb, ident, state)


class SlowLog:
    """A FIFO for lb's access log, read slowly (`delay` seconds between reads
    of 64 bytes, through a one-page pipe): once the pipe is full, every
    access-log write blocks the worker for about `delay`, as a stalled log
    disk would. drain() reads at full speed from then on (call it before lb
    is stopped)."""

    def __init__(self, delay):
        self.path = os.path.join(T.tmpdir("slowlog"), "access.fifo")
        os.mkfifo(self.path)
        self.delay = delay
        self.fast = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        fd = os.open(self.path, os.O_RDONLY)  # until lb opens it for writing
        try:
            fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 4096)
        except OSError:
            pass
        try:
            while True:
                data = os.read(fd, 65536 if self.fast else 64)
                if not data:
                    return  # lb closed it
                if not self.fast:
                    time.sleep(self.delay)
        finally:
            os.close(fd)

    def drain(self):
        self.fast = True
