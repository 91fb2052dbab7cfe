"""Helpers for lb's failover end-to-end tests (test_failover.py), on top of
the shared harness lbtest.py (which they reuse and do not change):

- `LoggedBackend`: an lb-backend started with `--post-log FILE` (every POST
  carrying `X-Request-Id` appends one line with the id) and `--log` (one
  stderr line per request, "ID METHOD TARGET STATUS BYTES", status 0 for
  /reset and /hang which never answer), optionally on a fixed port so it can
  be restarted in place. It is a `lbtest.Backend`, so the harness stops it
  after the test and reports it if it died unexpectedly.
- `config()`: an lb config text with the fault-tolerance keys lbtest's
  config_yaml() does not write (health, passive, retries, retry_budget,
  queue, per-server max_conns, timeouts.queue).
- counting: POST ids over several post logs, requests per backend from the
  --log lines, lb's stderr lines matching a pattern.
- `timed_request()` and `Concurrent`: requests with their duration, and
  requests started in order from threads.
"""
import collections
import os
import re
import threading
import time

import lbtest as T
from lbtest import check


class LoggedBackend(T.Backend):
    """lb-backend with --log and --post-log FILE (shared by several backends
    when `post_log` is given, else its own file in the work directory)."""

    def __init__(self, ident, port=0, post_log=None, workdir=None):
        workdir = workdir or T.tmpdir("backend-" + ident)
        self.post_log = post_log or os.path.join(workdir, "posts-%s.log" % ident)
        argv = [T.BACKEND_BIN, "--listen", "%s:%d" % (T.HOST, port), "--id", ident, "--log",
                "--post-log", self.post_log]
        T.Proc.__init__(self, argv, "backend-" + ident, workdir)
        self.ident = ident

        def ready():
            if not self.alive():
                raise T.TestFailure("lb-backend %s exited %s:\n%s" % (
                    ident, self.proc.returncode, self.tail()))
            return re.search(rb"listening on 127\.0\.0\.1:(\d+)", self.stderr())
        m = T.wait_for(ready, 10, "lb-backend %s to listen" % ident)
        self.port = int(m.group(1))
        self.address = "%s:%d" % (T.HOST, self.port)
        T.wait_for(lambda: T.port_accepts(self.port), 10, "lb-backend %s to accept" % ident)

    def requests(self, method=None, path=None):
        """The --log lines of requests it read: [(method, target, status)]."""
        out = []
        for line in self.stderr().decode(errors="replace").splitlines():
            f = line.split(" ")
            if len(f) != 5 or f[0] != self.ident:
                continue
            if method and f[1] != method:
                continue
            if path and f[2].split("?")[0] != path:
                continue
            out.append((f[1], f[2], int(f[3])))
        return out

    def restart(self):
        """SIGKILL, then a new lb-backend on the same port and post log.
        Returns the new LoggedBackend."""
        self.kill()
        self.checked = True  # killed on purpose
        return LoggedBackend(self.ident, self.port, self.post_log)


def start_backends(n, prefix="b", shared_post_log=None):
    return [LoggedBackend("%s%d" % (prefix, i + 1), post_log=shared_post_log)
            for i in range(n)]


def post_ids(backends):
    """Counter of the X-Request-Id of every POST the backends logged (over
    their post logs, each file read once)."""
    counts = collections.Counter()
    for path in sorted({b.post_log for b in backends}):
        try:
            with open(path) as f:
                counts.update(l.rstrip("\n") for l in f if l.strip())
        except FileNotFoundError:
            pass
    return counts


def deliveries(backends, method, path):
    """How many requests `method path` the backends read, all together."""
    return sum(len(b.requests(method, path)) for b in backends)


def stderr_count(lb, pattern):
    return len(re.findall(pattern.encode() if isinstance(pattern, str) else pattern, lb.stderr()))


def _flow(d):
    return "{ " + ", ".join("%s: %s" % (k, _flow(v) if isinstance(v, dict) else
                                        ("true" if v is True else "false" if v is False else v))
                            for k, v in d.items()) + " }"


def config(port, servers, workers=1, timeouts=None, **backend):
    """An lb config on 127.0.0.1:port with one backend "app".

    servers: Backends, FakeServers, "host:port" strings, or dicts with
    address and any per-server key (id, weight, max_conns). A Backend's id is
    its ident. backend: further keys of the backend, dicts written as YAML
    flow maps (passive={...}, retry_budget={...}, health={...}, retries=0,
    queue=1, keepalive=...)."""
    t = {"drain": "5s", "connect": "1s"}
    t.update(timeouts or {})
    lines = ["# written by tests/e2e/failover_lib.py",
             "workers: %d" % workers,
             "listen:",
             "  - address: %s:%d" % (T.HOST, port),
             "log: { access: stdout }",
             "timeouts: %s" % _flow(t),
             "backends:",
             "  app:"]
    for k, v in backend.items():
        if v is not None:
            lines.append("    %s: %s" % (k, _flow(v) if isinstance(v, dict) else v))
    lines.append("    servers:")
    for s in servers:
        if isinstance(s, T.Backend):
            s = {"address": s.address, "id": s.ident}
        elif isinstance(s, T.FakeServer):
            s = {"address": s.address}
        elif isinstance(s, str):
            s = {"address": s}
        lines.append("      - %s" % _flow(s))
    return "\n".join(lines) + "\n"


def start_lb(servers, **kw):
    return T.start_lb_text(lambda port: config(port, servers, **kw))


def closed_port():
    """A loopback address nobody listens on (connects are refused)."""
    return "%s:%d" % (T.HOST, T.free_port())


def timed_request(port, method="GET", target="/", headers=None, body=None, timeout=10.0):
    """(response or exception text, seconds it took)."""
    t0 = time.monotonic()
    try:
        r = T.request(port, method, target, headers=headers, body=body, timeout=timeout)
    except (OSError, EOFError, T.TestFailure) as e:
        r = "%s: %s" % (type(e).__name__, e)
    return r, time.monotonic() - t0


def status_of(r):
    return r.status if isinstance(r, T.Response) else r


class Concurrent:
    """Requests sent from threads, started in the order of start() calls
    (each start waits `gap` seconds after the previous one, so lb sees them
    in that order). join() returns [(response or error text, seconds)]."""

    def __init__(self, port, gap=0.1):
        self.port = port
        self.gap = gap
        self.results = []
        self.threads = []

    def start(self, method="GET", target="/", timeout=10.0):
        i = len(self.threads)
        self.results.append(None)

        def run():
            self.results[i] = timed_request(self.port, method, target, timeout=timeout)
        t = threading.Thread(target=run, daemon=True)
        if self.threads:
            time.sleep(self.gap)
        self.threads.append(t)
        t.start()
        return i

    def join(self, timeout=15):
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        check(all(r is not None for r in self.results), "concurrent requests did not finish")
        return self.results


def served_by(port, n, target="/"):
    """n GETs, each on a fresh connection: ([server ids], [statuses])."""
    ids, statuses = [], []
    for _ in range(n):
        r = T.request(port, "GET", target)
        statuses.append(r.status)
        ids.append(r.header("x-backend-id"))
    return ids, statuses
