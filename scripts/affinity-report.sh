#!/usr/bin/env bash
# Session affinity under a server failure, lb against HAProxy and nginx (not a
# test): N lb-backends behind five proxy setups on loopback, all at once;
# K simulated sessions through each; one backend killed with SIGKILL; every
# session asked again. Prints one Markdown table to stdout (progress goes to
# stderr): the fraction of sessions that moved (expected: only the dead
# server's, about 1/N) and the fraction of the dead server's sessions that
# landed on a working server. See docs/AFFINITY.md.
#
#   scripts/affinity-report.sh [--backends N] [--sessions K] [--settle S]
#
#   --backends N   lb-backend processes behind every proxy (default 5, 2..16)
#   --sessions K   simulated sessions per proxy setup (default 1000, 1..20000)
#   --settle S     seconds between the kill and the re-requests, for the
#                  active health checks to notice (default 3; lb and HAProxy
#                  check every 200ms, fall 3, timeout 200ms; nginx has only
#                  passive checks)
#
# The setups: lb with cookie affinity; lb with balance: hash on a cookie;
# HAProxy with `cookie SRV insert indirect nocache`; HAProxy with
# `balance hash req.cook(uid)` + `hash-type consistent`; nginx with
# `hash $cookie_uid consistent`. A session is a client with its own cookie
# jar and a fixed `uid` cookie (the hash key), talking to lb-backend's
# /session (which keeps a per-session counter under a `sid` cookie it sets).
# Environment: LB_KEEP_TMP=1 keeps the configs and logs.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$LB_ROOT"

n_backends=5
sessions=1000
settle=3

while [ $# -gt 0 ]; do
  case $1 in
    --backends) lb_need_arg "$@"; n_backends=$2; shift 2 ;;
    --sessions) lb_need_arg "$@"; sessions=$2; shift 2 ;;
    --settle) lb_need_arg "$@"; settle=$2; shift 2 ;;
    -h | --help) lb_usage; exit 0 ;;
    *) lb_die "unknown argument '$1' (try --help)" ;;
  esac
done
# count VALUE MIN MAX NAME: VALUE must be a whole number from MIN to MAX.
count() {
  if ! [[ $1 =~ ^[0-9]{1,6}$ ]] || [ "$1" -lt "$2" ] || [ "$1" -gt "$3" ]; then
    lb_die "$4: $2..$3, not '$1'"
  fi
}
count "$n_backends" 2 16 --backends
count "$sessions" 1 20000 --sessions
count "$settle" 1 60 --settle

LB_SETUP_BENCH=1 scripts/setup.sh
build=$LB_ROOT/build-rel-aff
lb_log "building $build (Release)"
cmake -S "$LB_ROOT" -B "$build" -DCMAKE_BUILD_TYPE=Release --log-level=WARNING >/dev/null
cmake --build "$build" -j2 >/dev/null 2>&1 || cmake --build "$build" -j1
LB_BIN=$build/lb
BACKEND_BIN=$build/backends/lb-backend

NGINX=$(lb_find_bin nginx)
HAPROXY=$(lb_find_bin haproxy)

lb_tmpdir
T=$LB_TMP
SECRET="affinity-report-secret-0123456789"

show_logs() {
  local f
  for f in "$@"; do
    [ -s "$f" ] && { lb_log "--- $f"; tail -n 20 "$f" >&2; }
  done
  return 0
}

# --- backends --------------------------------------------------------------------

lb_log "starting $n_backends backends"
backend_pids=()
backend_ports=()
for ((i = 1; i <= n_backends; i++)); do
  lb_bg "$BACKEND_BIN" --listen 127.0.0.1:0 --id "b$i" 2>"$T/backend$i.log"
  backend_pids+=("$LB_PID")
  port=$(lb_backend_port "$T/backend$i.log" "$LB_PID") ||
    { show_logs "$T/backend$i.log"; lb_die "backend b$i did not start"; }
  backend_ports+=("$port")
done

# --- proxies ---------------------------------------------------------------------

mapfile -t ports < <(lb_free_ports 5)
lbc_port=${ports[0]} lbh_port=${ports[1]} hac_port=${ports[2]} hah_port=${ports[3]}
ngx_port=${ports[4]}

# lb_config PORT KEYS...: an lb config over the backends with the extra keys.
lb_config() {
  local port=$1 i
  shift
  echo "workers: 2"
  echo "listen:"
  echo "  - address: 127.0.0.1:$port"
  echo "log: { access: off }"
  echo "timeouts: { connect: 1s, drain: 2s }"
  echo "backends:"
  echo "  app:"
  for line in "$@"; do echo "    $line"; done
  echo "    health: { interval: 200ms, timeout: 200ms, rise: 2, fall: 3 }"
  echo "    servers:"
  for ((i = 0; i < n_backends; i++)); do
    echo "      - { id: b$((i + 1)), address: 127.0.0.1:${backend_ports[i]} }"
  done
}
lb_config "$lbc_port" "affinity: { cookie: LBSRV, secret: \"$SECRET\", max_age: 0 }" \
  >"$T/lb-cookie.yaml"
lb_config "$lbh_port" "balance: hash" "hash_key: \"cookie:uid\"" >"$T/lb-hash.yaml"

{
  echo "global"
  echo "  nbthread 2"
  echo "defaults"
  echo "  mode http"
  echo "  option http-keep-alive"
  echo "  option redispatch"
  echo "  retries 2"
  echo "  timeout connect 1s"
  echo "  timeout client 30s"
  echo "  timeout server 30s"
  echo "  timeout check 200ms"
  echo "  default-server check inter 200ms fall 3 rise 2"
  echo "frontend fe_cookie"
  echo "  bind 127.0.0.1:$hac_port"
  echo "  default_backend be_cookie"
  echo "frontend fe_hash"
  echo "  bind 127.0.0.1:$hah_port"
  echo "  default_backend be_hash"
  echo "backend be_cookie"
  echo "  balance roundrobin"
  echo "  cookie SRV insert indirect nocache"
  echo "  option httpchk GET /health"
  for ((i = 0; i < n_backends; i++)); do
    echo "  server b$((i + 1)) 127.0.0.1:${backend_ports[i]} cookie b$((i + 1))"
  done
  echo "backend be_hash"
  echo "  balance hash req.cook(uid)"
  echo "  hash-type consistent"
  echo "  option httpchk GET /health"
  for ((i = 0; i < n_backends; i++)); do
    echo "  server b$((i + 1)) 127.0.0.1:${backend_ports[i]}"
  done
} >"$T/haproxy.cfg"

mkdir -p "$T/nginx"
{
  echo "worker_processes 1;"
  echo "pid $T/nginx/nginx.pid;"
  echo "error_log $T/nginx/error.log warn;"
  echo "events { worker_connections 4096; }"
  echo "http {"
  echo "  access_log off;"
  for d in client_body proxy fastcgi uwsgi scgi; do echo "  ${d}_temp_path $T/nginx/$d;"; done
  echo "  upstream app {"
  echo "    hash \$cookie_uid consistent;"
  for p in "${backend_ports[@]}"; do echo "    server 127.0.0.1:$p max_fails=1 fail_timeout=10s;"; done
  echo "  }"
  echo "  server {"
  echo "    listen 127.0.0.1:$ngx_port;"
  echo "    location / {"
  echo "      proxy_pass http://app;"
  echo "      proxy_http_version 1.1;"
  echo "      proxy_set_header Connection \"\";"
  echo "      proxy_connect_timeout 1s;"
  echo "      proxy_next_upstream error timeout;"
  echo "    }"
  echo "  }"
  echo "}"
} >"$T/nginx/nginx.conf"

for f in lb-cookie lb-hash; do
  "$LB_BIN" -t -c "$T/$f.yaml" >/dev/null 2>"$T/$f.check" ||
    { show_logs "$T/$f.check"; lb_die "lb rejected $f.yaml"; }
done
"$HAPROXY" -c -q -f "$T/haproxy.cfg" || lb_die "haproxy rejected its configuration"
"$NGINX" -t -q -c "$T/nginx/nginx.conf" -p "$T/nginx" -e "$T/nginx/error.log" ||
  { show_logs "$T/nginx/error.log"; lb_die "nginx rejected its configuration"; }

lb_log "starting lb (2 processes), haproxy, nginx"
lb_bg "$LB_BIN" -c "$T/lb-cookie.yaml" >"$T/lb-cookie.log" 2>&1
lbc_pid=$LB_PID
lb_bg "$LB_BIN" -c "$T/lb-hash.yaml" >"$T/lb-hash.log" 2>&1
lbh_pid=$LB_PID
lb_bg "$HAPROXY" -f "$T/haproxy.cfg" -db >"$T/haproxy.log" 2>&1
ha_pid=$LB_PID
lb_bg "$NGINX" -c "$T/nginx/nginx.conf" -p "$T/nginx" -e "$T/nginx/error.log" \
  -g 'daemon off;' >"$T/nginx/stdout.log" 2>&1
ngx_pid=$LB_PID
lb_wait_port "$lbc_port" "$lbc_pid" || { show_logs "$T/lb-cookie.log"; lb_die "lb did not start"; }
lb_wait_port "$lbh_port" "$lbh_pid" || { show_logs "$T/lb-hash.log"; lb_die "lb did not start"; }
lb_wait_port "$hac_port" "$ha_pid" || { show_logs "$T/haproxy.log"; lb_die "haproxy did not start"; }
lb_wait_port "$hah_port" "$ha_pid" || { show_logs "$T/haproxy.log"; lb_die "haproxy did not start"; }
lb_wait_port "$ngx_port" "$ngx_pid" ||
  { show_logs "$T/nginx/error.log" "$T/nginx/stdout.log"; lb_die "nginx did not start"; }
sleep 1 # the first health checks pass everywhere (rise counts from up at start)

first_line() { { "$@" 2>&1 || true; } | head -n1; }
haproxy_v=$(first_line "$HAPROXY" -v)
lb_log "$(first_line "$LB_BIN" -v); $(first_line "$NGINX" -v); ${haproxy_v%% 20[0-9][0-9]/*}"

# --- the sessions: a Python client drives every setup in parallel ------------------
#
# Phases, each setup in its own thread, its sessions one after another (one
# request in flight per setup: no load for bounded load to react to):
#   1. establish: a first request per session (no cookie but `uid`);
#   2. confirm: a second request, which must land on the same server;
#   -- the script kills backend b$victim with SIGKILL and waits --settle s --
#   3. after: a request per session; moved = served by another server than
#      in phase 1 (or failed);
#   4. again: one more request: did the moved sessions stay?
victim=1
cat >"$T/client.py" <<'PYEOF'
import json, os, socket, sys, threading, time

out_path, ready_path, go_path, k = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
setups = [(a.split("=")[0], int(a.split("=")[1])) for a in sys.argv[5:]]


def request(port, cookies):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        head = "GET /session HTTP/1.1\r\nHost: affinity.test\r\nConnection: close\r\n"
        if cookies:
            head += "Cookie: " + "; ".join("%s=%s" % kv for kv in cookies.items()) + "\r\n"
        s.sendall((head + "\r\n").encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    head = data.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    server, setc = None, []
    for line in head[1:]:
        name, _, value = line.partition(":")
        if name.lower() == "x-backend-id":
            server = value.strip()
        elif name.lower() == "set-cookie":
            setc.append(value.strip())
    return status, server, setc


def phase(port, jars, log):
    """One request per session, one after another; the jars take the
    answers' cookies. Appends (status, server) per session."""
    for jar in jars:
        try:
            status, server, setc = request(port, jar)
        except (OSError, ValueError, IndexError):
            status, server, setc = 0, None, []
        for c in setc:
            name, _, value = c.split(";")[0].partition("=")
            jar[name.strip()] = value.strip()
        log.append((status, server if status == 200 else None))


def run_setup(name, port):
    jars = [{"uid": "user-%05d" % i} for i in range(k)]
    r = results[name] = {}
    for ph in ("establish", "confirm", "after", "again"):
        if ph == "after":
            go.wait()
        r[ph] = []
        phase(port, jars, r[ph])
        if ph == "confirm":
            established.release()


results = {}
go = threading.Event()
established = threading.Semaphore(0)
threads = [threading.Thread(target=run_setup, args=s, daemon=True) for s in setups]
t0 = time.monotonic()
for t in threads:
    t.start()
for _ in setups:
    established.acquire()
print("established %d sessions in each of %d setups in %.1fs" % (
    k, len(setups), time.monotonic() - t0), file=sys.stderr, flush=True)
open(ready_path, "w").close()  # the script kills a backend now
while not os.path.exists(go_path):
    time.sleep(0.02)
go.set()
for t in threads:
    t.join()
with open(out_path, "w") as f:
    json.dump(results, f)
PYEOF
lb_bg timeout -k 5 $((120 + sessions / 5 + settle)) python3 "$T/client.py" "$T/results.json" \
  "$T/ready" "$T/go" "$sessions" "lb cookie=$lbc_port" "lb hash=$lbh_port" \
  "haproxy cookie=$hac_port" "haproxy hash=$hah_port" "nginx hash=$ngx_port" 2>"$T/client.log"
client_pid=$LB_PID
until [ -e "$T/ready" ]; do
  lb_alive "$client_pid" || { show_logs "$T/client.log"; lb_die "the client failed"; }
  sleep 0.05
done
lb_log "$(tail -n1 "$T/client.log")"

# --- the failure -------------------------------------------------------------------

lb_log "kill -9 backend b$victim (pid ${backend_pids[victim - 1]}); waiting ${settle}s"
kill -KILL "${backend_pids[victim - 1]}"
{ wait "${backend_pids[victim - 1]}"; } 2>/dev/null || true
sleep "$settle"
: >"$T/go"
wait "$client_pid" || { show_logs "$T/client.log"; lb_die "the client failed"; }
for pid in "$lbc_pid" "$lbh_pid" "$ha_pid" "$ngx_pid"; do
  lb_alive "$pid" || lb_die "a proxy (pid $pid) died during the run"
done
lb_log "done in ${SECONDS}s"

# --- the table ---------------------------------------------------------------------

python3 - "$T/results.json" "b$victim" "$n_backends" "$sessions" "$settle" <<'EOF'
import json, sys
res = json.load(open(sys.argv[1]))
victim, n, k, settle = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
what = {
    "lb cookie": "cookie `LBSRV` (HMAC of the server id)",
    "lb hash": "`balance: hash`, `hash_key: cookie:uid` (Maglev, bounded load 1.25)",
    "haproxy cookie": "`cookie SRV insert indirect nocache`",
    "haproxy hash": "`balance hash req.cook(uid)`, `hash-type consistent`",
    "nginx hash": "`hash $cookie_uid consistent`",
}
def pct(a, b):
    return "%.1f%%" % (100.0 * a / b) if b else "—"
print("%d backends, %d sessions per setup, backend %s killed with SIGKILL, re-requested "
      "%ss later; expected moved: the killed server's share, about 1/%d = %.1f%%." % (
          n, k, victim, settle, n, 100.0 / n))
print()
print("| proxy | affinity | sticky before the kill | sessions on %s | moved (all sessions) "
      "| moved, not on %s | %s's sessions now on a working server | stayed after moving "
      "| errors after the kill |" % (victim, victim, victim))
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
for name in ("lb cookie", "lb hash", "haproxy cookie", "haproxy hash", "nginx hash"):
    r = res[name]
    first = [s for _, s in r["establish"]]
    sticky = sum(1 for a, (_, b) in zip(first, r["confirm"]) if a and a == b)
    on_victim = [i for i, s in enumerate(first) if s == victim]
    others = [i for i, s in enumerate(first) if s and s != victim]
    after = r["after"]
    moved = sum(1 for i in range(k) if after[i][1] != first[i])
    moved_others = sum(1 for i in others if after[i][1] != first[i])
    landed = sum(1 for i in on_victim if after[i][0] == 200 and after[i][1] not in (None, victim))
    moved_ids = [i for i in range(k) if after[i][0] == 200 and after[i][1] != first[i]]
    stayed = sum(1 for i in moved_ids if r["again"][i][1] == after[i][1])
    errors = sum(1 for st, _ in after + r["again"] if st != 200)
    print("| %s | %s | %s | %s | **%s** | %s | %s | %s | %d |" % (
        name, what[name], pct(sticky, k),
        pct(len(on_victim), k), pct(moved, k), pct(moved_others, len(others)),
        pct(landed, len(on_victim)), pct(stayed, len(moved_ids)), errors))
EOF
