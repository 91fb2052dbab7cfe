#!/usr/bin/env python3
"""Basic proxying through lb: GET and POST, what lb forwards (X-Forwarded-*,
Via, hop-by-hop removal both ways, its own framing headers), routing, and the
access log line."""
import os

import lbtest as T
from lbtest import check, check_eq


def echo_head(resp):
    """The request head lb-backend's /echo saw (the response body up to the
    blank line), as a list of header lines after the request line."""
    head, sep, _ = resp.body.partition(b"\r\n\r\n")
    check(sep, "echo body has no head: %r" % resp.body)
    lines = head.decode().split("\r\n")
    return lines[0], lines[1:]


def header_values(lines, name):
    name = name.lower()
    return [l.split(":", 1)[1].strip() for l in lines if l.split(":", 1)[0].lower() == name]


def test_get_through_lb():
    b = T.start_backends(1)[0]
    lb = T.start_lb([b])
    r = T.request(lb.port, "GET", "/")
    check_eq(r.status, 200, "status")
    check_eq(r.body, b"hello from b1\n", "body")
    check_eq(r.header("x-backend-id"), "b1", "X-Backend-Id")
    check_eq(r.header("content-length"), "14", "Content-Length")
    check_eq(r.all("via"), ["1.1 lb"], "Via on the response")


def test_post_through_lb():
    b = T.start_backends(1)[0]
    lb = T.start_lb([b])
    body = bytes(range(256)) * 64
    r = T.request(lb.port, "POST", "/echo?q=1", body=body)
    check_eq(r.status, 200, "status")
    line, headers = echo_head(r)
    check_eq(line, "POST /echo?q=1 HTTP/1.1", "request line forwarded")
    check(r.body.endswith(b"\r\n\r\n" + body), "body forwarded intact")
    check_eq(header_values(headers, "content-length"), [str(len(body))], "Content-Length")


def test_forwarded_headers():
    b = T.start_backends(1)[0]
    lb = T.start_lb([b])
    r = T.request(lb.port, "GET", "/echo", host="shop.example.com:8443",
                  headers=[("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-Proto", "https"),
                           ("X-Forwarded-Host", "evil.example"), ("Via", "1.0 upstream-proxy")])
    _, h = echo_head(r)
    check_eq(header_values(h, "x-forwarded-for"), ["1.2.3.4, 127.0.0.1"], "X-Forwarded-For")
    check_eq(header_values(h, "x-forwarded-proto"), ["http"], "X-Forwarded-Proto")
    check_eq(header_values(h, "x-forwarded-host"), ["shop.example.com:8443"], "X-Forwarded-Host")
    check_eq(header_values(h, "host"), ["shop.example.com:8443"], "Host passes unchanged")
    via = header_values(h, "via")
    check("1.1 lb" in ", ".join(via), "Via names lb: %r" % via)
    check("1.0 upstream-proxy" in ", ".join(via), "earlier Via kept: %r" % via)

    # without an X-Forwarded-For: lb's client address alone
    r = T.request(lb.port, "GET", "/echo")
    _, h = echo_head(r)
    check_eq(header_values(h, "x-forwarded-for"), ["127.0.0.1"], "X-Forwarded-For alone")
    check_eq(header_values(h, "x-forwarded-host"), ["example.com"], "X-Forwarded-Host")

    # two X-Forwarded-For lines merge in order, lb's address last
    r = T.request(lb.port, "GET", "/echo", headers=[("X-Forwarded-For", "1.1.1.1, 2.2.2.2"),
                                                   ("X-Forwarded-For", "3.3.3.3")])
    _, h = echo_head(r)
    check_eq(header_values(h, "x-forwarded-for"), ["1.1.1.1, 2.2.2.2, 3.3.3.3, 127.0.0.1"],
             "merged X-Forwarded-For")


def test_request_hop_by_hop_removed():
    b = T.start_backends(1)[0]
    lb = T.start_lb([b])
    r = T.request(lb.port, "GET", "/echo", headers=[
        ("Connection", "keep-alive, X-Hop-A, x-hop-b"),
        ("X-Hop-A", "1"),
        ("X-Hop-B", "2"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Connection", "keep-alive"),
        ("TE", "deflate"),
        ("Upgrade", "h2c"),          # not named by Connection: no tunnel asked
        ("X-End-To-End", "stays"),
    ])
    check_eq(r.status, 200, "status")
    _, h = echo_head(r)
    names = [l.split(":", 1)[0].lower() for l in h]
    for gone in ("connection", "x-hop-a", "x-hop-b", "keep-alive", "proxy-connection", "te",
                 "upgrade"):
        check(gone not in names, "%s forwarded: %r" % (gone, h))
    check_eq(header_values(h, "x-end-to-end"), ["stays"], "end-to-end header")


def test_te_trailers():
    # TE is hop-by-hop: the client's codings never pass. lb may send its own
    # "TE: trailers" upstream when the client accepts trailers (it passes
    # them on), and then, as RFC 9110 10.1.4 requires of a sender of TE,
    # with "TE" among its Connection options.
    b = T.start_backends(1)[0]
    lb = T.start_lb([b])
    r = T.request(lb.port, "GET", "/echo", headers=[("TE", "deflate, trailers")])
    _, h = echo_head(r)
    te = header_values(h, "te")
    check(te in ([], ["trailers"]), "TE forwarded: %r" % te)
    if te:
        conn = ",".join(header_values(h, "connection")).lower()
        check("te" in [t.strip() for t in conn.split(",")],
              "TE: trailers sent upstream without 'Connection: TE': %r" % h)


def test_own_framing_headers():
    b = T.start_backends(1)[0]
    lb = T.start_lb([b])
    # Content-Length: lb writes its own, once
    r = T.request(lb.port, "PUT", "/echo", body=b"hello")
    _, h = echo_head(r)
    check_eq(header_values(h, "content-length"), ["5"], "Content-Length")
    check_eq(header_values(h, "transfer-encoding"), [], "no Transfer-Encoding")
    # chunked: forwarded chunked, with one Transfer-Encoding and no length
    c = T.Conn(lb.port)
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\n\r\n")
    r = c.read_response()
    _, h = echo_head(r)
    check_eq(header_values(h, "transfer-encoding"), ["chunked"], "Transfer-Encoding")
    check_eq(header_values(h, "content-length"), [], "no Content-Length with chunked")
    check(r.body.endswith(b"\r\n\r\nabcdefg"), "decoded body %r" % r.body)
    # no body: no framing header at all
    r = T.request(lb.port, "GET", "/echo")
    _, h = echo_head(r)
    check_eq(header_values(h, "content-length") + header_values(h, "transfer-encoding"), [],
             "framing on a bodiless GET")


def response_with_hops(head, body):
    return (b"HTTP/1.1 200 OK\r\n"
            b"Connection: X-Resp-Hop\r\n"
            b"X-Resp-Hop: secret\r\n"
            b"Keep-Alive: timeout=5, max=100\r\n"
            b"Proxy-Connection: keep-alive\r\n"
            b"Upgrade: foo\r\n"
            b"X-Resp-Keep: yes\r\n"
            b"Content-Length: 2\r\n\r\nok")


def test_response_hop_by_hop_removed():
    fake = T.FakeServer(T.http_handler(response_with_hops))
    lb = T.start_lb([fake])
    r = T.request(lb.port, "GET", "/")
    check_eq(r.status, 200, "status")
    check_eq(r.body, b"ok", "body")
    names = [n.lower() for n, _ in r.headers]
    for gone in ("x-resp-hop", "keep-alive", "proxy-connection", "upgrade"):
        check(gone not in names, "%s passed to the client: %r" % (gone, r.raw_head))
    check(r.header("connection") in (None, "keep-alive"), "Connection: %r" % r.header("connection"))
    check_eq(r.header("x-resp-keep"), "yes", "end-to-end response header")
    check_eq(r.all("content-length"), ["2"], "Content-Length")
    check_eq(r.all("via"), ["1.1 lb"], "Via")


def test_upgrade_declined_by_server():
    # The client asks for an upgrade; the server answers 200 instead of 101,
    # so the connection stays plain HTTP and serves the next request.
    b = T.start_backends(1)[0]
    lb = T.start_lb([b])
    c = T.Conn(lb.port)
    c.send(b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    r = c.read_response()
    check_eq(r.status, 200, "status")
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    r = c.read_response()
    check_eq(r.body, b"hello from b1\n", "next request on the same connection")


def test_routes():
    bs = T.start_backends(3)
    lb = T.start_lb(backends={"api": {"servers": [bs[0]]},
                              "static": {"servers": [bs[1]]},
                              "web": {"servers": [bs[2]]}},
                    routes=[{"host": "api.example.com", "backend": "api"},
                            {"path_prefix": "/static/", "backend": "static"},
                            {"host": "www.example.com", "path_prefix": "/", "backend": "web"}])
    cases = [("api.example.com", "/static/x", "b1"),      # first match wins
             ("API.Example.COM:8080", "/", "b1"),         # case and port ignored
             ("other.example", "/static/a.css", "b2"),
             ("www.example.com", "/static/a.css", "b2"),
             ("www.example.com", "/index.html", "b3")]
    for host, path, want in cases:
        r = T.request(lb.port, "GET", path, host=host)
        check_eq(r.header("x-backend-id"), want, "route for %s%s" % (host, path))


def test_access_log_line():
    b = T.start_backends(1)[0]
    lb = T.start_lb([b], workers=1)
    c = T.Conn(lb.port)
    c.send(b"GET /bytes?n=1234 HTTP/1.1\r\nHost: x\r\n\r\n"
           b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nabcde"
           b"GET /status?code=404 HTTP/1.1\r\nHost: x\r\n\r\n")
    for _ in range(3):
        c.read_response()
    lines = lb.wait_access(3)
    check_eq(len(lines), 3, "one line per request")
    e = [T.parse_access(l) for l in lines]
    check_eq([x["request"] for x in e], ["GET /bytes?n=1234", "POST /sink", "GET /status?code=404"],
             "method and path")
    check_eq([x["status"] for x in e], ["200", "200", "404"], "status")
    check_eq(e[0]["bytes"], "1234", "bytes of the body sent")
    check_eq(e[1]["bytes"], str(len(b"received 5\n")), "bytes of /sink's answer")
    for x in e:
        check_eq(x["client"], "127.0.0.1", "client")
        check_eq(x["server"], b.address, "server")
        check(x["connect"] != "-" and x["response"] != "-", "times %r" % x)
        check(float(x["total"]) >= float(x["response"]) - 0.001, "total >= response: %r" % x)
    # a slow answer shows in the response and total times
    T.request(lb.port, "GET", "/delay?ms=300")
    x = T.parse_access(lb.wait_access(4)[3])
    check(0.25 <= float(x["response"]) < 5 and 0.25 <= float(x["total"]) < 5,
          "times of a 300 ms answer: %r" % x)


def test_access_log_server_id():
    # config/lb.yaml: a server's `id` is "its name in lb's access log".
    b = T.start_backends(1)[0]
    lb = T.start_lb([{"address": b.address, "id": "app1"}])
    T.request(lb.port, "GET", "/")
    x = T.parse_access(lb.wait_access(1)[0])
    check_eq(x["server"], "app1", "server field with an id configured")


def test_access_log_to_file():
    b = T.start_backends(1)[0]
    path = T.tmpdir("log") + "/access.log"
    lb = T.start_lb([b], access=path)
    T.request(lb.port, "GET", "/")
    T.wait_for(lambda: os.path.exists(path) and open(path).read().count("\n") >= 1, 5,
               "the access log file")
    line = open(path).read().splitlines()[0]
    check_eq(T.parse_access(line)["request"], "GET /", "file log line")
    check_eq(lb.access_lines(), [], "nothing on stdout")


if __name__ == "__main__":
    T.run([test_get_through_lb, test_post_through_lb, test_forwarded_headers,
           test_request_hop_by_hop_removed, test_te_trailers, test_own_framing_headers,
           test_response_hop_by_hop_removed, test_upgrade_declined_by_server, test_routes,
           test_access_log_line, test_access_log_server_id, test_access_log_to_file])
