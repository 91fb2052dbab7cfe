#!/usr/bin/env python3
"""Active health checks end to end: a server whose /health fails is taken
out within fall x interval + timeout and gets no traffic; it comes back only
after rise successes; a /health that flips every check changes nothing; a
server killed with SIGKILL under a steady GET loop costs no request; tcp
checks; `initial: down`; every server down answers 503 at once; and lb's fd
count stays flat over thousands of checks."""
import re
import threading
import time

import lbtest as T
from lbtest import check, check_eq

INTERVAL, TIMEOUT, RISE, FALL = 0.2, 0.2, 2, 3
HEALTH = "{ interval: 200ms, timeout: 200ms, rise: 2, fall: 3 }"
SLACK = 0.6  # scheduling, a loaded machine, the sanitizer build


def config(port, servers, health=HEALTH, workers=2, extra_backends=""):
    """An lb config with one backend "app" over `servers`: a list of
    (id, address) pairs, checked as `health` says."""
    lines = ["workers: %d" % workers,
             "listen:",
             "  - address: 127.0.0.1:%d" % port,
             "log: { access: stdout }",
             "timeouts: { drain: 5s, connect: 1s }",
             "backends:",
             "  app:",
             "    health: %s" % health,
             "    servers:"]
    for ident, address in servers:
        lines.append("      - { address: %s, id: %s }" % (address, ident))
    return "\n".join(lines) + "\n" + extra_backends


def start(servers, **kw):
    return T.start_lb_text(lambda port: config(port, servers, **kw))


def ids(backends):
    return [(b.ident, b.address) for b in backends]


def set_health(backend, state):
    r = T.request(backend.port, "POST", "/admin/health?state=%s" % state, body=b"")
    check_eq(r.status, 200, "POST /admin/health?state=%s on %s" % (state, backend.ident))


def served_by(port, n):
    """n GETs, each on a fresh connection: {server id: count}."""
    counts = {}
    for i in range(n):
        r = T.request(port, "GET", "/")
        check_eq(r.status, 200, "status of request %d" % i)
        sid = r.header("x-backend-id")
        counts[sid] = counts.get(sid, 0) + 1
    return counts


def change_line(lb, ident, state):
    """lb's log line saying server `ident` went `state` (UP/DOWN), or None."""
    m = re.search(rb"[^\n]*server " + re.escape(ident.encode()) + rb" [^\n]*is " +
                  state.encode() + rb":[^\n]*", lb.stderr())
    return m.group(0).decode() if m else None


def wait_change(lb, ident, state, timeout):
    """Waits for the log line; returns (seconds waited, line)."""
    t0 = time.monotonic()
    line = T.wait_for(lambda: change_line(lb, ident, state), timeout,
                      "lb to log server %s %s" % (ident, state), interval=0.005)
    return time.monotonic() - t0, line


def changes(lb, ident):
    return re.findall(rb"server " + re.escape(ident.encode()) + rb" [^\n]*is (?:UP|DOWN)",
                      lb.stderr())



# ---- tests ---------------------------------------------------------------------


def test_down_then_up():
    bs = T.start_backends(3)
    lb = start(ids(bs))
    check_eq(sorted(served_by(lb.port, 30)), ["b1", "b2", "b3"], "all three serve at first")

    # /health answers 503: down after `fall` failed checks, and no traffic.
    set_health(bs[1], "down")
    took, line = wait_change(lb, "b2", "DOWN", FALL * INTERVAL + TIMEOUT + SLACK)
    check("status 503" in line and "3 failed checks" in line, "the reason is logged: %s" % line)
    # three checks in a row: at least two intervals after the first one
    check(took >= (FALL - 1) * INTERVAL - 0.05, "down after only %.3fs" % took)
    counts = served_by(lb.port, 60)
    check("b2" not in counts, "b2 still served requests while down: %r" % counts)

    # Back: no traffic until `rise` successes, then its share again.
    t_up = time.monotonic()
    set_health(bs[1], "up")
    early = {}
    while time.monotonic() - t_up < (RISE - 1) * INTERVAL - 0.05:
        for sid, n in served_by(lb.port, 3).items():
            early[sid] = early.get(sid, 0) + n
    check("b2" not in early, "b2 served before %d successful checks: %r" % (RISE, early))
    _, line = wait_change(lb, "b2", "UP", RISE * INTERVAL + TIMEOUT + SLACK)
    took = time.monotonic() - t_up  # from the flip
    check(took >= (RISE - 1) * INTERVAL - 0.05, "up after only %.3fs" % took)
    check("2 successful checks" in line, "the reason is logged: %s" % line)
    counts = served_by(lb.port, 30)
    check(counts.get("b2", 0) >= 8, "b2 gets its share again: %r" % counts)
    check_eq(len(changes(lb, "b2")), 2, "exactly one DOWN and one UP for b2")
    check_eq(len(changes(lb, "b1")) + len(changes(lb, "b3")), 0, "b1 and b3 never changed")


def test_flapping_health_changes_nothing():
    # A /health that answers 200 and 503 in turn: never rise=2 successes or
    # fall=3 failures in a row, so the server keeps its state.
    lock = threading.Lock()
    seen = {"health": 0}

    def respond(head, body):
        if head.startswith(b"GET /health "):
            with lock:
                n = seen["health"]
                seen["health"] += 1
            status = b"200 OK" if n % 2 == 0 else b"503 Unavailable"
            return b"HTTP/1.1 %s\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok" % status
        return b"HTTP/1.1 200 OK\r\nX-Backend-Id: flap\r\nContent-Length: 2\r\n\r\nok"

    fake = T.FakeServer(T.http_handler(respond))
    b1 = T.Backend("b1")
    lb = start([("b1", b1.address), ("flap", fake.address)])
    time.sleep(16 * INTERVAL)
    with lock:
        n = seen["health"]
    check(n >= 10, "only %d checks of the flapping server in %.1fs" % (n, 16 * INTERVAL))
    check_eq(changes(lb, "flap"), [], "state changes of the flapping server")
    counts = served_by(lb.port, 20)
    check(counts.get("flap", 0) >= 6, "the flapping server keeps its share (%r)" % counts)


class GetLoop:
    """GETs through lb, one after another on fresh connections, until stop()."""

    def __init__(self, port):
        self.port = port
        self.results = []  # (time, status or error text, server id)
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            t = time.monotonic()
            try:
                r = T.request(self.port, "GET", "/", timeout=5)
                self.results.append((t, r.status, r.header("x-backend-id")))
            except Exception as e:  # counted as a failed GET
                self.results.append((t, "%s: %s" % (type(e).__name__, e), None))

    def stop(self):
        self.stopping = True
        self.thread.join(10)
        return self.results


def test_kill9_under_load_then_restart():
    bs = T.start_backends(3)
    lb = start(ids(bs))
    loop = GetLoop(lb.port)
    time.sleep(0.5)
    victim = bs[1]
    port = victim.port
    victim.kill()
    victim.checked = True  # killed on purpose
    t_kill = time.monotonic()
    took, line = wait_change(lb, "b2", "DOWN", FALL * INTERVAL + TIMEOUT + SLACK)
    check("connection refused" in line, "the reason is logged: %s" % line)
    time.sleep(1.0)

    # Restarted on the same port: traffic only after rise successes.
    again = T.Backend("b2", port=port)
    t_back = time.monotonic()
    took_up, line = wait_change(lb, "b2", "UP", RISE * INTERVAL + TIMEOUT + SLACK + 1)
    time.sleep(0.5)
    results = loop.stop()
    check(again.alive(), "the restarted backend runs")

    failed = [r for r in results if r[1] != 200]
    check(len(results) > 50, "only %d GETs in the loop" % len(results))
    check(not failed, "%d of %d GETs failed around the kill (first: %r); the lead's retries "
          "should make this 0" % (len(failed), len(results), failed[:3]))
    served_back = [r for r in results if r[2] == "b2" and r[0] >= t_kill]
    check(all(r[0] >= t_back + (RISE - 1) * INTERVAL - 0.05 for r in served_back),
          "b2 served before its rise checks passed")
    check(served_back, "b2 serves again after its restart")


def test_tcp_check():
    bs = T.start_backends(2)
    lb = start(ids(bs), health="{ type: tcp, interval: 200ms, timeout: 200ms, rise: 2, fall: 3 }")
    # /health says 503, but a tcp check only connects: still up.
    set_health(bs[1], "down")
    time.sleep(6 * INTERVAL)
    check_eq(changes(lb, "b2"), [], "a tcp check ignores /health")
    port = bs[1].port
    bs[1].kill()
    bs[1].checked = True
    took, line = wait_change(lb, "b2", "DOWN", FALL * INTERVAL + TIMEOUT + SLACK)
    check("connection refused" in line, "the reason is logged: %s" % line)
    check_eq(served_by(lb.port, 10), {"b1": 10}, "traffic while b2 is down")
    T.Backend("b2", port=port)
    took, line = wait_change(lb, "b2", "UP", RISE * INTERVAL + TIMEOUT + SLACK)
    check("connected" in line, "the reason is logged: %s" % line)
    counts = served_by(lb.port, 20)
    check(counts.get("b2", 0) >= 5, "traffic once b2 is up: %r" % counts)


def test_initial_down_and_all_down():
    bs = T.start_backends(2)
    health = "{ interval: 200ms, timeout: 200ms, rise: 2, fall: 3, initial: down }"
    lb = start(ids(bs), health=health)
    # Nothing is up before two checks passed: 503 at once, no connect.
    t0 = time.monotonic()
    r = T.request(lb.port, "GET", "/")
    if not change_line(lb, "b1", "UP") and not change_line(lb, "b2", "UP"):
        check_eq(r.status, 503, "status before any server came up")
        check(time.monotonic() - t0 < 0.5, "the 503 came at once")
    for b in ("b1", "b2"):
        wait_change(lb, b, "UP", RISE * INTERVAL + TIMEOUT + SLACK + INTERVAL)
    check_eq(sorted(served_by(lb.port, 10)), ["b1", "b2"], "both serve once up")

    # Every server down: 503 at once.
    set_health(bs[0], "down")
    set_health(bs[1], "down")
    for b in ("b1", "b2"):
        wait_change(lb, b, "DOWN", FALL * INTERVAL + TIMEOUT + SLACK)
    for i in range(5):
        t0 = time.monotonic()
        r = T.request(lb.port, "GET", "/")
        check_eq(r.status, 503, "status with every server down")
        check(time.monotonic() - t0 < 0.5, "the 503 came at once")


def test_fd_count_stable():
    # Checks every 2ms of an up server, a 503 one and a port nobody listens
    # on, plus tcp checks: thousands of check connections, and lb's fd count
    # (listeners, loops, log) must not move.
    bs = T.start_backends(2)
    set_health(bs[1], "down")
    refused = T.free_port()
    fast = "{ interval: 2ms, timeout: 100ms, rise: 1, fall: 1 }"
    tcp = ("  tcp:\n"
           "    health: { type: tcp, interval: 2ms, timeout: 100ms }\n"
           "    servers: [ { address: %s }, { address: 127.0.0.1:%d } ]\n"
           "routes:\n  - { backend: app }\n" % (bs[0].address, refused))
    lb = start([("up", bs[0].address), ("sick", bs[1].address),
                ("gone", "127.0.0.1:%d" % refused)], health=fast, extra_backends=tcp)
    wait_change(lb, "sick", "DOWN", 2)
    wait_change(lb, "gone", "DOWN", 2)

    def low(samples=40):
        """The fewest fds over a few samples: check sockets come and go."""
        counts = []
        for _ in range(samples):
            counts.append(T.fd_count(lb.pid))
            time.sleep(0.005)
        return min(counts), max(counts)

    first_low, first_high = low()
    time.sleep(4)
    last_low, last_high = low()
    # 5 servers checked: at most 5 check sockets open at once.
    check(last_low <= first_low, "lb's fds grew from %d to %d over thousands of checks" % (
        first_low, last_low))
    check(last_high <= first_low + 5, "at most one socket per checked server: %d vs %d" % (
        last_high, first_low))
    check_eq(changes(lb, "up"), [], "the healthy server never changed")
    check("skipped" not in lb.stderr().decode(errors="replace"), "no local errors")
    lb.expect_clean_exit()


if __name__ == "__main__":
    T.run([
        test_down_then_up,
        test_flapping_health_changes_nothing,
        test_kill9_under_load_then_restart,
        test_tcp_check,
        test_initial_down_and_all_down,
        test_fd_count_stable,
    ])
