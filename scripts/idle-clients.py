#!/usr/bin/env python3
"""Idle keep-alive clients for `scripts/bench.sh --idle`.

Opens COUNT connections to 127.0.0.1:PORT, sends one request on each
(`GET / HTTP/1.1`, as wrk sends it) and reads the whole response, so the proxy
has set the connection up and served it; then holds every connection open
and idle. Prints "ready COUNT" on stdout once all responses are in, then waits
for SIGTERM/SIGINT (or --hold seconds), checks how many connections the
proxy still holds open and prints "open K of COUNT" before closing them all.

  idle-clients.py --port PORT [--count 10000] [--concurrency 100]
                  [--sources 4] [--hold 120] [--timeout 60]

--sources N spreads the connections over source addresses 127.0.0.1 ..
127.0.0.N (IP_BIND_ADDRESS_NO_PORT: the port is chosen at connect, per
destination), so ephemeral ports never run short. With --hold 0 it closes the
connections as soon as they are ready (a warm-up). It raises its own
RLIMIT_NOFILE soft limit to the hard limit. Exit status 1 when a connection
fails, a response is not a 200, or --timeout passes before all are ready.
"""
import argparse
import errno
import resource
import selectors
import signal
import socket
import sys
import time

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def fail(msg):
    print("idle-clients: %s" % msg, file=sys.stderr)
    sys.exit(1)


def response_done(buf):
    """True when buf holds one whole response with a 200 status and a
    Content-Length body (what the sample backend sends for /)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return False
    head = buf[:end].decode("latin-1")
    status = head.split("\r\n", 1)[0]
    if not status.startswith("HTTP/1.1 200"):
        fail("unexpected response: %r" % status)
    length = None
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    if length is None:
        fail("response without Content-Length")
    if len(buf) > end + 4 + length:
        fail("more bytes than one response")
    return len(buf) == end + 4 + length


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--sources", type=int, default=4)
    ap.add_argument("--hold", type=float, default=120)
    ap.add_argument("--timeout", type=float, default=60)
    a = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < a.count + 64:
        fail("open files hard limit %d < %d needed" % (hard, a.count + 64))
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))

    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % a.port
    sel = selectors.DefaultSelector()
    deadline = time.monotonic() + a.timeout
    held = []
    started = 0
    in_flight = 0
    while len(held) < a.count:
        while in_flight < a.concurrency and started < a.count:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            s.bind(("127.0.0.%d" % (1 + started % a.sources), 0))
            s.setblocking(False)
            err = s.connect_ex(("127.0.0.1", a.port))
            if err not in (0, errno.EINPROGRESS):
                fail("connect #%d: %s" % (started, errno.errorcode.get(err, err)))
            sel.register(s, selectors.EVENT_WRITE, [b"", False])
            started += 1
            in_flight += 1
        if time.monotonic() > deadline:
            fail("%d of %d connections ready after %.0fs" % (len(held), a.count, a.timeout))
        if stop:
            fail("stopped before all connections were ready")
        for key, events in sel.select(timeout=0.5):
            s, state = key.fileobj, key.data
            if not state[1]:  # connected (or failed): send the request
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fail("connect: %s" % errno.errorcode.get(err, err))
                s.sendall(request)  # small: fits the empty send buffer
                state[1] = True
                sel.modify(s, selectors.EVENT_READ, state)
                continue
            data = s.recv(65536)
            if not data:
                fail("the proxy closed a connection before answering")
            state[0] += data
            if response_done(state[0]):
                sel.unregister(s)
                held.append(s)
                in_flight -= 1
    print("ready %d" % len(held), flush=True)

    end = time.monotonic() + a.hold
    while not stop and time.monotonic() < end:
        time.sleep(0.1)

    still_open = 0
    for s in held:
        try:
            data = s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            still_open += 1  # nothing to read, not closed: held open
            continue
        except OSError:
            continue
        if data:
            still_open += 1  # open, but the proxy sent something unasked
    print("open %d of %d" % (still_open, len(held)), flush=True)
    for s in held:
        s.close()


if __name__ == "__main__":
    main()
