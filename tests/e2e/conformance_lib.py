"""Helpers for the HTTP/1.1 conformance and hostile-input e2e tests
(test_conformance_requests.py, test_conformance_responses.py,
test_slow_clients.py), on top of lbtest.py (which it uses, never changes).

- `RecordingBackend`: a Python backend on a free loopback port that records
  every byte each accepted connection received (with timestamps, and when the
  connection was closed or reset by lb), and answers with a script: a canned
  good response by default, or per request raw bytes / a callable that can
  hold, reset, close mid-body, send extra bytes, answer 101, ...
- `start_lb_conf`: lb with the config keys lbtest's config_yaml lacks
  (`headers:`), optionally run under a command prefix such as
  `prlimit --nofile=64:64`.
- raw client exchanges that survive lb closing early: whole or one byte per
  write, read to EOF with a deadline.
- /proc readers: CPU time, open descriptors, RLIMIT_NOFILE of a process.
"""
import os
import re
import socket
import struct
import threading
import time

import lbtest as T
from lbtest import check

CANNED_BODY = b"ok"


# ---- the recording backend -----------------------------------------------------

class Req:
    """A request as the backend received it."""

    def __init__(self, conn, index, raw_head, body, raw):
        self.conn = conn          # the BConn it arrived on
        self.index = index        # 0-based, over the whole backend
        self.raw_head = raw_head  # bytes of the head, CRLFCRLF included
        self.body = body          # decoded body (chunked framing removed)
        self.raw = raw            # every byte of the message as received
        self.start = 0            # its offset in conn.data
        lines = raw_head[:-4].split(b"\r\n")
        self.request_line = lines[0]
        parts = lines[0].split(b" ")
        self.method = parts[0]
        self.target = parts[1] if len(parts) > 1 else b""
        self.version = parts[2] if len(parts) > 2 else b""
        self.headers = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            self.headers.append((name, value.strip(b" \t")))

    def all(self, name):
        name = name.lower().encode() if isinstance(name, str) else name.lower()
        return [v for n, v in self.headers if n.lower() == name]

    def header(self, name):
        v = self.all(name)
        return v[0] if v else None

    def names(self):
        return [n.lower() for n, _ in self.headers]

    def __repr__(self):
        return "<Req #%d on conn %d %r>" % (self.index, self.conn.index, self.raw_head[:400])


class BConn:
    """One connection accepted by a RecordingBackend. A reader thread records
    every received byte; the script consumes requests from the record."""

    def __init__(self, backend, sock, index):
        self.backend = backend
        self.sock = sock
        self.index = index
        self.accepted_at = time.monotonic()
        self.data = bytearray()     # everything received, in order
        self.chunks = []            # (monotonic time, bytes) per recv
        self.sent = []              # (monotonic time, bytes) per send
        self.eof_at = None          # when lb closed (EOF) or reset it
        self.reset_by_peer = False
        self.closed_here = False    # the script closed or reset it
        self.pos = 0                # how far the script consumed self.data
        self.requests = []
        self.cond = threading.Condition()

    # -- recording (reader thread)
    def _reader(self):
        while True:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data, reset = b"", True
            except OSError:
                data, reset = b"", False
                if not self.closed_here:
                    reset = True
            else:
                reset = False
            with self.cond:
                if data:
                    self.data += data
                    self.chunks.append((time.monotonic(), data))
                else:
                    self.eof_at = time.monotonic()
                    self.reset_by_peer = reset
                self.cond.notify_all()
            if not data:
                return

    def wait(self, pred, timeout):
        """Waits until pred() (called under the lock) is true; returns it."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                v = pred()
                if v:
                    return v
                left = deadline - time.monotonic()
                if left <= 0:
                    return v
                self.cond.wait(min(left, 0.1))

    def wait_eof(self, timeout=3.0):
        """True once lb closed (or reset) this connection."""
        return bool(self.wait(lambda: self.eof_at is not None, timeout))

    def wait_bytes(self, n, timeout=3.0):
        return self.wait(lambda: len(self.data) >= n, timeout)

    # -- parsing what arrived
    def _parse_at(self, pos):
        """(raw_head, body, end) of a complete message at pos, or None."""
        d = self.data
        i = d.find(b"\r\n\r\n", pos)
        if i < 0:
            return None
        head = bytes(d[pos:i + 4])
        p = i + 4
        m = re.search(rb"(?im)^content-length:[ \t]*(\d+)[ \t]*\r?$", head)
        if re.search(rb"(?im)^transfer-encoding:.*chunked", head):
            body = bytearray()
            while True:
                j = d.find(b"\r\n", p)
                if j < 0:
                    return None
                try:
                    size = int(bytes(d[p:j]).split(b";")[0].strip(), 16)
                except ValueError:
                    raise T.TestFailure("backend got a bad chunk line %r" % bytes(d[p:j]))
                p = j + 2
                if size == 0:
                    k = d.find(b"\r\n\r\n", p - 2)
                    if k < 0:
                        return None
                    p = k + 4
                    break
                if len(d) < p + size + 2:
                    return None
                body += d[p:p + size]
                p += size + 2
            return head, bytes(body), p
        n = int(m.group(1)) if m else 0
        if len(d) < p + n:
            return None
        return head, bytes(d[p:p + n]), p + n

    def next_request(self, timeout=30.0):
        """The next complete request, or None at EOF/timeout."""
        def ready():
            return self._parse_at(self.pos) or self.eof_at is not None
        self.wait(ready, timeout)
        with self.cond:
            parsed = self._parse_at(self.pos)
            if not parsed:
                return None
            head, body, end = parsed
            raw = bytes(self.data[self.pos:end])
            start, self.pos = self.pos, end
        with self.backend.lock:
            req = Req(self, self.backend.n_requests, head, body, raw)
            req.start = start
            self.backend.n_requests += 1
            self.backend.requests.append(req)
        self.requests.append(req)
        return req

    # -- acting
    def send(self, data):
        self.sent.append((time.monotonic(), data))
        self.sock.sendall(data)

    def send_bytewise(self, data, pause=0.001):
        for i in range(len(data)):
            self.send(data[i:i + 1])
            time.sleep(pause)

    def shutdown_write(self):
        self.sock.shutdown(socket.SHUT_WR)

    def close(self):
        """A clean close (FIN)."""
        self.closed_here = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def reset(self):
        """An abortive close (RST). The reader thread is woken first (a
        close() while another thread sits in recv() would not release the
        socket, so nothing would be sent)."""
        self.closed_here = True
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass
        self.wait(lambda: self.eof_at is not None, 2)
        try:
            self.sock.close()
        except OSError:
            pass

    def received(self):
        with self.cond:
            return bytes(self.data)

    def received_since(self, req):
        """What arrived on this connection from the start of `req` on."""
        with self.cond:
            return bytes(self.data[req.start:])

    def received_before(self, t):
        with self.cond:
            return b"".join(c for ts, c in self.chunks if ts < t)


def canned(bc, req, body=None):
    """The default good response: 200 naming the connection and request."""
    body = body if body is not None else b"conn=%d req=%d" % (bc.index, req.index)
    return (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Conn: %d\r\n\r\n%s"
            % (len(body), bc.index, body))


class RecordingBackend:
    """A scripted, recording HTTP backend.

    responses: a list consumed one item per request (over all connections, in
    arrival order); an item is raw bytes sent as the answer, or a callable
    f(bc, req) that acts itself (send, close, reset, sleep...) and returns
    "stop" to end the script for that connection (the connection is then
    still read and recorded until lb closes it, unless the script closed it).
    Past the list, requests get `canned`. script: instead, f(bc) runs the
    whole connection."""

    def __init__(self, responses=None, script=None):
        self.responses = list(responses or [])
        self.script = script
        self.lock = threading.Lock()
        self.conns = []
        self.requests = []
        self.n_requests = 0
        self.errors = []
        self.stopping = False
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((T.HOST, 0))
        self.lsock.listen(512)
        self.lsock.settimeout(0.02)
        self.port = self.lsock.getsockname()[1]
        self.address = "%s:%d" % (T.HOST, self.port)
        self.threads = []
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()
        with T._lock:   # lbtest's cleanup stops it after the test (stop(), errors)
            T._fakes.append(self)

    def _accept_loop(self):
        while not self.stopping:
            try:
                s, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            s.settimeout(None)
            with self.lock:
                bc = BConn(self, s, len(self.conns))
                self.conns.append(bc)
            for target in (bc._reader, lambda bc=bc: self._run(bc)):
                t = threading.Thread(target=target, daemon=True)
                self.threads.append(t)
                t.start()

    def _next_action(self):
        with self.lock:
            return self.responses.pop(0) if self.responses else None

    def _run(self, bc):
        try:
            if self.script:
                self.script(bc)
                return
            while True:
                req = bc.next_request(timeout=3600)
                if req is None:
                    return
                action = self._next_action()
                if action is None:
                    bc.send(canned(bc, req))
                elif callable(action):
                    if action(bc, req) == "stop":
                        return
                else:
                    bc.send(action)
        except (OSError, EOFError):
            pass
        except Exception as e:  # a bug in a script: reported by lbtest's cleanup
            self.errors.append(repr(e))

    # -- what was seen
    def n_conns(self):
        with self.lock:
            return len(self.conns)

    def total_bytes(self):
        with self.lock:
            return sum(len(c.data) for c in self.conns)

    def conn(self, i, timeout=3.0):
        T.wait_for(lambda: self.n_conns() > i, timeout, "backend connection #%d" % i)
        return self.conns[i]

    def wait_requests(self, n, timeout=5.0):
        T.wait_for(lambda: self.n_requests >= n, timeout,
                   "%d requests at the backend (have %d)" % (n, self.n_requests))
        return self.requests[:n]

    def all_received(self):
        with self.lock:
            return b"".join(bytes(c.data) for c in self.conns)

    def stop(self):
        self.stopping = True
        try:
            self.lsock.close()
        except OSError:
            pass
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                c.sock.close()
            except OSError:
                pass
        self.thread.join(2)
        for t in self.threads:
            t.join(1)


# ---- lb with extra configuration -----------------------------------------------------

class PrefixedLb(T.Lb):
    """An Lb started as `prefix + [lb, -c, config]` (e.g. prlimit); prlimit
    execs lb, so the pid is lb's."""

    def __init__(self, config_text, port, prefix):
        workdir = T.tmpdir("lb")
        self.workdir = workdir
        self.config_path = os.path.join(workdir, "lb.yaml")
        with open(self.config_path, "w") as f:
            f.write(config_text)
        self.config_text = config_text
        self.port = port
        T.Proc.__init__(self, list(prefix) + [T.LB_BIN, "-c", self.config_path], "lb", workdir)


def start_lb_conf(servers, headers=None, prefix=None, extra_yaml="", **kw):
    """lb over `servers` (lbtest.config_yaml options in kw) plus a `headers:`
    map and any extra YAML, optionally under a command prefix."""
    for attempt in range(3):
        port = T.free_port()
        text = T.config_yaml(port, servers, **kw)
        if headers:
            text += "headers: %s\n" % T._yaml_map(headers)
        text += extra_yaml
        lb = PrefixedLb(text, port, prefix) if prefix else T.Lb(text, port)
        try:
            lb.wait_ready()
            return lb
        except T.TestFailure:
            if attempt < 2 and b"listen on" in lb.stderr():
                continue
            raise
    raise T.TestFailure("lb could not get a port")


# ---- raw client exchanges -------------------------------------------------------

class Result:
    def __init__(self):
        self.raw = b""          # every byte lb sent back
        self.eof = False        # lb closed (FIN) ...
        self.reset = False      # ... or reset the connection
        self.timed_out = False  # neither within the deadline
        self.send_error = None  # lb closed before every byte was sent
        self.elapsed = 0.0

    def responses(self):
        return parse_responses(self.raw)

    def __repr__(self):
        how = "EOF" if self.eof else "RST" if self.reset else "still open"
        return "%r then %s" % (self.raw[:300], how)


def connect(port, timeout=10.0):
    s = socket.create_connection((T.HOST, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def send_data(s, data, bytewise, pause=None):
    """Sends data whole or one byte per send(); returns the error that ended
    sending early (lb closed), or None."""
    try:
        if not bytewise:
            s.sendall(data)
        else:
            if pause is None:
                pause = 0.0005 if len(data) <= 400 else 0.0
            for i in range(len(data)):
                s.sendall(data[i:i + 1])
                if pause:
                    time.sleep(pause)
    except (BrokenPipeError, ConnectionResetError) as e:
        return e
    return None


def _complete(raw):
    rs = parse_responses(raw)
    return bool(rs) and rs[-1][0] is not None and \
        len(rs[-1][2]) == int(rs[-1][1].get("content-length", "0") or 0)


def read_to_eof(s, res, timeout, settle=0.5):
    """Reads until EOF/RST, or `timeout`, or `settle` seconds without more
    bytes once a complete response (by Content-Length) arrived."""
    deadline = time.monotonic() + timeout
    buf = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            res.timed_out = True
            break
        if settle and buf and _complete(bytes(buf)):
            left = min(left, settle)
        s.settimeout(left)
        try:
            data = s.recv(65536)
        except socket.timeout:
            res.timed_out = True
            break
        except ConnectionResetError:
            res.reset = True
            break
        if not data:
            res.eof = True
            break
        buf += data
    res.raw = bytes(buf)
    return res


def exchange(port, data, bytewise=False, timeout=5.0, pause=None):
    """Sends data on a fresh connection, reads until lb closes it (or timeout)."""
    res = Result()
    t0 = time.monotonic()
    s = connect(port)
    try:
        res.send_error = send_data(s, data, bytewise, pause)
        read_to_eof(s, res, timeout)
    finally:
        s.close()
    res.elapsed = time.monotonic() - t0
    return res


def parse_responses(raw):
    """Splits raw bytes into [(status, headers dict lower->value, body, head)]
    using Content-Length (lb's own error answers always carry one); a
    trailing incomplete piece is returned as (None, {}, rest, b'')."""
    out = []
    pos = 0
    while pos < len(raw):
        i = raw.find(b"\r\n\r\n", pos)
        if i < 0:
            out.append((None, {}, raw[pos:], b""))
            break
        head = raw[pos:i + 4]
        lines = head[:-4].split(b"\r\n")
        m = re.match(rb"HTTP/1\.[01] (\d{3})", lines[0])
        if not m:
            out.append((None, {}, raw[pos:], b""))
            break
        hdrs = {}
        for line in lines[1:]:
            n, _, v = line.partition(b":")
            hdrs.setdefault(n.strip().lower().decode(errors="replace"), v.strip().decode(
                errors="replace"))
        n = int(hdrs.get("content-length", "0") or 0)
        body = raw[i + 4:i + 4 + n]
        out.append((int(m.group(1)), hdrs, body, head))
        pos = i + 4 + n
    return out


def refused_problem(res, status):
    """Why `res` is not exactly one `status` answer with Connection: close
    followed by lb closing the connection; None when it is."""
    rs = res.responses()
    if not rs:
        return "no answer (%r)" % res
    st, hdrs, body, head = rs[0]
    if st != status:
        return "expected %d, got %r" % (status, res)
    if hdrs.get("connection", "").lower() != "close":
        return "no Connection: close in %r" % head
    if len(rs) > 1:
        return "more than one answer: %r" % res
    if not (res.eof or res.reset):
        return "connection not closed after the %d (%r)" % (status, res)
    return None


def bytes_repr(b, n=160):
    r = repr(b)
    return r if len(r) <= n else r[:n] + "...'"


# ---- /proc --------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """utime + stime of a process (all threads), in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK



def nofile_limits(pid):
    """(soft, hard) RLIMIT_NOFILE of a process, from /proc/PID/limits."""
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith("Max open files"):
                parts = line.split()
                soft, hard = parts[3], parts[4]
                conv = lambda v: float("inf") if v == "unlimited" else int(v)
                return conv(soft), conv(hard)
    raise T.TestFailure("no Max open files for pid %d" % pid)


def established_from(port):
    """ESTABLISHED TCP connections whose local port is `port` (a listener's
    accepted connections, including ones still in its accept queue)."""
    return sum(1 for f in T.tcp_sockets() if f[3] == "01" and T.tcp_port(f[1]) == port)


def accepted_by(listen_port, client_sock):
    """True once the listener on `listen_port` accept()ed the connection
    whose client side is client_sock: in /proc/net/tcp a connection still
    in the accept queue has no inode yet."""
    cport = client_sock.getsockname()[1]
    for f in T.tcp_sockets():
        if T.tcp_port(f[1]) == listen_port and T.tcp_port(f[2]) == cport:
            return f[9] != "0"
    return False


def recv_queues_to(port):
    """rx_queue (bytes received, not yet read by the process) of every
    ESTABLISHED TCP socket whose remote port is `port`."""
    return [int(f[4].split(":")[1], 16) for f in T.tcp_sockets()
            if f[3] == "01" and T.tcp_port(f[2]) == port]


class Failures:
    """Collects per-case problems so one test reports every failing case."""

    def __init__(self):
        self.items = []

    def add(self, what):
        self.items.append(what)

    def check(self):
        check(not self.items, "%d case(s) failed:\n    " % len(self.items) +
              "\n    ".join(self.items))
