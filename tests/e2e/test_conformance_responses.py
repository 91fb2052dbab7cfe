#!/usr/bin/env python3
"""Response conformance (docs/SECURITY.md, "Responses from backends" and
"Upgrades and tunnels"), against a scripted recording backend: broken
framing gives 502 and the upstream connection is closed and never reused;
bytes after the declared body never reach a client; a response cut short
is never completed; bodies on HEAD/204/304 are dropped with their
connection; a 101 nobody asked for is a 502; a real 101 makes a tunnel that
relays both ways, passes half-closes on, and holds bytes the client
pipelined until the 101. Bad responses are sent whole and one byte per
write."""
import socket
import time

import lbtest as T
from lbtest import check, check_eq
import conformance_lib as L

MODES = (("whole", False), ("bytewise", True))
GET = b"GET /%s HTTP/1.1\r\nHost: a\r\n\r\n"


def get(lb, path="x", method=b"GET", timeout=10):
    c = T.Conn(lb.port, timeout=timeout)
    c.send(b"%s /%s HTTP/1.1\r\nHost: a\r\n\r\n" % (method, path.encode()))
    return c


def sender(raw, bytewise):
    """A backend action sending raw whole or one byte per write."""
    def act(bc, req):
        if bytewise:
            bc.send_bytewise(raw, pause=0.001 if len(raw) < 1000 else 0.0)
        else:
            bc.send(raw)
    return act


def served_fresh(lb, be, bad_conn, fails, label):
    """A following request (new client connection) is answered 200 by a
    backend connection other than `bad_conn`, and bad_conn was closed."""
    c = get(lb, "after")
    try:
        r = c.read_response()
    except (T.TestFailure, EOFError) as e:
        fails.add("%s: the next request failed: %s" % (label, e))
        return
    if r.status != 200:
        fails.add("%s: the next request got %r" % (label, r))
        return
    last = be.requests[-1]
    if last.conn is bad_conn:
        fails.add("%s: the next request reused the bad upstream connection %d" % (
            label, bad_conn.index))
    if not bad_conn.wait_eof(3):
        fails.add("%s: lb left the bad upstream connection open" % label)


BAD_RESPONSES = [
    ("CL and TE", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"5\r\nhello\r\n0\r\n\r\n"),
    ("TE and CL", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
                  b"5\r\nhello\r\n0\r\n\r\n"),
    ("CL letters", b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nhello"),
    ("CL plus sign", b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello"),
    ("CL negative", b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nhello"),
    ("CL hex", b"HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\nhello"),
    ("CL list", b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello"),
    ("CL empty", b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\nhello"),
    ("CL 20 digits", b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\nhello"),
    ("two differing CL", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"
                         b"hello!"),
    ("TE gzip", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello"),
    ("TE identity", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nhello"),
    ("TE chunked, gzip", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"
                         b"5\r\nhello\r\n0\r\n\r\n"),
    ("TE chunked, chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"
                            b"5\r\nhello\r\n0\r\n\r\n"),
    ("TE xchunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\n\r\n"
                    b"5\r\nhello\r\n0\r\n\r\n"),
    ("obs-fold", b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok"),
    ("obs-fold with tab", b"HTTP/1.1 200 OK\r\nX-A: a\r\n\tb\r\nContent-Length: 2\r\n\r\nok"),
    ("status code 2 digits", b"HTTP/1.1 20 OK\r\nContent-Length: 2\r\n\r\nok"),
    ("status code 4 digits", b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok"),
    ("status code letters", b"HTTP/1.1 abc OK\r\nContent-Length: 2\r\n\r\nok"),
    ("double space in status line", b"HTTP/1.1  200 OK\r\nContent-Length: 2\r\n\r\nok"),
    ("tab in status line", b"HTTP/1.1\t200 OK\r\nContent-Length: 2\r\n\r\nok"),
    ("lower-case protocol", b"http/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    ("HTTP/11", b"HTTP/11 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    ("not HTTP", b"ICY 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    ("garbage", b"hello world\r\n\r\n"),
    ("bare LF line endings", b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok"),
    ("\\r\\r in the status line", b"HTTP/1.1 200 OK\r\r\nContent-Length: 2\r\n\r\nok"),
    ("bare CR in the reason", b"HTTP/1.1 200 O\rK\r\nContent-Length: 2\r\n\r\nok"),
    ("control char in the reason", b"HTTP/1.1 200 O\x01K\r\nContent-Length: 2\r\n\r\nok"),
    ("bare CR in a header value", b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 2\r\n\r\nok"),
    ("NUL in a header value", b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok"),
    ("space before the colon", b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok"),
    ("space in a header name", b"HTTP/1.1 200 OK\r\nX A: b\r\nContent-Length: 2\r\n\r\nok"),
    ("empty header name", b"HTTP/1.1 200 OK\r\n: b\r\nContent-Length: 2\r\n\r\nok"),
    ("header line without colon", b"HTTP/1.1 200 OK\r\nNoColon\r\nContent-Length: 2\r\n\r\nok"),
    ("head over max_header_size", b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 20000 +
     b"\r\nContent-Length: 2\r\n\r\nok"),
    ("129 header fields", b"HTTP/1.1 200 OK\r\n" +
     b"".join(b"X-H%d: v\r\n" % i for i in range(128)) + b"Content-Length: 2\r\n\r\nok"),
]


def test_broken_framing_502_and_connection_dropped():
    be = L.RecordingBackend()
    lb = L.start_lb_conf([be.address], workers=1)
    fails = L.Failures()
    for name, raw in BAD_RESPONSES:
        for mode, bytewise in MODES:
            label = "%s [%s] backend sent %s" % (name, mode, L.bytes_repr(raw))
            be.responses.append(sender(raw, bytewise))
            n = be.n_requests
            res = L.exchange(lb.port, GET % b"x", timeout=3)
            p = L.refused_problem(res, 502)
            if p:
                fails.add("%s: %s" % (label, p))
                continue
            if b"hello" in res.raw or b"ok" in res.raw.partition(b"\r\n\r\n")[2]:
                fails.add("%s: the bad response's body reached the client: %r" % (label, res))
            be.wait_requests(n + 1)
            served_fresh(lb, be, be.requests[n].conn, fails, label)
    fails.check()


def test_bytes_after_body_never_relayed():
    be = L.RecordingBackend()
    lb = L.start_lb_conf([be.address], workers=1)
    fails = L.Failures()
    smuggled = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nX-Smuggled: 1\r\n\r\nSMUGGLED"
    bodies = [
        ("CL body, a whole response after it",
         b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + smuggled, 0),
        ("CL body, garbage after it", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokSMUGGLED", 0),
        ("chunked body, a response after it",
         b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n" + smuggled, 0),
        ("CL body, a response 200 ms later",
         b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 0.2),
    ]
    for name, raw, delay in bodies:
        # (Extra bytes that come later, while the next pipelined request is
        # already on that connection, cannot be told from its answer: only
        # the idle case is tested with a delay.)
        for pipelined in ((False,) if delay else (False, True)):
            label = "%s%s" % (name, " (next request pipelined)" if pipelined else "")

            def act(bc, req, raw=raw, delay=delay):
                bc.send(raw)
                if delay:
                    time.sleep(delay)
                    bc.send(smuggled)
            be.responses.append(act)
            n = be.n_requests
            c = T.Conn(lb.port)
            if pipelined:
                c.send(GET % b"1" + GET % b"2")
            else:
                c.send(GET % b"1")
            r1 = c.read_response()
            if r1.status != 200 or r1.body != b"ok":
                fails.add("%s: first answer %r" % (label, r1))
                continue
            if not pipelined:
                time.sleep(0.5 if delay else 0.05)
                c.send(GET % b"2")
            try:
                r2 = c.read_response()
            except (T.TestFailure, EOFError) as e:
                fails.add("%s: second request got no answer: %s" % (label, e))
                continue
            be.wait_requests(n + 2)
            bad = be.requests[n].conn
            if r2.status != 200 or b"SMUGGLED" in r2.body or r2.header("x-smuggled"):
                fails.add("%s: second answer %r" % (label, r2))
            if be.requests[n + 1].conn is bad:
                fails.add("%s: second request sent on the connection with extra bytes" % label)
            if not bad.wait_eof(3):
                fails.add("%s: the upstream connection with extra bytes left open" % label)
            c.sock.settimeout(0.3)
            try:
                rest = bytes(c.buf) + c.sock.recv(65536)
            except socket.timeout:
                rest = bytes(c.buf)
            if b"SMUGGLED" in rest:
                fails.add("%s: extra bytes reached the client: %r" % (label, rest))
            c.close()
        # and any other client: its request goes to a clean connection
        served_fresh(lb, be, bad, fails, label + ", other client")
    fails.check()


def client_raw_until_close(c, timeout=5):
    """Everything lb sends until it closes; (bytes, closed)."""
    deadline = time.monotonic() + timeout
    out = bytearray(c.buf)
    c.buf.clear()
    while time.monotonic() < deadline:
        c.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = c.sock.recv(65536)
        except socket.timeout:
            return bytes(out), False
        except ConnectionResetError:
            return bytes(out), True
        if not data:
            return bytes(out), True
        out += data
    return bytes(out), False


def test_cut_short_never_completed():
    be = L.RecordingBackend()
    lb = L.start_lb_conf([be.address], workers=1)
    fails = L.Failures()
    cases = [
        ("CL 100, 50 sent, FIN", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 50,
         "close", "length"),
        ("CL 100, 50 sent, RST", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 50,
         "reset", "length"),
        ("chunked, cut mid-chunk", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"5\r\nhello\r\na\r\nhello", "close", "chunked"),
        ("chunked, cut between chunks", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"5\r\nhello\r\n", "close", "chunked"),
        ("chunked, cut in the chunk size", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
         b"\r\n5\r\nhello\r\n1", "close", "chunked"),
        ("chunked, cut after the last-chunk line", b"HTTP/1.1 200 OK\r\n"
         b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n", "close", "chunked"),
        ("chunked, cut mid-chunk, RST", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"a\r\nhello", "reset", "chunked"),
    ]
    for name, raw, how, kind in cases:
        for mode, bytewise in MODES:
            label = "%s [%s]" % (name, mode)

            def act(bc, req, raw=raw, how=how, bytewise=bytewise):
                sender(raw, bytewise)(bc, req)
                time.sleep(0.1)
                bc.reset() if how == "reset" else bc.close()
                return "stop"
            be.responses.append(act)
            c = get(lb)
            try:
                r = c.read_head()
            except (T.TestFailure, EOFError) as e:
                # no head relayed yet when the cut came: a 502 or a close is fine
                continue
            got, closed = client_raw_until_close(c)
            c.close()
            if r.status == 502:
                continue
            if not closed:
                fails.add("%s: client connection left open after %r" % (label, got))
            if kind == "length":
                if r.header("content-length") == "100" and len(got) >= 100:
                    fails.add("%s: lb completed the body: %r" % (label, got))
                if b"x" * 50 not in got and len(got) > 50:
                    fails.add("%s: unexpected body %r" % (label, got))
            else:
                te = (r.header("transfer-encoding") or "").lower()
                if te == "chunked" and (b"0\r\n\r\n" in got):
                    fails.add("%s: lb invented a last chunk: %r" % (label, got))
                if te != "chunked" and r.header("content-length") is None and closed:
                    fails.add("%s: the cut body was framed by close (looks complete): %r" % (
                        label, r.raw_head))
    # the contrast: a body delimited by close is complete when the server closes
    be.responses.append(lambda bc, req: (bc.send(b"HTTP/1.1 200 OK\r\n\r\nhello"), bc.close(),
                                         "stop")[-1])
    c = get(lb)
    r = c.read_response()
    if r.status != 200 or r.body != b"hello":
        fails.add("close-delimited body: %r" % r)
    fails.check()


def test_body_on_head_204_304_dropped():
    be = L.RecordingBackend()
    lb = L.start_lb_conf([be.address], workers=1)
    fails = L.Failures()
    cases = [
        ("HEAD", b"HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
        ("HEAD, chunked", b"HEAD", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                   b"5\r\nhello\r\n0\r\n\r\n"),
        ("204", b"GET", b"HTTP/1.1 204 No Content\r\n\r\nhello"),
        ("304", b"GET", b"HTTP/1.1 304 Not Modified\r\nETag: \"e\"\r\n\r\nhello"),
        ("304 with Content-Length", b"GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5"
                                            b"\r\n\r\nhello"),
    ]
    for name, method, raw in cases:
        for delay in (0, 0.2):
            label = "%s%s" % (name, ", body 200 ms after the head" if delay else "")
            head, _, body = raw.partition(b"\r\n\r\n")

            def act(bc, req, head=head, body=body, delay=delay):
                bc.send(head + b"\r\n\r\n")
                if delay:
                    time.sleep(delay)
                bc.send(body)
            be.responses.append(act)
            n = be.n_requests
            c = get(lb, "first", method=method)
            r = c.read_response(method.decode())
            if r.body:
                fails.add("%s: client got a body %r" % (label, r.body))
            time.sleep(0.5 if delay else 0.05)
            c.send(GET % b"second")
            try:
                r2 = c.read_response()
            except (T.TestFailure, EOFError) as e:
                fails.add("%s: second request got no answer: %s" % (label, e))
                continue
            if r2.status != 200 or b"hello" in r2.raw_head + r2.body:
                fails.add("%s: second answer %r" % (label, r2))
            be.wait_requests(n + 2)
            bad = be.requests[n].conn
            if be.requests[n + 1].conn is bad:
                fails.add("%s: second request reused the connection that sent a body" % label)
            if not bad.wait_eof(3):
                fails.add("%s: the connection that sent a body left open" % label)
            c.sock.settimeout(0.2)
            try:
                rest = bytes(c.buf) + c.sock.recv(65536)
            except socket.timeout:
                rest = bytes(c.buf)
            if b"hello" in rest:
                fails.add("%s: the dropped body reached the client: %r" % (label, rest))
            c.close()
    fails.check()


def test_no_body_responses_with_content_length_end_at_the_head():
    # RFC 9112 6.3 (1): a response to HEAD and any 1xx, 204 or 304 response
    # ends with its head, whatever its header fields say. A 304 may carry the
    # Content-Length of the representation (RFC 9110 8.6): no body follows,
    # the exchange is over, the next request is answered at once.
    be = L.RecordingBackend()
    lb = L.start_lb_conf([be.address], workers=1, timeouts={"server": "4s"})
    fails = L.Failures()
    for name, method, raw in (
            ("HEAD, Content-Length: 1234", b"HEAD",
             b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"),
            ("304, Content-Length: 1234", b"GET",
             b"HTTP/1.1 304 Not Modified\r\nETag: \"e\"\r\nContent-Length: 1234\r\n\r\n"),
            ("204, Content-Length: 5", b"GET",
             b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n")):
        be.responses.append(raw)
        c = get(lb, "first", method=method, timeout=8)
        t0 = time.monotonic()
        try:
            r = c.read_response(method.decode())
            t0 = time.monotonic()
            c.send(GET % b"second")
            r2 = c.read_response()
            took = time.monotonic() - t0
            check_eq(r2.status, 200, "the next request")
            check(took < 1.0, "the next request on the connection waited %.2fs" % took)
        except (T.TestFailure, EOFError) as e:
            fails.add("%s: backend sent %r; the next request on the client connection, "
                      "after %.2fs: %s" % (name, raw, time.monotonic() - t0, e))
        c.close()
    fails.check()


SWITCH = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
UPGRADE_REQ = (b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def test_101_without_upgrade_request_is_502():
    be = L.RecordingBackend()
    lb = L.start_lb_conf([be.address], workers=1)
    fails = L.Failures()
    requests = [
        ("plain GET", GET % b"x"),
        ("Upgrade: h2c (stripped)", b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, "
                                    b"HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABk\r\n\r\n"),
        ("Upgrade without Connection: upgrade", b"GET / HTTP/1.1\r\nHost: a\r\n"
                                                b"Upgrade: websocket\r\n\r\n"),
    ]
    for name, data in requests:
        for mode, bytewise in MODES:
            label = "%s [%s]" % (name, mode)

            def act(bc, req, bytewise=bytewise):
                sender(SWITCH + b"tunnel bytes", bytewise)(bc, req)
            be.responses.append(act)
            n = be.n_requests
            c = T.Conn(lb.port)
            c.send(data)
            try:
                r = c.read_response()
            except (T.TestFailure, EOFError) as e:
                fails.add("%s: no answer: %s" % (label, e))
                continue
            if r.status != 502:
                fails.add("%s: got %r instead of 502" % (label, r))
            if not c.is_closed(2):
                fails.add("%s: client connection not closed" % label)
            c.close()
            be.wait_requests(n + 1)
            served_fresh(lb, be, be.requests[n].conn, fails, label)
    fails.check()


def tunnel_script(log):
    """Backend side of a tunnel: after the upgrade head, wait, snapshot,
    answer 101, then: receive the pipelined bytes, pong a ping, see the
    client's half-close, send after it, close."""
    def act(bc, req):
        log["req"] = req
        time.sleep(0.5)
        log["before_101"] = bc.received_since(req)
        log["t101"] = time.monotonic()
        bc.send(SWITCH)
        end = req.start + len(req.raw)
        bc.wait(lambda: b"PIPELINED" in bc.data[end:], 3)
        bc.wait(lambda: b"ping" in bc.data[end:], 5)
        log["after_ping"] = bc.received()[end:]
        bc.send(b"pong")
        log["eof"] = bc.wait_eof(5)
        log["after_eof_data"] = bc.received()[end:]
        bc.send(b"after-eof")
        time.sleep(0.2)
        bc.close()
        return "stop"
    return act


def test_tunnel_after_real_101():
    be = L.RecordingBackend()
    lb = L.start_lb_conf([be.address], workers=1)
    fails = L.Failures()
    for mode, bytewise in MODES:
        log = {}
        be.responses.append(tunnel_script(log))
        c = T.Conn(lb.port)
        data = UPGRADE_REQ + b"PIPELINED"
        c.send_bytewise(data, pause=0.0005) if bytewise else c.send(data)
        try:
            r = c.read_head()
            check_eq(r.status, 101, "status")
            check_eq((r.header("upgrade") or "").lower(), "websocket", "Upgrade to the client")
            check("upgrade" in (r.header("connection") or "").lower(), "Connection: upgrade")
            req = log["req"]
            check_eq(req.all("upgrade"), [b"websocket"], "Upgrade at the backend")
            check(b"upgrade" in b",".join(req.all("connection")).lower(),
                  "Connection: upgrade at the backend: %r" % req.raw_head)
            check_eq(log["before_101"], req.raw,
                     "what the backend had before it sent 101 (the pipelined bytes must wait)")
            c.send(b"ping")
            check_eq(c.read_exact(4), b"pong", "backend → client through the tunnel")
            check(log["after_ping"].startswith(b"PIPELINED"),
                  "pipelined bytes delivered first after the 101: %r" % log["after_ping"])
            c.shutdown_write()
            check_eq(c.read_exact(9), b"after-eof",
                     "backend → client after the client's half-close")
            check(log["eof"], "the backend saw the client's half-close")
            check_eq(log["after_eof_data"], b"PIPELINEDping", "bytes through the tunnel")
            check(c.is_closed(3), "the backend's close reaches the client")
        except (T.TestFailure, EOFError, KeyError) as e:
            fails.add("[%s] %s" % (mode, e))
        c.close()
    fails.check()


def test_tunnel_half_close_from_backend():
    # The other direction: the backend shuts its writing side; the client
    # sees EOF and can still send, and the backend receives it.
    be = L.RecordingBackend()
    lb = L.start_lb_conf([be.address], workers=1)
    log = {}

    def act(bc, req):
        bc.send(SWITCH + b"hi")
        bc.shutdown_write()
        end = req.start + len(req.raw)
        log["got"] = bc.wait(lambda: bytes(bc.data[end:]) if b"late" in bc.data[end:] else None,
                             5)
        bc.close()
        return "stop"
    be.responses.append(act)
    c = T.Conn(lb.port, timeout=5)
    c.send(UPGRADE_REQ)
    check_eq(c.read_head().status, 101, "status")
    check_eq(c.read_exact(2), b"hi", "backend → client")
    check(c.is_closed(3), "the backend's half-close reached the client as EOF")
    try:
        c.send(b"late")
    except OSError as e:
        raise T.TestFailure("lb closed the tunnel on the backend's half-close: %s" % e)
    T.wait_for(lambda: "got" in log, 6, "the backend script")
    check_eq(log["got"], b"late", "client → backend after the backend's half-close")


def test_upgrade_declined_pipelined_bytes_are_http():
    be = L.RecordingBackend()
    lb = L.start_lb_conf([be.address], workers=1)
    fails = L.Failures()
    for mode, bytewise in MODES:
        log = {}

        def act(bc, req, log=log):
            time.sleep(0.4)
            log["before"] = bc.received_since(req)
            log["req"] = req
            bc.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno")
        be.responses.append(act)
        n = be.n_requests
        c = T.Conn(lb.port)
        data = UPGRADE_REQ + GET % b"next"
        c.send_bytewise(data, pause=0.0005) if bytewise else c.send(data)
        try:
            r1 = c.read_response()
            check_eq((r1.status, r1.body), (200, b"no"), "declined upgrade")
            r2 = c.read_response()
            check_eq(r2.status, 200, "pipelined request after the declined upgrade")
            be.wait_requests(n + 2)
            check_eq(log["before"], log["req"].raw, "backend had only the upgrade request "
                     "before answering")
            check_eq(be.requests[n + 1].target, b"/next", "next request parsed as HTTP")
        except (T.TestFailure, EOFError, KeyError) as e:
            fails.add("[%s] %s" % (mode, e))
        c.close()
    fails.check()


def test_tunnel_idle_timeout():
    # README: timeouts.tunnel closes a tunnel with no traffic either way.
    be = L.RecordingBackend()
    lb = L.start_lb_conf([be.address], workers=1, timeouts={"tunnel": "1s",
                                                            "client_idle": "30s"})

    def act(bc, req):
        bc.send(SWITCH)
        return None
    be.responses.append(act)
    c = T.Conn(lb.port, timeout=10)
    c.send(UPGRADE_REQ)
    check_eq(c.read_head().status, 101, "status")
    c.send(b"x")
    t0 = time.monotonic()
    closed = c.is_closed(6)
    took = time.monotonic() - t0
    check(closed, "idle tunnel still open after 6s with timeouts.tunnel 1s")
    check(0.7 < took < 3, "idle tunnel closed after %.2fs (tunnel: 1s)" % took)
    check(be.conns[0].wait_eof(2), "the backend side of the idle tunnel closed")


def test_response_hop_by_hop_removed():
    be = L.RecordingBackend(responses=[
        b"HTTP/1.1 200 OK\r\nConnection: X-Secret, keep-alive\r\nX-Secret: 1\r\n"
        b"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTrailer: X-T\r\n"
        b"Upgrade: websocket\r\nX-Kept: 1\r\nContent-Length: 2\r\n\r\nok"])
    lb = L.start_lb_conf([be.address], workers=1)
    c = get(lb)
    r = c.read_response()
    check_eq((r.status, r.body), (200, b"ok"), "answer")
    names = [n.lower() for n, _ in r.headers]
    for gone in ("x-secret", "keep-alive", "proxy-connection", "trailer", "upgrade"):
        check(gone not in names, "%s reached the client: %r" % (gone, r.raw_head))
    check_eq(r.header("x-kept"), "1", "an ordinary header")


def test_504_and_connection_closed():
    be = L.RecordingBackend(responses=[lambda bc, req: time.sleep(3)])
    lb = L.start_lb_conf([be.address], workers=1, timeouts={"server": "1s"})
    c = get(lb)
    t0 = time.monotonic()
    r = c.read_response()
    check_eq(r.status, 504, "status")
    check(0.8 < time.monotonic() - t0 < 2.5, "504 after %.2fs" % (time.monotonic() - t0))
    check_eq(r.header("connection"), "close", "Connection: close")
    check(be.conns[0].wait_eof(2), "lb closed the silent upstream connection")


if __name__ == "__main__":
    T.run([test_broken_framing_502_and_connection_dropped, test_bytes_after_body_never_relayed,
           test_cut_short_never_completed, test_body_on_head_204_304_dropped,
           test_no_body_responses_with_content_length_end_at_the_head,
           test_101_without_upgrade_request_is_502, test_tunnel_after_real_101,
           test_tunnel_half_close_from_backend,
           test_upgrade_declined_pipelined_bytes_are_http, test_tunnel_idle_timeout,
           test_response_hop_by_hop_removed, test_504_and_connection_closed])
