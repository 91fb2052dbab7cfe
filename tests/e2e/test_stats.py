#!/usr/bin/env python3
"""The stats endpoint (`stats: { listen: ... }`): GET /metrics answers
Prometheus text whose counters follow real traffic (connections accepted per
worker, accept wake-ups that found nothing, responses by status class,
spliced bodies, open connections) and server state (up, ejected, in
flight); anything else gets 404/405/400/431; a hostile scraper cannot hurt
the proxy; a stats address already in use stops lb at start."""
import re
import socket
import time

import lbtest as T
from lbtest import check, check_eq

HEALTH = "{ interval: 200ms, timeout: 200ms, rise: 1, fall: 1 }"


def config(port, stats_port, servers, workers=2, health=None):
    lines = ["workers: %d" % workers,
             "listen:",
             "  - address: 127.0.0.1:%d" % port,
             "log: { access: stdout }",
             "timeouts: { drain: 5s }",
             "stats:",
             "  listen: 127.0.0.1:%d" % stats_port,
             "backends:",
             "  app:"]
    if health:
        lines.append("    health: %s" % health)
    lines.append("    servers:")
    for b in servers:
        lines.append("      - { address: %s, id: %s }" % (b.address, b.ident))
    return "\n".join(lines) + "\n"


def start(servers, **kw):
    stats_port = T.free_port()
    lb = T.start_lb_text(lambda port: config(port, stats_port, servers, **kw))
    lb.stats_port = stats_port
    T.wait_for(lambda: T.port_accepts(stats_port), 5, "the stats port")
    return lb


def scrape(lb):
    """The samples of /metrics as {'name{labels}': value}."""
    r = T.request(lb.stats_port, "GET", "/metrics")
    check_eq(r.status, 200, "GET /metrics")
    check(r.header("content-type").startswith("text/plain; version=0.0.4"),
          "Content-Type %r" % r.header("content-type"))
    samples = {}
    for line in r.body.decode().split("\n"):
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([a-z_]+(?:\{[^}]*\})?) (\d+)", line)
        check(m is not None, "a malformed sample line: %r" % line)
        samples[m.group(1)] = int(m.group(2))
    return samples


def total(samples, name, **labels):
    """The sum of `name` over the samples whose labels include `labels`."""
    want = ['%s="%s"' % kv for kv in labels.items()]
    return sum(v for k, v in samples.items()
               if k.split("{")[0] == name and all(w in k for w in want))


def test_counters_follow_traffic():
    backends = T.start_backends(2)
    lb = start(backends)
    before = scrape(lb)  # lb's start was probed with a connection
    for _ in range(30):  # 30 connections, one request each
        check_eq(T.request(lb.port, "GET", "/").status, 200, "GET /")
    c = T.Conn(lb.port)  # one more connection: 10 requests, a 404 and a 503 from the server
    for target in ["/"] * 10 + ["/status?code=404", "/status?code=503"]:
        c.send(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % target.encode())
        c.read_response()
    c.close()
    bad = T.Conn(lb.port)  # and one refused by lb itself
    bad.send(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n")
    check_eq(bad.read_response().status, 400, "a bad request")
    bad.close()
    c = T.Conn(lb.port)
    c.send(b"GET /bytes?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % (4 * T.MiB))  # spliced
    check_eq(c.read_head().status, 200, "a large download")
    c.read_exact(4 * T.MiB)
    c.close()

    T.wait_for(lambda: scrape(lb)["lb_connections_open"] == 0, 5, "open connections to be 0")
    s = scrape(lb)
    check_eq(total(s, "lb_worker_connections_accepted_total") -
             total(before, "lb_worker_connections_accepted_total"), 33, "connections accepted")
    check_eq(total(s, "lb_worker_responses_total", code="2xx"), 41, "2xx responses")
    check_eq(total(s, "lb_worker_responses_total", code="4xx"), 2, "4xx responses (404, 400)")
    check_eq(total(s, "lb_worker_responses_total", code="5xx"), 1, "5xx responses")
    check_eq(total(s, "lb_worker_spliced_bodies_total"), 1, "spliced bodies")
    check_eq(total(s, "lb_worker_connections_open"), 0, "open per worker")
    for w in ("0", "1"):  # every worker reports, spread or not
        check('lb_worker_accept_eagain_total{worker="%s"}' % w in s, "worker %s's eagain" % w)
    # the counter is exposed, and SO_REUSEPORT keeps it near 0
    check(total(s, "lb_worker_accept_eagain_total") <= 3,
          "accept wake-ups that found nothing: %d" % total(s, "lb_worker_accept_eagain_total"))
    check_eq(s["lb_connections_max"], 10000, "max connections")
    for b in backends:
        check_eq(s['lb_server_up{backend="app",server="%s"}' % b.ident], 1, "%s up" % b.ident)
        check_eq(s['lb_server_requests_in_flight{backend="app",server="%s"}' % b.ident], 0,
                 "%s in flight" % b.ident)
    lb.expect_clean_exit()


def test_open_connections_and_in_flight():
    # Held connections show as open; a request waiting on a slow server
    # shows in flight on that server.
    b = T.start_backends(1)[0]
    lb = start([b], workers=1)
    held = [T.Conn(lb.port) for _ in range(5)]
    for c in held:
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        c.read_response()
    slow = T.Conn(lb.port)
    slow.send(b"GET /delay?ms=1500 HTTP/1.1\r\nHost: x\r\n\r\n")
    key = 'lb_server_requests_in_flight{backend="app",server="%s"}' % b.ident
    T.wait_for(lambda: scrape(lb)[key] == 1, 3, "one request in flight")
    s = scrape(lb)
    check_eq(s["lb_connections_open"], 6, "open connections")
    check_eq(s['lb_worker_connections_open{worker="0"}'], 6, "open on the worker")
    check_eq(slow.read_response().status, 200, "the slow request")
    check_eq(scrape(lb)[key], 0, "in flight after the response")


def test_server_down_shows():
    backends = T.start_backends(2)
    lb = start(backends, health=HEALTH)
    key = 'lb_server_up{backend="app",server="%s"}'
    T.wait_for(lambda: all(scrape(lb)[key % b.ident] == 1 for b in backends), 5, "both up")
    backends[1].kill()
    backends[1].checked = True
    T.wait_for(lambda: scrape(lb)[key % backends[1].ident] == 0, 5, "the killed server down")
    check_eq(scrape(lb)[key % backends[0].ident], 1, "the other still up")


def test_endpoint_refuses_what_it_does_not_serve():
    b = T.start_backends(1)[0]
    lb = start([b], workers=1)
    check_eq(T.request(lb.stats_port, "GET", "/").status, 404, "GET /")
    check_eq(T.request(lb.stats_port, "GET", "/metricsx").status, 404, "GET /metricsx")
    check_eq(T.request(lb.stats_port, "GET", "/metrics?x=1").status, 200, "a query is ignored")
    r = T.request(lb.stats_port, "POST", "/metrics", body=b"x")
    check_eq(r.status, 405, "POST")
    check_eq(r.header("allow"), "GET, HEAD", "Allow")
    c = T.Conn(lb.stats_port)
    c.send(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    r = c.read_response(method="HEAD")
    check_eq(r.status, 200, "HEAD")
    check(int(r.header("content-length")) > 500, "HEAD's Content-Length is the body's")
    check(c.is_closed(), "one request per connection")
    c = T.Conn(lb.stats_port)
    c.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\rX\r\n\r\n")
    check_eq(c.read_response().status, 400, "a bare CR")
    c = T.Conn(lb.stats_port)
    c.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 5000 + b"\r\n\r\n")
    check_eq(c.read_response().status, 431, "a head longer than 4 KiB")
    check_eq(T.request(lb.port, "GET", "/").status, 200, "the proxy")


def test_hostile_scrapers_do_not_hurt():
    # 100 connections that send nothing (the endpoint keeps 64, each for at
    # most 5 s): the proxy answers meanwhile, and once they are gone a scrape
    # works again.
    b = T.start_backends(1)[0]
    lb = start([b], workers=1)
    idle = []
    for _ in range(100):
        idle.append(socket.create_connection(("127.0.0.1", lb.stats_port), timeout=5))
    for _ in range(20):
        check_eq(T.request(lb.port, "GET", "/").status, 200, "the proxy while scrapers idle")
    time.sleep(0.2)
    open_ = 0
    for s in idle:
        s.setblocking(False)
        try:
            open_ += s.recv(1) != b""
        except BlockingIOError:
            open_ += 1
        except OSError:
            pass
    check(open_ <= 64, "%d idle scraper connections kept open (at most 64)" % open_)
    for s in idle:
        s.close()
    T.wait_for(lambda: T.request(lb.stats_port, "GET", "/metrics").status == 200, 8,
               "a scrape once the idle scrapers left")
    lb.expect_clean_exit()


class Named:
    """A server entry for config(): an address and an id."""

    def __init__(self, address, ident):
        self.address, self.ident = address, ident


def test_no_reset_when_the_client_sent_more():
    # A scrape with a body and pipelined bytes after it, by a slow reader,
    # of a large response (2,000 servers: ~500 KB): the whole response
    # arrives, then a clean close (unread bytes must not turn the close into
    # a reset that destroys the response still in flight).
    b = T.start_backends(1)[0]
    many = [b] + [Named("127.0.0.1:%d" % (20000 + i), "s%d" % i) for i in range(2000)]
    lb = start(many, workers=1)
    c = T.Conn(lb.stats_port, rcvbuf=16384)
    c.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" +
           b"x" * 100000 + b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 50)
    time.sleep(0.3)  # the response waits in lb while the client does not read
    try:
        r = c.read_response()
        check_eq(r.status, 200, "status")
        check(b"lb_connections_open" in r.body and r.body.endswith(b"\n"), "a whole body")
        check(len(r.body) > 300000, "a body of %d bytes" % len(r.body))
        check_eq(c.read_to_eof(), b"", "bytes after the response")
    except ConnectionResetError:
        raise T.TestFailure("the stats endpoint reset the connection")


def test_reset_mid_request_counted_and_logged():
    b = T.start_backends(1)[0]
    lb = start([b], workers=1)
    before = scrape(lb)
    c = T.Conn(lb.port)
    c.send(b"GET /delay?ms=800 HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.2)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    c.close()  # a reset while lb waits for the server
    none = 'lb_worker_responses_total{worker="0",code="none"}'
    T.wait_for(lambda: scrape(lb)[none] == before[none] + 1, 5, "the reset counted as none")
    check_eq(total(scrape(lb), "lb_worker_responses_total", code="2xx"),
             total(before, "lb_worker_responses_total", code="2xx"), "2xx unchanged")
    # and logged, as nginx does, with 499
    line = T.parse_access(lb.wait_access(1)[-1])
    check_eq((line["request"], line["status"]), ("GET /delay?ms=800", "499"), "the log line")
    # a client that leaves inside its head: 499 with no request
    c = T.Conn(lb.port)
    c.send(b"GET /half HTTP/1.1\r\nHo")
    time.sleep(0.1)
    c.close()
    line = T.parse_access(lb.wait_access(2)[-1])
    check_eq((line["request"], line["status"]), ("-", "499"), "the log line of a half head")


def test_out_of_descriptors_no_spin():
    # lb with 48 descriptors, all taken by idle clients: a scrape cannot be
    # accepted, and the stats thread must wait, not spin on its listener.
    import conformance_lib as L
    b = T.start_backends(1)[0]
    stats_port = T.free_port()
    lb = L.start_lb_conf([b], workers=1, prefix=["prlimit", "--nofile=48:48"],
                         extra_yaml="stats: { listen: 127.0.0.1:%d }\n" % stats_port,
                         timeouts={"client_header": "60s", "client_idle": "60s"})
    idle = [socket.create_connection(("127.0.0.1", lb.port), timeout=5) for _ in range(60)]
    time.sleep(0.3)
    scraper = socket.create_connection(("127.0.0.1", stats_port), timeout=5)
    scraper.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.3)
    cpu0 = L.cpu_seconds(lb.pid)
    time.sleep(1.5)
    cpu = L.cpu_seconds(lb.pid) - cpu0
    check(cpu < 0.5, "lb used %.2fs of CPU in 1.5s with no descriptor for a scrape" % cpu)
    pauses = lb.stderr().count(b"stats: accept:")
    check(pauses < 40, "%d 'stats: accept' log lines in about 2 s" % pauses)
    for s in idle:
        s.close()
    scraper.settimeout(5)
    data = b""
    while True:
        chunk = scraper.recv(65536)
        if not chunk:
            break
        data += chunk
    check(data.startswith(b"HTTP/1.1 200"), "the scrape once descriptors were free: %r" % data[:40])


def test_stats_address_taken():
    b = T.start_backends(1)[0]
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    stats_port = taken.getsockname()[1]
    port = T.free_port()
    lb = T.Lb(config(port, stats_port, [b], workers=1), port)
    rc = lb.wait(10)
    lb.checked = True
    check_eq(rc, 1, "lb's exit status with its stats address taken")
    check(b"stats: listen on 127.0.0.1:%d" % stats_port in lb.stderr(),
          "the reason in the log:\n%s" % lb.tail())
    taken.close()


if __name__ == "__main__":
    T.run([test_counters_follow_traffic, test_open_connections_and_in_flight,
           test_server_down_shows, test_endpoint_refuses_what_it_does_not_serve,
           test_hostile_scrapers_do_not_hurt, test_no_reset_when_the_client_sent_more,
           test_reset_mid_request_counted_and_logged, test_out_of_descriptors_no_spin,
           test_stats_address_taken])
