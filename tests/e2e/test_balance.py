#!/usr/bin/env python3
"""Distribution of requests over servers: roundrobin (even, weighted,
smooth), leastconn (in-flight counts, shared across workers), and failover
to the next server when one refuses connections."""
import threading
import time

import lbtest as T
from lbtest import check, check_eq


def served_by(port, n, target="/", pause=0.0):
    """Sends n requests, each on a fresh client connection; returns
    {server id: count} from the X-Backend-Id of each 200 answer."""
    counts = {}
    for i in range(n):
        r = T.request(port, "GET", target)
        check_eq(r.status, 200, "status of request %d" % i)
        sid = r.header("x-backend-id")
        counts[sid] = counts.get(sid, 0) + 1
        if pause:
            time.sleep(pause)
    return counts


def test_roundrobin_one_worker_exact():
    bs = T.start_backends(3)
    lb = T.start_lb(bs, workers=1)
    counts = served_by(lb.port, 300)
    check_eq(counts, {"b1": 100, "b2": 100, "b3": 100}, "300 requests, one worker")


def test_roundrobin_two_workers():
    # Each worker keeps its own round-robin state (nothing shared on the hot
    # path), and the kernel spreads the fresh connections over the workers'
    # SO_REUSEPORT listeners as it likes. A worker that handled k requests
    # gave every server floor(k/3) or ceil(k/3) of them, so each server's
    # total is off 300/3 = 100 by less than one per worker: with W workers
    # a server gets 100 +- W, whatever the kernel's split.
    workers = 2
    bs = T.start_backends(3)
    lb = T.start_lb(bs, workers=workers)
    counts = served_by(lb.port, 300)
    check_eq(sum(counts.values()), 300, "all answered")
    check_eq(sorted(counts), ["b1", "b2", "b3"], "every server used")
    for sid, n in counts.items():
        check(abs(n - 100) <= workers, "%s got %d of 300 (%r)" % (sid, n, counts))


def test_weighted_exact():
    bs = T.start_backends(2)
    lb = T.start_lb([(bs[0], 3), (bs[1], 1)], workers=1)
    counts = served_by(lb.port, 400)
    check_eq(counts, {"b1": 300, "b2": 100}, "weights 3:1 over 400 requests")


def test_weighted_smooth_order():
    # nginx's smooth weighted round robin: 5,1,1 interleaves a a b a c a a,
    # it does not send the heavy server's 5 in a burst.
    bs = T.start_backends(3)
    lb = T.start_lb([(bs[0], 5), (bs[1], 1), (bs[2], 1)], workers=1)
    order = []
    c = T.Conn(lb.port)
    for _ in range(14):
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        order.append(c.read_response().header("x-backend-id"))
    want = ["b1", "b1", "b2", "b1", "b3", "b1", "b1"] * 2
    check_eq(order, want, "pick order (keep-alive client: one pick per request)")


def test_leastconn_avoids_busy_servers():
    # Two long requests occupy two of three servers; leastconn then sends
    # everything else to the idle one. Two workers: the in-flight counts are
    # shared across workers, so this holds whichever worker gets each
    # connection.
    bs = T.start_backends(3)
    lb = T.start_lb(bs, workers=2, balance="leastconn")
    slow = []
    for _ in range(2):
        c = T.Conn(lb.port, timeout=15)
        c.send(b"GET /delay?ms=4000 HTTP/1.1\r\nHost: x\r\n\r\n")
        slow.append(c)
        time.sleep(0.3)  # let lb pick and connect before the next one
    t0 = time.monotonic()
    # A short pause between the quick requests: lb sends the last bytes of
    # an answer a moment before it stops counting the exchange as active,
    # and the next request may reach the other worker within that moment.
    counts = served_by(lb.port, 30, pause=0.02)
    elapsed = time.monotonic() - t0
    check(elapsed < 3.0, "quick requests took %.1fs, the slow ones may have ended" % elapsed)
    slow_ids = set()
    for c in slow:
        r = c.read_response()
        check_eq(r.status, 200, "slow request")
        slow_ids.add(r.header("x-backend-id"))
    check_eq(len(slow_ids), 2, "the two slow requests went to two servers (%r)" % slow_ids)
    idle = ({"b1", "b2", "b3"} - slow_ids).pop()
    check_eq(counts, {idle: 30}, "quick requests while %r were busy" % sorted(slow_ids))
    # once nothing is in flight, leastconn shares equal servers evenly
    counts = served_by(lb.port, 30)
    for sid in ("b1", "b2", "b3"):
        check(counts.get(sid, 0) >= 5, "idle servers shared: %r" % counts)


def test_leastconn_slow_server_gets_fewer():
    # One server (a Python fake) takes 200 ms per answer, two lb-backends
    # answer at once; 6 clients each send 20 requests. Roundrobin would give
    # the slow one a third (40); leastconn sees its requests pile up.
    fast = T.start_backends(2)
    slow = T.FakeServer(T.http_handler(
        lambda h, b: b"HTTP/1.1 200 OK\r\nX-Backend-Id: slow\r\nContent-Length: 4\r\n\r\nslow",
        delay=0.2))
    lb = T.start_lb([slow] + fast, workers=2, balance="leastconn")
    counts = {}
    errors = []
    lock = threading.Lock()

    def client():
        try:
            c = T.Conn(lb.port, timeout=15)
            for _ in range(20):
                c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                r = c.read_response()
                with lock:
                    sid = r.header("x-backend-id")
                    counts[sid] = counts.get(sid, 0) + 1
        except Exception as e:  # reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=client) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    check(not errors, "client errors: %r" % errors)
    check_eq(sum(counts.values()), 120, "all answered: %r" % counts)
    check(counts.get("slow", 0) <= 20, "slow server got %d of 120 (%r)" % (
        counts.get("slow", 0), counts))


def test_failover_to_next_server():
    # One server refuses connections: every request still succeeds on the
    # others (a refused connect is retried on the next server).
    bs = T.start_backends(2)
    dead = "127.0.0.1:%d" % T.free_port()
    lb = T.start_lb([dead] + bs, workers=1)
    counts = served_by(lb.port, 30)
    check_eq(sum(counts.values()), 30, "answered")
    check_eq(sorted(counts), ["b1", "b2"], "live servers: %r" % counts)
    for line in lb.wait_access(30):
        x = T.parse_access(line)
        check_eq(x["status"], "200", "log status")
        check(x["server"] != dead, "log names the dead server: %r" % line)


if __name__ == "__main__":
    T.run([test_roundrobin_one_worker_exact, test_roundrobin_two_workers, test_weighted_exact,
           test_weighted_smooth_order, test_leastconn_avoids_busy_servers,
           test_leastconn_slow_server_gets_fewer, test_failover_to_next_server])
