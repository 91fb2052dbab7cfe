#!/usr/bin/env python3
"""Failover end to end: what lb does when a server refuses, hangs, resets or
is full, and that a non-idempotent request is never delivered twice.

- connect refused: GETs and POSTs go to another server, every one 200, every
  POST delivered once;
- a hung server (`/hang`) gives 504 after timeouts.server, is not retried,
  and two in a row eject it (passive.failures: 2);
- a server that reads a POST then resets (`/reset`): 502, the POST logged
  exactly once; a GET to /reset is retried, on at most 1 + retries servers;
- `retries: 0`: a single attempt; the retry budget caps retries per second,
  connect failures included;
- max_conns with a queue: a request waits for the slot, a full queue or an
  expired `timeouts.queue` answers 503;
- every server down (ejected, or `initial: down`): 503 with Retry-After at
  once, no connect attempt;
- a pooled keep-alive connection the server closed: a GET is replayed on a
  fresh connection and succeeds, a POST is not (502, delivered once).

The sample backends run with --post-log (POST ids, for duplicate counts) and
--log (one line per request read, to count deliveries)."""
import re
import threading
import time

import failover_lib as F
import lbtest as T
from lbtest import check, check_eq

NO_PASSIVE = {"failures": 0}


def access(lb, n):
    return [T.parse_access(l) for l in lb.wait_access(n)]


def post(port, rid, target="/sink", body=b"payload", timeout=10.0):
    return T.request(port, "POST", target, headers=[("X-Request-Id", rid)], body=body,
                     timeout=timeout)


# ---- the sample backend's fault endpoints, directly ----------------------------


def test_backend_fault_endpoints():
    b = F.LoggedBackend("b1")
    # /reset: the body is read whole, then RST (no response byte).
    c = T.Conn(b.port, timeout=5)
    c.send(T.build_request("POST", "/reset", [("X-Request-Id", "r-1")], b"x" * 100000))
    try:
        got = c.sock.recv(100)
        check(False, "/reset answered %r instead of resetting" % got)
    except ConnectionResetError:
        pass
    # /hang: nothing within a second, and the connection stays open.
    c = T.Conn(b.port, timeout=1)
    c.send(T.build_request("GET", "/hang"))
    check(not c.is_closed(1.0), "/hang answered or closed")
    c.close()
    # The post log: POSTs with an id, one line each; other methods are not logged.
    check_eq(post(b.port, "p-1").status, 200, "POST /sink")
    check_eq(T.request(b.port, "PUT", "/sink", headers=[("X-Request-Id", "put-1")],
                       body=b"x").status, 200, "PUT /sink")
    check_eq(T.request(b.port, "POST", "/sink", body=b"x").status, 200, "POST without an id")
    T.wait_for(lambda: b.requests("GET", "/hang"), 5, "the backend to log /hang")
    check_eq(dict(F.post_ids([b])), {"r-1": 1, "p-1": 1}, "post log")
    # a hung connection is closed once its peer closed: no fd left behind
    T.wait_for(lambda: not T.established_to(b.port), 5, "no connection left to the backend")


# ---- connect failures -------------------------------------------------------------


def test_connect_refused_redispatch():
    bs = F.start_backends(2)
    dead = F.closed_port()
    # passive off so the dead server keeps being picked: every third request
    # meets the refused connect and must be redispatched.
    lb = F.start_lb([bs[0], {"address": dead, "id": "dead"}, bs[1]], passive=NO_PASSIVE,
                    retry_budget={"percent": 100, "min_per_second": 100})
    ids = []
    for i in range(30):
        r = T.request(lb.port, "GET", "/")
        check_eq(r.status, 200, "GET %d" % i)
        ids.append(r.header("x-backend-id"))
        r = post(lb.port, "refused-%d" % i)
        check_eq(r.status, 200, "POST %d" % i)
    check_eq(sorted(set(ids)), ["b1", "b2"], "servers that answered")
    refused = F.stderr_count(lb, r"server %s: [^\n]*[Cc]onnection refused" % re.escape(dead))
    check(refused >= 15, "only %d connects to the dead server: it was not picked" % refused)
    counts = F.post_ids(bs)
    check_eq(len(counts), 30, "POST ids logged")
    check_eq(max(counts.values()), 1, "deliveries of the most delivered POST")
    check_eq({l["status"] for l in access(lb, 60)}, {"200"}, "statuses in the access log")


# ---- a hung server: 504, no retry, passive ejection --------------------------------


def test_hung_backend_504_and_ejection():
    bs = F.start_backends(3)
    lb = F.start_lb(bs, timeouts={"server": "1s"},
                    passive={"failures": 2, "base_ejection": "30s"})
    # One worker, smooth round robin over equal weights: b1 b2 b3 b1 ... Line
    # up so that the next pick is b1.
    for _ in range(3):
        if T.request(lb.port, "GET", "/").header("x-backend-id") == "b3":
            break
    else:
        check(False, "round robin never picked b3")
    t0 = time.monotonic()
    r1, took1 = F.timed_request(lb.port, "GET", "/hang")           # b1, 1st failure
    ok = [T.request(lb.port, "GET", "/").header("x-backend-id") for _ in range(2)]  # b2 b3
    r2, took2 = F.timed_request(lb.port, "GET", "/hang")           # b1, 2nd: ejected
    for r, took in ((r1, took1), (r2, took2)):
        check_eq(F.status_of(r), 504, "status of GET /hang")
        check(0.9 <= took < 2.5, "504 after %.2fs, timeouts.server is 1s" % took)
    check_eq(ok, ["b2", "b3"], "servers between the two hangs")
    lines = [l for l in access(lb, 7) if l["status"] == "504"]
    check_eq([l["server"] for l in lines], ["b1", "b1"], "servers of the 504s")
    # A timeout is not retried: each /hang reached exactly one server.
    check_eq(F.deliveries(bs, "GET", "/hang"), 2, "GET /hang deliveries")
    ejected = re.search(rb"[^\n]*server b1[^\n]*ejected[^\n]*", lb.stderr())
    check(ejected, "no 'ejected' log line for b1:\n%s" % lb.tail())
    ids, statuses = F.served_by(lb.port, 12)
    check_eq(set(statuses), {200}, "statuses after the ejection")
    check("b1" not in ids, "the ejected b1 still served: %r" % ids)
    check(time.monotonic() - t0 < 30, "the ejection outlived the test")


# ---- a reset after the request was read -----------------------------------------------


def test_reset_after_post_no_duplicate():
    bs = F.start_backends(3)
    lb = F.start_lb(bs, passive=NO_PASSIVE, workers=2)
    # POST read whole (small and 20 KiB bodies), then RST: 502, never resent.
    for i, size in enumerate((7, 20 * 1024, 7, 7)):
        r = post(lb.port, "reset-%d" % i, "/reset", b"p" * size)
        check_eq(r.status, 502, "POST /reset %d" % i)
    counts = F.post_ids(bs)
    check_eq(dict(counts), {"reset-%d" % i: 1 for i in range(4)}, "POST deliveries")
    check_eq(F.deliveries(bs, "POST", "/reset"), 4, "POST /reset read by the backends")
    # PATCH is not idempotent either: one delivery.
    r = T.request(lb.port, "PATCH", "/reset", body=b"x")
    check_eq(r.status, 502, "PATCH /reset")
    check_eq(F.deliveries(bs, "PATCH", "/reset"), 1, "PATCH /reset deliveries")

    # An idempotent GET (no response byte came) is retried on other servers,
    # at most `retries` (2) times: 3 deliveries, then 502.
    r = T.request(lb.port, "GET", "/reset")
    check_eq(r.status, 502, "GET /reset when every server resets")
    n = F.deliveries(bs, "GET", "/reset")
    check(1 < n <= 3, "GET /reset delivered %d times (want 2..1+retries=3)" % n)
    check_eq(sorted(b.ident for b in bs if b.requests("GET", "/reset")),
             ["b1", "b2", "b3"][:n], "a retry goes to a server not tried yet")
    # PUT with a body: idempotent, its body is still buffered, so retried too.
    r = T.request(lb.port, "PUT", "/reset", body=b"u" * 1000)
    check_eq(r.status, 502, "PUT /reset")
    check(1 < F.deliveries(bs, "PUT", "/reset") <= 3, "PUT /reset deliveries")


def test_retries_zero():
    bs = F.start_backends(2)
    lb = F.start_lb([bs[0], {"address": F.closed_port(), "id": "dead"}, bs[1]], retries=0,
                    passive=NO_PASSIVE)
    statuses = [T.request(lb.port, "GET", "/").status for _ in range(9)]
    # b1 dead b2 b1 dead b2 ...: one request in three meets the refused
    # connect, and with retries 0 it is not redispatched.
    check_eq(statuses, [200, 502, 200] * 3, "statuses with retries 0")
    # GET /reset, on b1: the pooled connection from above. lb cannot tell a
    # reset after the request was read from a pooled connection the server
    # had closed, so it may replay once on a fresh connection (not a retry);
    # nothing more with retries 0.
    r = T.request(lb.port, "GET", "/reset")
    check_eq(r.status, 502, "GET /reset with retries 0")
    n = F.deliveries(bs, "GET", "/reset")
    check(1 <= n <= 2, "GET /reset delivered %d times with retries 0 (at most 1, plus 1 "
          "replay for a pooled connection)" % n)
    check_eq(len({b.ident for b in bs if b.requests("GET", "/reset")}), 1,
             "servers that got GET /reset with retries 0")


def test_pooled_replay_bounded():
    # A server that resets every connection after reading the request, with
    # several idle connections to it in lb's pool: the pooled-connection
    # replay is one more attempt on a fresh connection, not one per pooled
    # connection. Deliveries: at most 1 + 1 (replay) + retries.
    b = F.LoggedBackend("b1")
    lb = F.start_lb([b], keepalive=32, retries=0, passive=NO_PASSIVE)
    c = F.Concurrent(lb.port, gap=0.01)
    for _ in range(8):
        c.start("GET", "/delay?ms=300")
    check_eq({F.status_of(r) for r, _ in c.join()}, {200}, "statuses of the warm-up")
    T.wait_for(lambda: T.established_to(b.port) >= 8, 5, "8 pooled connections")
    r = T.request(lb.port, "GET", "/reset")
    check_eq(r.status, 502, "GET /reset")
    n = F.deliveries([b], "GET", "/reset")
    check(n <= 2, "one GET delivered %d times with retries 0 and 8 pooled connections: every "
          "pooled connection replayed it (%d 'idle keep-alive connection' log lines)" % (
              n, F.stderr_count(lb, r"idle keep-alive connection")))


def _read_then_close(s, fake):
    """A server that reads a request and closes (FIN) without answering."""
    buf = bytearray()
    req = T.recv_request(s, buf)
    if req is not None:
        fake.count()
        fake.methods.append(req[0].split(b" ", 1)[0].decode())


def test_retry_after_close_without_response():
    # The first server reads the request and closes its connection (EOF, not
    # RST) without a response byte: a GET goes to the next server and
    # succeeds; a POST gets 502 and was delivered once.
    fake = T.FakeServer(_read_then_close)
    fake.methods = []
    b = F.LoggedBackend("b1")
    lb = F.start_lb([fake, b], passive=NO_PASSIVE)
    r = T.request(lb.port, "GET", "/")       # round robin: the fake first
    check_eq(fake.methods, ["GET"], "the fake got the GET first")
    check_eq((r.status, r.header("x-backend-id")), (200, "b1"),
             "GET after the first server closed without a response")
    T.request(lb.port, "GET", "/")           # b1: the fake is next again
    r = post(lb.port, "fin-post", "/")
    check_eq(r.status, 502, "POST to a server that closed without a response")
    check_eq(fake.methods.count("POST"), 1, "POST deliveries to the fake")
    check_eq(dict(F.post_ids([b])), {}, "POSTs that reached b1")


def test_retry_budget():
    # percent 0, min_per_second 1: at most one retry per one-second window,
    # for connect failures as much as for resets.
    good = F.LoggedBackend("good")
    dead = F.closed_port()
    lb = F.start_lb([{"address": dead, "id": "dead"}, good], passive=NO_PASSIVE,
                    retry_budget={"percent": 0, "min_per_second": 1})
    t0 = time.monotonic()
    statuses = [T.request(lb.port, "GET", "/").status for _ in range(40)]
    took = time.monotonic() - t0
    # Round robin: every other request tries the dead server first.
    refused_first = 20
    retried = statuses.count(200) - 20
    windows = int(took) + 2  # one-second windows the burst can touch
    check_eq(len(statuses), statuses.count(200) + statuses.count(502), "only 200 and 502")
    check(1 <= retried <= windows,
          "%d of %d refused connects were retried within %.2fs (budget: 1 a second)" % (
              retried, refused_first, took))
    check_eq(F.stderr_count(lb, r"[Cc]onnection refused"), refused_first,
             "connects to the dead server (a retry never goes back to it)")

    # A second later the budget has room again.
    time.sleep(1.1)
    r = T.request(lb.port, "GET", "/")
    r2 = T.request(lb.port, "GET", "/")
    check_eq(sorted([r.status, r2.status]), [200, 200], "a retry in a fresh window")


# ---- max_conns and the queue ----------------------------------------------------------


def test_max_conns_queue():
    b = F.LoggedBackend("b1")
    srv = {"address": b.address, "id": "b1", "max_conns": 1}
    lb = F.start_lb([srv], queue=1, workers=2)
    # Two at once: the second waits for the slot, then succeeds.
    c = F.Concurrent(lb.port)
    c.start("GET", "/delay?ms=500")
    c.start("GET", "/delay?ms=500")
    (r1, t1), (r2, t2) = c.join()
    check_eq((F.status_of(r1), F.status_of(r2)), (200, 200), "both served")
    check(t2 >= 0.8, "the second did not wait for the slot (%.2fs)" % t2)
    check(t2 < 2.0, "the second waited %.2fs" % t2)
    # Three at once with queue 1: the third finds the queue full: 503 at once.
    c = F.Concurrent(lb.port)
    for _ in range(3):
        c.start("GET", "/delay?ms=500")
    (r1, t1), (r2, t2), (r3, t3) = c.join()
    check_eq([F.status_of(r) for r in (r1, r2, r3)], [200, 200, 503], "statuses")
    check(t3 < 0.3, "the 503 for a full queue took %.2fs" % t3)
    check_eq(r3.header("retry-after"), "1", "Retry-After of the 503")
    check(re.search(rb"queue full", lb.stderr()), "the full queue is logged")
    check_eq(len(b.requests("GET", "/delay")), 4, "requests the server got")


def test_queue_timeout():
    b = F.LoggedBackend("b1")
    srv = {"address": b.address, "id": "b1", "max_conns": 1}
    lb = F.start_lb([srv], queue=5, timeouts={"queue": "200ms"}, workers=2)
    c = F.Concurrent(lb.port)
    c.start("GET", "/delay?ms=1500")
    c.start("GET", "/")
    (r1, t1), (r2, t2) = c.join()
    check_eq(F.status_of(r1), 200, "the request holding the slot")
    check_eq(F.status_of(r2), 503, "the request that waited past timeouts.queue")
    check(0.18 <= t2 < 0.6, "503 after %.2fs, timeouts.queue is 200ms" % t2)
    check_eq(r2.header("retry-after"), "1", "Retry-After of the 503")
    check_eq(len(b.requests()), 1, "the server got only the first request")


# ---- every server down -------------------------------------------------------------------


def test_all_down_503_at_once():
    # Ports closed, passive ejection may take them all: after the first
    # failures, 503 at once with Retry-After and no connect attempt.
    dead = [F.closed_port() for _ in range(2)]
    lb = F.start_lb([{"address": a} for a in dead],
                    passive={"failures": 1, "base_ejection": "30s", "max_ejected_percent": 100})
    r = T.request(lb.port, "GET", "/")
    check_eq(r.status, 502, "the request that found both ports closed")
    T.wait_for(lambda: F.stderr_count(lb, "ejected") >= 2, 5, "both servers ejected")
    connects = F.stderr_count(lb, r"[Cc]onnection refused")
    for i in range(10):
        r, took = F.timed_request(lb.port, "GET", "/")
        check_eq(F.status_of(r), 503, "status %d with every server ejected" % i)
        check(took < 0.1, "the 503 took %.3fs" % took)
        check_eq(r.header("retry-after"), "1", "Retry-After")
    check_eq(F.stderr_count(lb, r"[Cc]onnection refused"), connects,
             "connect attempts while every server is ejected")

    # Active checks, `initial: down`: nothing up before `rise` checks pass.
    bs = F.start_backends(2)
    lb2 = F.start_lb(bs, health={"interval": "30s", "rise": 2, "initial": "down"})
    for i in range(5):
        r, took = F.timed_request(lb2.port, "POST", "/sink")
        check_eq(F.status_of(r), 503, "status with every server initially down")
        check(took < 0.1, "the 503 took %.3fs" % took)
        check_eq(r.header("retry-after"), "1", "Retry-After")
    check_eq([r for b in bs for r in b.requests() if r[1] != "/health"], [],
             "requests that reached a server (health checks aside)")


# ---- a pooled connection the server closed ---------------------------------------------


def test_stale_pool_after_restart():
    b = F.LoggedBackend("b1")
    lb = F.start_lb([b], keepalive=8)
    check_eq(T.request(lb.port, "GET", "/").status, 200, "first GET")
    T.wait_for(lambda: T.established_to(b.port) >= 1, 5, "a pooled connection")
    b = b.restart()
    for i in range(5):
        r = T.request(lb.port, "GET", "/")
        check_eq(r.status, 200, "GET %d after the restart" % i)
    r = post(lb.port, "after-restart")
    check_eq(r.status, 200, "POST after the restart")
    check_eq(dict(F.post_ids([b])), {"after-restart": 1}, "POST deliveries")


def _close_second_request(requests_seen):
    """A keep-alive server that answers the first request of a connection and
    closes the connection when the second one arrives, without answering:
    what a server does when its idle timeout fires as lb reuses the
    connection. Records (connection number, method) of every request."""
    lock = threading.Lock()
    conns = [0]

    def handler(s, fake):
        with lock:
            conns[0] += 1
            n = conns[0]
        buf = bytearray()
        first = True
        while True:
            req = T.recv_request(s, buf)
            if req is None:
                return
            with lock:
                requests_seen.append((n, req[0].split(b" ", 1)[0].decode()))
            if not first:
                return  # closed (FIN) without a byte of response
            first = False
            s.sendall(b"HTTP/1.1 200 OK\r\nX-Backend-Id: fake\r\nContent-Length: 2\r\n\r\nok")
    return handler


def test_stale_pool_race():
    seen = []
    fake = T.FakeServer(_close_second_request(seen))
    lb = F.start_lb([fake], keepalive=8, passive={"failures": 1, "base_ejection": "30s",
                                                 "max_ejected_percent": 100})
    check_eq(T.request(lb.port, "GET", "/").status, 200, "first GET (connection 1)")
    T.wait_for(lambda: T.established_to(fake.port) >= 1, 5, "a pooled connection")
    # GET on the pooled connection: the server closes it; lb replays the GET
    # on a fresh connection, which answers.
    r = T.request(lb.port, "GET", "/again")
    check_eq(r.status, 200, "GET on a connection the server closed")
    check_eq(seen, [(1, "GET"), (1, "GET"), (2, "GET")], "requests (connection, method)")
    check(b"(idle keep-alive connection)" in lb.stderr(), "the stale connection is logged")
    check(b"ejected" not in lb.stderr(), "a stale pooled connection counted against the server")
    # POST on the pooled connection (connection 2): the server read it, then
    # closed. It is never sent again: 502, delivered once.
    T.wait_for(lambda: T.established_to(fake.port) >= 1, 5, "a pooled connection")
    r = T.request(lb.port, "POST", "/p", headers=[("X-Request-Id", "stale-post")], body=b"once")
    check_eq(r.status, 502, "POST on a connection the server closed")
    check_eq([m for _, m in seen].count("POST"), 1, "POST deliveries")


if __name__ == "__main__":
    T.run([
        test_backend_fault_endpoints,
        test_connect_refused_redispatch,
        test_hung_backend_504_and_ejection,
        test_reset_after_post_no_duplicate,
        test_retries_zero,
        test_pooled_replay_bounded,
        test_retry_after_close_without_response,
        test_retry_budget,
        test_max_conns_queue,
        test_queue_timeout,
        test_all_down_503_at_once,
        test_stale_pool_after_restart,
        test_stale_pool_race,
    ], per_test_timeout=40)
