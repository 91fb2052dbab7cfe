#!/usr/bin/env python3
"""lb's command line: -t validates a config (exit 0, or 1 with
"file:line: message" naming the right line), -v, -h, bad options; a config
that fails validation also stops `lb -c`."""
import os
import re
import subprocess

import lbtest as T
from lbtest import check, check_eq

SERVERS = "backends:\n  app:\n    servers:\n      - { address: 127.0.0.1:9001 }\n"

# (name, config text, line the error must name, a word the message must contain)
BAD_CONFIGS = [
    ("unknown top-level key",
     "workers: 2\nlisten:\n  - address: 127.0.0.1:8080\nwrokers: 3\n" + SERVERS, [4], "wrokers"),
    ("unknown server key",
     "backends:\n  app:\n    servers:\n      - { address: 127.0.0.1:9001, wieght: 2 }\n",
     [4], "wieght"),
    ("bad duration",
     "timeouts:\n  connect: 2s\n  server: 2 parsecs\n" + SERVERS, [3], "parsecs"),
    ("bad size", "limits:\n  max_header_size: 12q\n" + SERVERS, [2], "12q"),
    ("size out of range", "limits:\n  max_header_size: 10\n" + SERVERS, [2], "max_header_size"),
    ("bad port",
     "backends:\n  app:\n    servers:\n      - { address: 127.0.0.1:99999 }\n", [4], "99999"),
    ("bad listen address",
     "listen:\n  - address: nohost\n" + SERVERS, [2], "nohost"),
    ("wrong type", "backends:\n  app:\n    servers: 5\n", [3], "list"),
    ("unknown balance",
     "backends:\n  app:\n    balance: random\n    servers:\n      - { address: 127.0.0.1:9001 }\n",
     [3], "random"),
    ("route to an unknown backend",
     SERVERS + "routes:\n  - { path_prefix: /, backend: nope }\n", [6], "nope"),
    ("workers 0", "workers: 0\n" + SERVERS, [1], "workers"),
    ("weight 0",
     "backends:\n  app:\n    servers:\n      - { address: 127.0.0.1:9001, weight: 0 }\n",
     [4], "weight"),
    ("server without address", "backends:\n  app:\n    servers:\n      - { weight: 2 }\n",
     [4], "address"),
    ("YAML syntax error", "backends:\n  app:\n    servers: [\n", [3, 4], ""),
    ("tab indentation", "workers: 1\nbackends:\n\tapp: {}\n", [3], ""),
]


def lb(*args, cwd=None):
    p = subprocess.run([T.LB_BIN] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       cwd=cwd, timeout=20)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def test_version():
    rc, out, err = lb("-v")
    check_eq(rc, 0, "exit status of -v")
    check(re.match(r"^lb \d+\.\d+", out), "-v prints %r" % out)


def test_help():
    rc, out, err = lb("-h")
    check_eq(rc, 0, "exit status of -h")
    for word in ("-c", "-t", "-v", "-h"):
        check(word in out, "-h does not mention %s: %r" % (word, out))


def test_bad_option():
    rc, out, err = lb("-x")
    check(rc != 0, "-x exits %d" % rc)
    check("usage" in err, "usage on stderr: %r" % err)


def test_check_good_configs():
    rc, out, err = lb("-t", "-c", os.path.join(T.SOURCE_DIR, "config", "lb.yaml"))
    check_eq(rc, 0, "config/lb.yaml: %s%s" % (out, err))
    d = T.tmpdir("cli")
    with open(os.path.join(d, "good.yaml"), "w") as f:
        f.write(T.config_yaml(8080, ["127.0.0.1:9001", ("127.0.0.1:9002", 3)], workers=1,
                              balance="leastconn", timeouts={"connect": "500ms"},
                              limits={"max_body_size": "1m"}))
    rc, out, err = lb("-t", "-c", "good.yaml", cwd=d)
    check_eq(rc, 0, "good.yaml: %s%s" % (out, err))


def test_check_bad_configs():
    d = T.tmpdir("cli")
    problems = []
    for name, text, lines, word in BAD_CONFIGS:
        with open(os.path.join(d, "bad.yaml"), "w") as f:
            f.write(text)
        rc, out, err = lb("-t", "-c", "bad.yaml", cwd=d)
        m = re.match(r"^bad\.yaml:(\d+): (.+)$", err.strip().split("\n")[0])
        if rc != 1:
            problems.append("%s: exit %d (%r)" % (name, rc, out + err))
        elif not m:
            problems.append("%s: message %r is not 'bad.yaml:LINE: ...'" % (name, err))
        elif int(m.group(1)) not in lines:
            problems.append("%s: line %s, expected %s (%r)" % (name, m.group(1), lines, err))
        elif word not in m.group(2):
            problems.append("%s: message %r does not mention %r" % (name, err, word))
    check(not problems, "\n  ".join([""] + problems))


def test_missing_file():
    rc, out, err = lb("-t", "-c", "/nonexistent/lb.yaml")
    check_eq(rc, 1, "exit status")
    check("/nonexistent/lb.yaml" in err, "message names the file: %r" % err)


def test_run_refuses_bad_config():
    d = T.tmpdir("cli")
    with open(os.path.join(d, "bad.yaml"), "w") as f:
        f.write(BAD_CONFIGS[0][1])
    rc, out, err = lb("-c", "bad.yaml", cwd=d)
    check_eq(rc, 1, "exit status of lb -c with a bad config")
    check(err.startswith("bad.yaml:4:"), "message %r" % err)


if __name__ == "__main__":
    T.run([test_version, test_help, test_bad_option, test_check_good_configs,
           test_check_bad_configs, test_missing_file, test_run_refuses_bad_config])
