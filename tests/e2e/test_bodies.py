#!/usr/bin/env python3
"""Message bodies through lb: chunked and Content-Length uploads and
downloads, close-delimited responses, HTTP/1.0 clients, HEAD, 1xx, 204 and
304 without a body, Expect: 100-continue."""
import lbtest as T
from lbtest import check, check_eq


def chunked(data, size):
    return b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + size]), data[i:i + size])
                    for i in range(0, len(data), size)) + b"0\r\n\r\n"


def setup(workers=2):
    b = T.start_backends(1)[0]
    # a short server timeout, so a stalled exchange fails fast
    return b, T.start_lb([b], workers=workers, timeouts={"server": "5s"})


def test_chunked_upload_echo():
    _, lb = setup()
    data = T.pattern_bytes(300000)
    c = T.Conn(lb.port)
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    c.send(head + chunked(data, 7000))
    r = c.read_response()
    check_eq(r.status, 200, "status")
    check(r.body.endswith(b"\r\n\r\n" + data), "echoed body differs (%d bytes)" % len(r.body))
    # tiny chunks with extensions and a trailer, on the same connection
    c.send(head + b"1;a=b\r\nx\r\n2\r\nyz\r\n0\r\nX-Trailer: t\r\n\r\n")
    r = c.read_response()
    check(r.body.endswith(b"\r\n\r\nxyz"), "small chunks: %r" % r.body[-40:])


def test_chunked_upload_sink():
    _, lb = setup()
    piece = T.pattern_bytes(65536)
    c = T.Conn(lb.port, timeout=30)
    c.send(b"POST /sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    frame = b"%x\r\n%s\r\n" % (len(piece), piece)
    for _ in range(160):   # 10 MiB
        c.send(frame)
    c.send(b"0\r\n\r\n")
    r = c.read_response()
    check_eq(r.body, b"received %d\n" % (160 * 65536), "sink answer")


def test_length_upload_sink():
    _, lb = setup()
    n = 20 * T.MiB
    c = T.Conn(lb.port, timeout=30)
    c.send(b"PUT /sink HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % n)
    block = T.pattern_bytes(T.MiB)
    for _ in range(20):
        c.send(block)
    check_eq(c.read_response().body, b"received %d\n" % n, "sink answer")


def test_chunked_download():
    _, lb = setup()
    n = 5 * 1000 * 1000 + 3
    c = T.Conn(lb.port, timeout=30)
    c.send(b"GET /bytes?n=%d&chunked=1 HTTP/1.1\r\nHost: x\r\n\r\n" % n)
    r = c.read_response()
    check_eq(r.header("transfer-encoding"), "chunked", "Transfer-Encoding")
    check_eq(r.header("content-length"), None, "no Content-Length")
    check(r.body == T.pattern_bytes(n), "body differs (%d bytes)" % len(r.body))
    for q in (b"n=0&chunked=1", b"n=1&chunked=1"):
        c.send(b"GET /bytes?%s HTTP/1.1\r\nHost: x\r\n\r\n" % q)
        r = c.read_response()
        check_eq(r.body, T.pattern_bytes(int(q[2:3])), q.decode())


def test_length_download():
    _, lb = setup()
    n = 5 * 1000 * 1000 + 3
    c = T.Conn(lb.port, timeout=30)
    c.send(b"GET /bytes?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % n)
    r = c.read_response()
    check_eq(r.header("content-length"), str(n), "Content-Length")
    check(r.body == T.pattern_bytes(n), "body differs")


def close_delimited(head, body):
    return b"HTTP/1.1 200 OK\r\nX-Kind: eof\r\n\r\n" + T.pattern_bytes(100000)


def eof_server():
    def handler(s, fake):
        req = T.recv_request(s, bytearray())
        if req:
            fake.count()
            s.sendall(close_delimited(*req))
    return T.FakeServer(handler)


def test_close_delimited_response():
    # A server ends its body by closing: a 1.1 client gets it re-chunked and
    # keeps its connection; a 1.0 client gets it close-delimited.
    fake = eof_server()
    lb = T.start_lb([fake])
    c = T.Conn(lb.port)
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    r = c.read_response()
    check_eq(r.header("transfer-encoding"), "chunked", "re-chunked for 1.1")
    check_eq(r.body, T.pattern_bytes(100000), "body")
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    check_eq(c.read_response().body, T.pattern_bytes(100000), "client connection reused")
    c = T.Conn(lb.port)
    c.send(b"GET / HTTP/1.0\r\n\r\n")
    r = c.read_response()
    check(r.close_delimited, "1.0: close-delimited, got %r" % r.raw_head)
    check_eq(r.body, T.pattern_bytes(100000), "1.0 body")


def test_http10_client():
    b, lb = setup()
    # a plain 1.0 request: answered, then closed
    c = T.Conn(lb.port)
    c.send(b"GET / HTTP/1.0\r\n\r\n")
    r = c.read_response()
    check_eq(r.status, 200, "status")
    check_eq(r.body, b"hello from b1\n", "body")
    check(c.is_closed(), "1.0 without keep-alive: closed")
    # a chunked answer cannot go to 1.0: close-delimited or with a length
    c = T.Conn(lb.port)
    c.send(b"GET /bytes?n=5000&chunked=1 HTTP/1.0\r\n\r\n")
    r = c.read_response()
    check(r.header("transfer-encoding") is None, "chunked to a 1.0 client: %r" % r.raw_head)
    check_eq(r.body, T.pattern_bytes(5000), "body")
    check(c.is_closed(), "closed")
    # keep-alive asked and possible (a length): kept
    c = T.Conn(lb.port)
    for i in range(3):
        c.send(b"GET /?%d HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" % i)
        r = c.read_response()
        check_eq(r.body, b"hello from b1\n", "keep-alive answer %d" % i)
        check_eq(r.header("connection"), "keep-alive", "Connection on answer %d" % i)
    # keep-alive asked but the answer is close-delimited: closed after it
    c.send(b"GET /bytes?n=10&chunked=1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    r = c.read_response()
    check_eq(r.body, T.pattern_bytes(10), "body")
    if r.close_delimited:
        check(c.is_closed(), "closed after a close-delimited answer")
    # what was forwarded for a 1.0 request: 1.1 upstream, a Host added
    c = T.Conn(lb.port)
    c.send(b"POST /echo HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc")
    r = c.read_response()
    line, _, rest = r.body.partition(b"\r\n")
    check_eq(line, b"POST /echo HTTP/1.1", "request line upstream")
    check(b"\r\nHost: " in b"\r\n" + rest, "a Host is added: %r" % r.body)
    check(r.body.endswith(b"\r\n\r\nabc"), "body")


def test_head():
    b, lb = setup()
    c = T.Conn(lb.port)
    c.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    r = c.read_response("HEAD")
    check_eq(r.status, 200, "status")
    check_eq(r.header("content-length"), "14", "Content-Length preserved")
    c.send(b"HEAD /bytes?n=1000000 HTTP/1.1\r\nHost: x\r\n\r\n")
    r = c.read_response("HEAD")
    check_eq(r.header("content-length"), "1000000", "Content-Length of /bytes")
    c.send(b"HEAD /bytes?n=1000&chunked=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    r = c.read_response("HEAD")
    check_eq(r.status, 200, "chunked HEAD")
    # no stray body bytes: the next answer starts right after the heads
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    r = c.read_response()
    check_eq(r.body, b"hello from b1\n", "answer after HEADs")
    check(not c.buf, "stray bytes: %r" % bytes(c.buf))


def test_204_304():
    _, lb = setup()
    c = T.Conn(lb.port)
    for code in (204, 304, 204):
        c.send(b"GET /status?code=%d HTTP/1.1\r\nHost: x\r\n\r\n" % code)
        r = c.read_response()
        check_eq(r.status, code, "status")
        check(r.header("transfer-encoding") is None, "Transfer-Encoding on %d" % code)
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    r = c.read_response()
    check_eq(r.body, b"hello from b1\n", "no stray body after 204/304")
    check(not c.buf, "stray bytes: %r" % bytes(c.buf))


def test_expect_100_continue():
    _, lb = setup()
    c = T.Conn(lb.port)
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n")
    interim = c.read_head()   # before any body byte was sent
    check_eq(interim.status, 100, "interim status")
    check(interim.raw_head.startswith(b"HTTP/1.1 100 Continue\r\n"), "%r" % interim.raw_head)
    c.send(b"hello world")
    r = c.read_response()
    check_eq(r.status, 200, "final status")
    check(r.body.endswith(b"\r\n\r\nhello world"), "body %r" % r.body)
    # and the connection goes on
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    check_eq(c.read_response().status, 200, "next request")


def test_expect_100_continue_chunked():
    _, lb = setup()
    c = T.Conn(lb.port)
    c.send(b"PUT /sink HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n")
    check_eq(c.read_head().status, 100, "interim")
    c.send(chunked(T.pattern_bytes(100000), 30000))
    check_eq(c.read_response().body, b"received 100000\n", "final")


def test_interim_103():
    _, lb = setup()
    c = T.Conn(lb.port)
    c.send(b"GET /status?code=103 HTTP/1.1\r\nHost: x\r\n\r\n")
    r = c.read_response()
    check_eq([i.status for i in r.interim], [103], "interim responses")
    check_eq((r.status, r.body), (200, b"status 103\n"), "final")
    # a 1.0 client never gets an interim response
    c = T.Conn(lb.port)
    c.send(b"GET /status?code=103 HTTP/1.0\r\n\r\n")
    r = c.read_response()
    check_eq(r.interim, [], "interim to a 1.0 client")
    check_eq(r.status, 200, "final to 1.0")


if __name__ == "__main__":
    T.run([test_chunked_upload_echo, test_chunked_upload_sink, test_length_upload_sink,
           test_chunked_download, test_length_download, test_close_delimited_response,
           test_http10_client, test_head, test_204_304, test_expect_100_continue,
           test_expect_100_continue_chunked, test_interim_103])
