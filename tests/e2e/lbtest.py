"""Shared harness for lb's end-to-end tests (Python 3 standard library only).

What it gives a test file:

- processes: `start_backends(n)` starts lb-backend servers on free loopback
  ports, `start_lb(servers, ...)` writes a YAML config into a temporary
  directory and starts lb on a free port, with its stdout (the access log)
  and stderr captured to files. Both wait, bounded in time, until they
  accept connections.
- `FakeServer`: a tiny Python TCP server for what lb-backend cannot do
  (garbage responses, custom hop-by-hop headers, slowness, counting accepts).
- raw HTTP/1.1 client helpers: `Conn` (send bytes, read whole responses with
  Content-Length, chunked or close-delimited bodies, interim 1xx answers),
  `request()` for one request on its own connection.
- `run(tests)`: runs named test functions, prints "ok NAME" or
  "FAIL NAME: reason", then "N passed, M failed"; exits non-zero on failure.
  After each test it closes the test's connections and stops every process
  the test started, by pid (SIGTERM, then SIGKILL after a timeout); an lb
  that does not exit 0 on SIGTERM, or that printed a sanitizer report, fails
  the test. A watchdog bounds every test in time.

Environment: LB_BIN, LB_BACKEND_BIN, LB_SOURCE_DIR (set by ctest). Running a
file by hand also works from a build named build/: `python3 test_x.py [NAME..]`
runs only the named tests.
"""
import atexit
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

SOURCE_DIR = os.environ.get(
    "LB_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
LB_BIN = os.environ.get("LB_BIN", os.path.join(SOURCE_DIR, "build", "lb"))
BACKEND_BIN = os.environ.get("LB_BACKEND_BIN",
                             os.path.join(SOURCE_DIR, "build", "backends", "lb-backend"))

HOST = "127.0.0.1"
MiB = 1024 * 1024
# What lb-backend's /bytes streams: this pattern, repeated.
PATTERN = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_"
SANITIZER_MARKS = (b"AddressSanitizer", b"LeakSanitizer", b"runtime error:",
                   b"UndefinedBehaviorSanitizer")

_tmp_root = tempfile.mkdtemp(prefix="lb-e2e-")
_keep_tmp = False
_procs = []      # every Proc started, in order
_fakes = []      # every FakeServer started
_conns = []      # every Conn opened (closed after each test)
_lock = threading.Lock()


def pattern_bytes(n, offset=0):
    """n bytes of /bytes output starting at `offset`."""
    start = offset % len(PATTERN)
    reps = (start + n) // len(PATTERN) + 1
    return (PATTERN * reps)[start:start + n]


class TestFailure(AssertionError):
    pass


def check(cond, what):
    if not cond:
        raise TestFailure(what)


def check_eq(got, want, what):
    if got != want:
        raise TestFailure("%s: expected %r, got %r" % (what, want, got))


def wait_for(pred, timeout, what, interval=0.02):
    """Polls pred() until it returns a true value (returned) or `timeout`
    seconds pass (TestFailure naming `what`)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise TestFailure("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def free_port():
    """A loopback TCP port nobody listens on right now (bind 0, close)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((HOST, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def port_accepts(port, timeout=0.5):
    try:
        socket.create_connection((HOST, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def tcp_sockets():
    """Every TCP socket of this machine, as the split fields of a line of
    /proc/net/tcp and /proc/net/tcp6 (local, remote, state, queues, ...,
    inode at [9]); what `ss` shows, without needing ss."""
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    yield line.split()
        except FileNotFoundError:
            continue


def tcp_port(address):
    """The port of a /proc/net/tcp address field ("0100007F:1F90")."""
    return int(address.rsplit(":", 1)[1], 16)


def established_to(port):
    """How many ESTABLISHED TCP connections have remote port `port`: for a
    backend's port, lb's pooled connections to it (the backend's own side
    has it as the local port and is not counted)."""
    return sum(1 for f in tcp_sockets() if f[3] == "01" and tcp_port(f[2]) == port)


def fd_count(pid):
    """How many file descriptors process `pid` holds."""
    return len(os.listdir("/proc/%d/fd" % pid))


def tmpdir(name):
    """A fresh directory under this run's temporary root."""
    path = tempfile.mkdtemp(prefix=name + "-", dir=_tmp_root)
    return path


# ---- processes --------------------------------------------------------------

class Proc:
    """A child process with stdout/stderr in files, stopped by pid."""

    def __init__(self, argv, name, workdir, cwd=None, env=None):
        self.name = name
        self.argv = argv
        self.stdout_path = os.path.join(workdir, name + ".out")
        self.stderr_path = os.path.join(workdir, name + ".err")
        self.checked = False   # the test looked at the exit itself
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         cwd=cwd or workdir, env=env)
        self.pid = self.proc.pid
        with _lock:
            _procs.append(self)

    def alive(self):
        return self.proc.poll() is None

    def signal(self, sig):
        if self.alive():
            os.kill(self.pid, sig)

    def wait(self, timeout):
        """The exit status, or None if still running after `timeout`."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=10.0):
        """SIGTERM, then SIGKILL if it lingers past `timeout`. Returns the exit
        status, and whether SIGKILL was needed."""
        killed = False
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
            if self.wait(timeout) is None:
                killed = True
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode, killed

    def kill(self):
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass

    def stdout(self):
        with open(self.stdout_path, "rb") as f:
            return f.read()

    def stderr(self):
        with open(self.stderr_path, "rb") as f:
            return f.read()

    def sanitizer_report(self):
        err = self.stderr()
        return any(m in err for m in SANITIZER_MARKS)

    def tail(self, n=25):
        lines = self.stderr().decode(errors="replace").splitlines()
        return "\n".join("    " + l for l in lines[-n:])


class Backend(Proc):
    """One lb-backend on 127.0.0.1. port=0 lets it pick a free port; it says
    which on stderr once it accepts ("lb-backend ID listening on ADDR:PORT")."""

    def __init__(self, ident, port=0, workdir=None):
        workdir = workdir or tmpdir("backend-" + ident)
        super().__init__([BACKEND_BIN, "--listen", "%s:%d" % (HOST, port), "--id", ident],
                         "backend-" + ident, workdir)
        self.ident = ident

        def ready():
            if not self.alive():
                raise TestFailure("lb-backend %s exited %s:\n%s" % (
                    ident, self.proc.returncode, self.tail()))
            return re.search(rb"listening on 127\.0\.0\.1:(\d+)", self.stderr())
        m = wait_for(ready, 10, "lb-backend %s to listen" % ident)
        self.port = int(m.group(1))
        self.address = "%s:%d" % (HOST, self.port)
        wait_for(lambda: port_accepts(self.port), 10, "lb-backend %s to accept" % ident)


def start_backends(n, prefix="b"):
    """n lb-backends named b1..bn, each accepting connections."""
    return [Backend("%s%d" % (prefix, i + 1)) for i in range(n)]


def _yaml_scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _yaml_map(d):
    return "{ " + ", ".join("%s: %s" % (k, _yaml_scalar(v)) for k, v in d.items()) + " }"


def _server_entry(s):
    """A server given as "addr", a Backend, (addr, weight) or a dict."""
    if isinstance(s, Backend):
        return {"address": s.address}
    if isinstance(s, FakeServer):
        return {"address": s.address}
    if isinstance(s, tuple):
        addr, weight = s
        if isinstance(addr, (Backend, FakeServer)):
            addr = addr.address
        return {"address": addr, "weight": weight}
    if isinstance(s, dict):
        return dict(s)
    return {"address": s}


def config_yaml(port, servers=None, workers=2, balance=None, timeouts=None, limits=None,
                keepalive=None, keepalive_timeout=None, backends=None, routes=None,
                access="stdout"):
    """The text of an lb config listening on 127.0.0.1:port.

    servers: the servers of the one backend "app" (strings, Backends,
    (address, weight) pairs or dicts); backends: instead, a dict name ->
    dict(servers=[...], balance=..., keepalive=...); routes: a list of dicts.
    timeouts/limits: dicts merged over the harness defaults (drain 5s, so a
    stop is quick)."""
    t = {"drain": "5s"}
    t.update(timeouts or {})
    lines = ["# written by tests/e2e/lbtest.py",
             "workers: %s" % workers,
             "listen:",
             "  - address: %s:%d" % (HOST, port),
             "log: { access: %s }" % access,
             "timeouts: %s" % _yaml_map(t)]
    if limits:
        lines.append("limits: %s" % _yaml_map(limits))
    if backends is None:
        backends = {"app": {"servers": servers or [], "balance": balance,
                            "keepalive": keepalive, "keepalive_timeout": keepalive_timeout}}
    lines.append("backends:")
    for name, b in backends.items():
        lines.append("  %s:" % name)
        for key in ("balance", "keepalive", "keepalive_timeout"):
            if b.get(key) is not None:
                lines.append("    %s: %s" % (key, b[key]))
        lines.append("    servers:")
        for s in b["servers"]:
            lines.append("      - %s" % _yaml_map(_server_entry(s)))
    if routes:
        lines.append("routes:")
        for r in routes:
            lines.append("  - %s" % _yaml_map(r))
    return "\n".join(lines) + "\n"


class Lb(Proc):
    """lb running a config text; `port` is where it listens."""

    def __init__(self, config_text, port, workdir=None):
        workdir = workdir or tmpdir("lb")
        self.workdir = workdir
        self.config_path = os.path.join(workdir, "lb.yaml")
        with open(self.config_path, "w") as f:
            f.write(config_text)
        self.config_text = config_text
        self.port = port
        super().__init__([LB_BIN, "-c", self.config_path], "lb", workdir)

    def wait_ready(self, timeout=15):
        def ready():
            if not self.alive():
                return "exited"
            return port_accepts(self.port, 0.5) and "up"
        state = wait_for(ready, timeout, "lb to accept on port %d" % self.port)
        if state == "exited":
            raise TestFailure("lb exited %s at start:\n%s\nconfig:\n%s" % (
                self.proc.returncode, self.tail(), self.config_text))

    def access_lines(self):
        return [l for l in self.stdout().decode(errors="replace").split("\n") if l]

    def wait_access(self, n, timeout=5):
        """The access log once it has at least n lines."""
        wait_for(lambda: len(self.access_lines()) >= n, timeout,
                 "%d access log lines (have %d)" % (n, len(self.access_lines())))
        return self.access_lines()

    def rss_kb(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise TestFailure("no VmRSS for lb")

    def expect_clean_exit(self, timeout=None):
        """SIGTERM; lb must exit 0 without a sanitizer report."""
        rc, killed = self.stop(timeout or 15)
        self.checked = True
        check(not killed, "lb did not exit within %ss of SIGTERM:\n%s" % (timeout or 15,
                                                                          self.tail()))
        check(rc == 0, "lb exited %s on SIGTERM:\n%s" % (rc, self.tail()))
        check(not self.sanitizer_report(), "sanitizer report from lb:\n%s" % self.tail(60))


def start_lb(servers=None, **kw):
    """Starts lb over `servers` (see config_yaml for the options) on a free
    port and waits until it accepts. Retries with another port if the one
    picked was taken meanwhile."""
    for attempt in range(3):
        port = free_port()
        lb = Lb(config_yaml(port, servers, **kw), port)
        try:
            lb.wait_ready()
            return lb
        except TestFailure:
            if attempt < 2 and b"listen on" in lb.stderr():
                continue
            raise
    raise TestFailure("lb could not get a port")


def start_lb_text(text_for_port):
    """Starts lb from a config text produced by text_for_port(port)."""
    port = free_port()
    lb = Lb(text_for_port(port), port)
    lb.wait_ready()
    return lb


# ---- a Python TCP server for misbehaving or instrumented backends ----------

class FakeServer:
    """A TCP server on a free loopback port. `handler(sock, fake)` runs in a
    thread per accepted connection; `accepts` counts connections, `requests`
    what the handler counts with fake.count()."""

    def __init__(self, handler):
        self.handler = handler
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((HOST, 0))
        self.lsock.listen(128)
        self.lsock.settimeout(0.1)
        self.port = self.lsock.getsockname()[1]
        self.address = "%s:%d" % (HOST, self.port)
        self.accepts = 0
        self.requests = 0
        self.stopping = False
        self.socks = []
        self.threads = []
        self.errors = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()
        with _lock:
            _fakes.append(self)

    def count(self):
        with self.lock:
            self.requests += 1

    def _accept_loop(self):
        while not self.stopping:
            try:
                s, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            s.settimeout(30)
            with self.lock:
                self.accepts += 1
                self.socks.append(s)
            t = threading.Thread(target=self._run, args=(s,), daemon=True)
            self.threads.append(t)
            t.start()

    def _run(self, s):
        try:
            self.handler(s, self)
        except (OSError, EOFError):
            pass
        except Exception as e:  # a bug in a handler: reported by stop()
            self.errors.append(repr(e))
        finally:
            try:
                s.close()
            except OSError:
                pass

    def stop(self):
        self.stopping = True
        try:
            self.lsock.close()
        except OSError:
            pass
        with self.lock:
            socks = list(self.socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.thread.join(2)
        for t in self.threads:
            t.join(2)


def recv_request(s, buf):
    """Reads one request (head + Content-Length body) from socket s, with
    `buf` (a bytearray) holding bytes already read. Returns (head, body) or
    None at EOF before a request."""
    while b"\r\n\r\n" not in buf:
        data = s.recv(65536)
        if not data:
            return None
        buf += data
    i = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:i])
    del buf[:i]
    m = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    n = int(m.group(1)) if m else 0
    while len(buf) < n:
        data = s.recv(65536)
        if not data:
            return None
        buf += data
    body = bytes(buf[:n])
    del buf[:n]
    return head, body


def http_handler(response, delay=0.0):
    """A keep-alive handler answering every request with response(head, body)
    (bytes) after `delay` seconds, counting requests."""
    def handler(s, fake):
        buf = bytearray()
        while True:
            req = recv_request(s, buf)
            if req is None:
                return
            fake.count()
            if delay:
                time.sleep(delay)
            s.sendall(response(*req))
    return handler


def ok_response(body=b"ok", extra=b""):
    return lambda head, body_in: (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s"
                                  % (len(body), extra, body))


# ---- the client side ---------------------------------------------------------

class Response:
    def __init__(self, version, status, reason, headers, raw_head):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers      # [(name, value)] as received
        self.raw_head = raw_head
        self.body = b""
        self.interim = []           # 1xx responses before this one
        self.close_delimited = False

    def header(self, name):
        v = self.all(name)
        return v[0] if v else None

    def all(self, name):
        name = name.lower()
        return [v for n, v in self.headers if n.lower() == name]

    def __repr__(self):
        return "<Response %d %r body=%r>" % (self.status, self.raw_head[:300], self.body[:200])


def parse_head(raw):
    lines = raw[:-4].split(b"\r\n")
    m = re.match(rb"(HTTP/1\.[01]) (\d{3}) ?(.*)$", lines[0])
    if not m:
        raise TestFailure("bad status line %r" % lines[0])
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise TestFailure("bad header line %r" % line)
        headers.append((name.decode(), value.strip().decode(errors="replace")))
    return Response(m.group(1).decode(), int(m.group(2)), m.group(3).decode(), headers, raw)


class Conn:
    """A raw client connection to 127.0.0.1:port with a read buffer; every
    read is bounded by `timeout` seconds."""

    def __init__(self, port, timeout=10.0, nodelay=True, rcvbuf=None):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        if nodelay:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if rcvbuf:  # a small one makes a slow reader: lb's sends then block
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.buf = bytearray()
        self.timeout = timeout
        with _lock:
            _conns.append(self)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        self.sock.sendall(data)

    def send_bytewise(self, data, pause=0.0):
        """One send() per byte (TCP_NODELAY is on, so mostly one segment each)."""
        for i in range(len(data)):
            self.sock.sendall(data[i:i + 1])
            if pause:
                time.sleep(pause)

    def shutdown_write(self):
        self.sock.shutdown(socket.SHUT_WR)

    def _fill(self):
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            raise TestFailure("no response bytes within %.1fs (have %r)" % (
                self.timeout, bytes(self.buf[:200])))
        if not data:
            raise EOFError("connection closed by lb (have %r)" % bytes(self.buf[:200]))
        self.buf += data

    def read_until(self, sep):
        start = 0
        while True:
            i = self.buf.find(sep, start)
            if i >= 0:
                out = bytes(self.buf[:i + len(sep)])
                del self.buf[:i + len(sep)]
                return out
            start = max(0, len(self.buf) - len(sep) + 1)
            self._fill()

    def read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_to_eof(self):
        while True:
            try:
                self._fill()
            except EOFError:
                break
            except ConnectionResetError:
                break
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def read_chunked(self):
        body = bytearray()
        while True:
            size_line = self.read_until(b"\r\n")
            try:
                size = int(size_line.split(b";")[0].strip(), 16)
            except ValueError:
                raise TestFailure("bad chunk size line %r" % size_line)
            if size == 0:
                while self.read_until(b"\r\n") != b"\r\n":
                    pass  # trailers
                return bytes(body)
            body += self.read_exact(size)
            check(self.read_exact(2) == b"\r\n", "chunk not followed by CRLF")

    def read_head(self):
        """The next response head (interim or final), body not read."""
        return parse_head(self.read_until(b"\r\n\r\n"))

    def read_body(self, r, method="GET"):
        if method == "HEAD" or r.status in (204, 304) or r.status < 200:
            r.body = b""
        elif "chunked" in ",".join(r.all("transfer-encoding")).lower():
            r.body = self.read_chunked()
        elif r.header("content-length") is not None:
            r.body = self.read_exact(int(r.header("content-length")))
        else:
            r.close_delimited = True
            r.body = self.read_to_eof()
        return r

    def read_response(self, method="GET"):
        """The next final response with its body; 1xx ones before it (other
        than 101) are collected in .interim."""
        interim = []
        while True:
            r = self.read_head()
            if 100 <= r.status < 200 and r.status != 101:
                interim.append(r)
                continue
            break
        r.interim = interim
        return self.read_body(r, method)

    def is_closed(self, wait=3.0):
        """True when lb closed the connection (EOF or reset) with nothing more
        to read within `wait` seconds."""
        if self.buf:
            return False
        self.sock.settimeout(wait)
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False
        finally:
            self.sock.settimeout(self.timeout)


def build_request(method="GET", target="/", headers=None, body=None, version="1.1",
                  host="example.com"):
    """Request bytes. headers: list of (name, value) or raw bytes lines;
    a Content-Length is added for a body unless headers carry framing."""
    lines = [b"%s %s HTTP/%s" % (method.encode(), target.encode(), version.encode())]
    if host is not None:
        lines.append(b"Host: " + host.encode())
    names = []
    if isinstance(headers, bytes):
        raw = headers
    else:
        raw = b""
        for n, v in headers or []:
            names.append(n.lower())
            lines.append(b"%s: %s" % (n.encode(), v.encode()))
    if body is not None and "content-length" not in names and \
            "transfer-encoding" not in names and b"transfer-encoding" not in raw.lower():
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n" + raw + b"\r\n" + (body or b"")


def request(port, method="GET", target="/", headers=None, body=None, version="1.1",
            host="example.com", timeout=10.0):
    """One request on a fresh connection; the response, its body read."""
    c = Conn(port, timeout=timeout)
    try:
        c.send(build_request(method, target, headers, body, version, host))
        return c.read_response(method)
    finally:
        c.close()


# ---- the access log -----------------------------------------------------------

# client time "METHOD target" status bytes server connect response total
ACCESS_RE = re.compile(
    r'^(?P<client>\S+) (?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) "(?P<request>[^"]*)" '
    r'(?P<status>\d{3}) (?P<bytes>\d+) (?P<server>\S+) (?P<connect>-|\d+\.\d{3}) '
    r'(?P<response>-|\d+\.\d{3}) (?P<total>\d+\.\d{3})$')


def parse_access(line):
    m = ACCESS_RE.match(line)
    check(m, "access log line does not match the format: %r" % line)
    return m.groupdict()


# ---- the runner -----------------------------------------------------------------

_current = {"name": None, "deadline": None}


def _watchdog():
    while True:
        time.sleep(0.5)
        d = _current["deadline"]
        if d is not None and time.monotonic() > d:
            print("FAIL %s: exceeded its time limit; killing everything" % _current["name"],
                  flush=True)
            for p in list(_procs):
                p.kill()
            print("watchdog: aborted", flush=True)
            print("%d passed, %d failed" % (_counts[0], _counts[1] + 1), flush=True)
            os._exit(1)


_counts = [0, 0]


def _cleanup_after(first_proc, first_fake):
    """Closes every connection, stops the fakes and the processes a test
    started. Returns a failure text, or None."""
    problems = []
    with _lock:
        conns = list(_conns)
        del _conns[:]
        fakes = _fakes[first_fake:]
        procs = _procs[first_proc:]
    for c in conns:
        c.close()
    for p in reversed(procs):
        died = not p.alive()
        if isinstance(p, Lb) and not p.checked:
            if died:
                problems.append("lb died during the test (status %s):\n%s" % (
                    p.proc.returncode, p.tail(60)))
            else:
                rc, killed = p.stop(15)
                if killed:
                    problems.append("lb did not exit within 15s of SIGTERM:\n%s" % p.tail())
                elif rc != 0:
                    problems.append("lb exited %s on SIGTERM:\n%s" % (rc, p.tail(60)))
        elif isinstance(p, Backend) and died and not p.checked:
            problems.append("lb-backend %s died (status %s):\n%s" % (
                p.ident, p.proc.returncode, p.tail()))
        p.stop(10)
        if isinstance(p, Lb) and p.sanitizer_report():
            problems.append("sanitizer report from lb:\n%s" % p.tail(80))
    for f in fakes:
        f.stop()
        if f.errors:
            problems.append("fake server handler errors: %s" % f.errors)
    return "\n".join(problems) or None


def _stop_everything():
    for p in reversed(list(_procs)):
        p.kill()
    for f in list(_fakes):
        f.stop()
    if not _keep_tmp:
        shutil.rmtree(_tmp_root, ignore_errors=True)


atexit.register(_stop_everything)


def run(tests, per_test_timeout=90):
    """Runs the test functions (their names without a "test_" prefix are
    what is printed), each bounded by per_test_timeout seconds."""
    global _keep_tmp
    for path, what in ((LB_BIN, "LB_BIN"), (BACKEND_BIN, "LB_BACKEND_BIN")):
        if not os.access(path, os.X_OK):
            print("FAIL setup: %s=%s is not an executable" % (what, path))
            print("0 passed, 1 failed")
            sys.exit(1)
    wanted = set(sys.argv[1:])
    # ctest's timeout or a Ctrl-C: stop what was started before going.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    threading.Thread(target=_watchdog, daemon=True).start()
    for t in tests:
        name = t.__name__[5:] if t.__name__.startswith("test_") else t.__name__
        if wanted and name not in wanted and t.__name__ not in wanted:
            continue
        first_proc, first_fake = len(_procs), len(_fakes)
        _current["name"] = name
        _current["deadline"] = time.monotonic() + per_test_timeout
        t0 = time.monotonic()
        reason = None
        try:
            t()
        except TestFailure as e:
            reason = str(e)
        except Exception as e:
            reason = "%s: %s\n%s" % (type(e).__name__, e, traceback.format_exc(limit=6))
        cleanup_problem = _cleanup_after(first_proc, first_fake)
        _current["deadline"] = None
        if reason is None and cleanup_problem:
            reason = cleanup_problem
        took = time.monotonic() - t0
        if reason is None:
            _counts[0] += 1
            print("ok %s (%.2fs)" % (name, took), flush=True)
        else:
            _counts[1] += 1
            _keep_tmp = True
            print("FAIL %s: %s" % (name, reason), flush=True)
            lbs = [p for p in _procs[first_proc:] if isinstance(p, Lb)]
            for p in lbs[-1:]:
                print("  lb stderr (%s):\n%s" % (p.stderr_path, p.tail(15)), flush=True)
    if _keep_tmp:
        print("files of the failed tests kept in %s" % _tmp_root)
    print("%d passed, %d failed" % (_counts[0], _counts[1]), flush=True)
    sys.exit(1 if _counts[1] else 0)
