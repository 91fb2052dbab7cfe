#!/usr/bin/env bash
# Chaos run (not a test): lb, nginx and HAProxy, one after another, each in
# front of the same 3 sample backends, under the same load and the same
# failures: wrk GETs plus a steady loop of POSTs with unique X-Request-Id,
# while a backend is killed with SIGKILL and restarted every few seconds on
# a seeded schedule (identical for every proxy). Prints one Markdown table
# to stdout (progress and diagnostics go to stderr). See docs/CHAOS.md.
#
#   scripts/chaos.sh [--duration S] [--seed N] [--period S] [--conns N]
#                    [--post-rate N] [--path PATH] [--proxies LIST]
#                    [--build-dir DIR] [--no-build]
#
#   --duration S    seconds of load per proxy (default 60)
#   --seed N        seed of the kill schedule (default 1)
#   --period S      mean seconds between two kills (default 3)
#   --conns N       wrk connections (default 20)
#   --post-rate N   POSTs per second (default 50)
#   --path PATH     target of the GETs and POSTs (default /delay?ms=20: a
#                   request is in flight on most connections when a backend
#                   dies)
#   --proxies LIST  which proxies, in order (default "lb nginx haproxy")
#   --build-dir DIR where lb and backends/lb-backend are (default build-rel,
#                   built here as Release unless --no-build)
#
# Every process it starts (backends, proxies, wrk, the POST loop) is stopped
# by pid on exit, Ctrl-C included. LB_KEEP_TMP=1 keeps the configs and logs.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$LB_ROOT"

duration=60
seed=1
period=3
conns=20
post_rate=50
path="/delay?ms=20"
proxies="lb nginx haproxy"
build_dir=$LB_ROOT/build-rel
build=1

while [ $# -gt 0 ]; do
  case $1 in
    --duration) lb_need_arg "$@"; duration=$2; shift 2 ;;
    --seed) lb_need_arg "$@"; seed=$2; shift 2 ;;
    --period) lb_need_arg "$@"; period=$2; shift 2 ;;
    --conns) lb_need_arg "$@"; conns=$2; shift 2 ;;
    --post-rate) lb_need_arg "$@"; post_rate=$2; shift 2 ;;
    --path) lb_need_arg "$@"; path=$2; shift 2 ;;
    --proxies) lb_need_arg "$@"; proxies=$2; shift 2 ;;
    --build-dir) lb_need_arg "$@"; build_dir=$(cd "$2" && pwd); shift 2 ;;
    --no-build) build=0; shift ;;
    -h | --help) lb_usage; exit 0 ;;
    *) lb_die "unknown argument '$1' (try --help)" ;;
  esac
done
# count VALUE MIN MAX NAME: VALUE must be a whole number from MIN to MAX.
count() {
  if ! [[ $1 =~ ^[0-9]{1,7}$ ]] || [ "$1" -lt "$2" ] || [ "$1" -gt "$3" ]; then
    lb_die "$4: $2..$3, not '$1'"
  fi
}
count "$duration" 10 3600 --duration
count "$seed" 0 1000000 --seed
count "$period" 1 600 --period
count "$conns" 2 10000 --conns
count "$post_rate" 1 10000 --post-rate
[[ $path =~ ^/[!-~]*$ ]] || lb_die "--path: a target starting with /, no spaces"
read -ra proxy_list <<<"$proxies"
[ ${#proxy_list[@]} -gt 0 ] || lb_die "--proxies: empty"
for p in "${proxy_list[@]}"; do
  case $p in lb | nginx | haproxy) ;; *) lb_die "--proxies: lb, nginx or haproxy, not '$p'" ;; esac
done

need_nginx=0 need_haproxy=0
[[ " ${proxy_list[*]} " == *" nginx "* ]] && need_nginx=1
[[ " ${proxy_list[*]} " == *" haproxy "* ]] && need_haproxy=1
if [ $need_nginx = 1 ] || [ $need_haproxy = 1 ]; then LB_SETUP_BENCH=1 scripts/setup.sh; else scripts/setup.sh; fi
if [ $build = 1 ]; then
  [ "$build_dir" = "$LB_ROOT/build-rel" ] || lb_die "--build-dir other than build-rel needs --no-build"
  lb_log "building build-rel (Release)"
  lb_build_release
fi
LB_BIN=$build_dir/lb
BACKEND_BIN=$build_dir/backends/lb-backend
for b in "$LB_BIN" "$BACKEND_BIN"; do [ -x "$b" ] || lb_die "$b: not built"; done
"$BACKEND_BIN" --help | grep -q -- --post-log || lb_die "$BACKEND_BIN has no --post-log: rebuild it"

WRK=$(lb_find_bin wrk)
[ $need_nginx = 1 ] && NGINX=$(lb_find_bin nginx)
[ $need_haproxy = 1 ] && HAPROXY=$(lb_find_bin haproxy)

lb_tmpdir
T=$LB_TMP
n_backends=3
mapfile -t ports < <(lb_free_ports $((n_backends + 3)))
backend_ports=("${ports[@]:0:n_backends}")
declare -A port_of=([lb]=${ports[n_backends]} [nginx]=${ports[n_backends + 1]}
  [haproxy]=${ports[n_backends + 2]})

# --- the kill schedule: "SECONDS BACKEND DOWN_SECONDS" lines, from the seed ---

python3 - "$seed" "$duration" "$period" "$n_backends" >"$T/schedule" <<'EOF'
import random, sys
seed, duration, period, n = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
t = 1.5
while True:
    t += period * rng.uniform(0.6, 1.4)
    down = rng.uniform(0.3, max(0.4, min(2.5, period * 0.8)))
    # every backend is back well before the load stops
    if t + down > duration - 3:
        break
    print("%.3f %d %.3f" % (t, rng.randrange(n), down))
    t += down  # one backend down at a time
EOF
n_kills=$(wc -l <"$T/schedule")
lb_log "$n_kills kills per proxy (seed $seed): $(awk '{printf "b%d@%ss ", $2 + 1, int($1)}' "$T/schedule")"

# --- the POST loop -------------------------------------------------------------

cat >"$T/post_loop.py" <<'EOF'
"""POSTs with unique X-Request-Id at a steady rate over keep-alive
connections (4 threads); writes a JSON summary."""
import collections, http.client, json, sys, threading, time
port, rate, duration, prefix, path, out = (int(sys.argv[1]), float(sys.argv[2]),
                                           float(sys.argv[3]), sys.argv[4], sys.argv[5],
                                           sys.argv[6])
THREADS = 4
lock = threading.Lock()
stats = {"sent": 0, "ok": 0, "non2xx": 0, "errors": 0}
statuses, errors = collections.Counter(), collections.Counter()
body = b"x" * 64

def worker(k):
    per = rate / THREADS
    conn, i, t0 = None, 0, time.monotonic()
    while True:
        due = t0 + i / per
        if due - t0 >= duration:
            break
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        rid = "%s-%d-%d" % (prefix, k, i)
        i += 1
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            with lock:
                stats["sent"] += 1
            conn.request("POST", path, body=body,
                         headers={"X-Request-Id": rid, "Content-Type": "text/plain"})
            r = conn.getresponse()
            r.read()
            with lock:
                statuses[r.status] += 1
                stats["ok" if 200 <= r.status < 300 else "non2xx"] += 1
            if r.will_close:
                conn.close()
                conn = None
        except Exception as e:
            with lock:
                stats["errors"] += 1
                errors[type(e).__name__] += 1
            if conn is not None:
                conn.close()
            conn = None

threads = [threading.Thread(target=worker, args=(k,)) for k in range(THREADS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
stats["statuses"] = {str(k): v for k, v in sorted(statuses.items())}
stats["error_kinds"] = dict(errors)
with open(out, "w") as f:
    json.dump(stats, f)
EOF

# --- processes -------------------------------------------------------------------

# forget PID: drops PID from LB_PIDS once it was reaped (its number may be reused).
forget() {
  local p keep=()
  for p in "${LB_PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  LB_PIDS=("${keep[@]}")
}

# start_backend I DIR: lb-backend b(I+1) on its fixed port, post log in DIR.
backend_pids=()
start_backend() {
  local i=$1 dir=$2 port=${backend_ports[$1]}
  lb_bg "$BACKEND_BIN" --listen "127.0.0.1:$port" --id "b$((i + 1))" \
    --post-log "$dir/posts-b$((i + 1)).log" 2>>"$dir/backend$((i + 1)).log"
  backend_pids[i]=$LB_PID
  lb_wait_port "$port" "$LB_PID" 10 || { tail -n 5 "$dir/backend$((i + 1)).log" >&2; lb_die "backend b$((i + 1)) did not start"; }
}

kill_backend() {
  local pid=${backend_pids[$1]}
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  forget "$pid"
}

stop_pid() {
  lb_stop "$1" 5
  forget "$1"
}

write_configs() {
  local dir=$1 i p
  {
    echo "workers: 2"
    echo "listen:"
    echo "  - address: 127.0.0.1:${port_of[lb]}"
    echo "log: { access: $dir/lb/access.log }"
    echo "timeouts: { connect: 1s }"
    echo "backends:"
    echo "  app:"
    echo "    keepalive: 32"
    echo "    health: { path: /health, interval: 200ms, timeout: 200ms, rise: 2, fall: 3 }"
    echo "    passive: { failures: 3 }"
    echo "    retries: 2"
    echo "    servers:"
    i=0
    for p in "${backend_ports[@]}"; do
      i=$((i + 1))
      echo "      - { address: 127.0.0.1:$p, id: b$i }"
    done
  } >"$dir/lb/lb.yaml"

  {
    echo "worker_processes 2;"
    echo "pid $dir/nginx/nginx.pid;"
    echo "error_log $dir/nginx/error.log warn;"
    echo "events { worker_connections 4096; }"
    echo "http {"
    echo "  access_log $dir/nginx/access.log;"
    for d in client_body proxy fastcgi uwsgi scgi; do echo "  ${d}_temp_path $dir/nginx/$d;"; done
    echo "  upstream app {"
    for p in "${backend_ports[@]}"; do echo "    server 127.0.0.1:$p;"; done # max_fails=1 fail_timeout=10s
    echo "    keepalive 32;"
    echo "  }"
    echo "  server {"
    echo "    listen 127.0.0.1:${port_of[nginx]};"
    echo "    location / {"
    echo "      proxy_pass http://app;"
    echo "      proxy_http_version 1.1;"
    echo "      proxy_set_header Connection \"\";"
    echo "      proxy_next_upstream error timeout;"
    echo "      proxy_next_upstream_tries 3;"
    echo "      proxy_connect_timeout 1s;"
    echo "    }"
    echo "  }"
    echo "}"
  } >"$dir/nginx/nginx.conf"

  {
    echo "global"
    echo "  nbthread 2"
    echo "  log stdout format raw local0"
    echo "defaults"
    echo "  mode http"
    echo "  log global"
    echo "  option httplog"
    echo "  option http-keep-alive"
    echo "  option redispatch"
    echo "  retries 2"
    echo "  retry-on conn-failure empty-response response-timeout"
    echo "  timeout connect 1s"
    echo "  timeout client 30s"
    echo "  timeout server 30s"
    echo "frontend fe"
    echo "  bind 127.0.0.1:${port_of[haproxy]}"
    echo "  default_backend app"
    echo "backend app"
    echo "  balance roundrobin"
    echo "  option httpchk GET /health"
    i=0
    for p in "${backend_ports[@]}"; do
      i=$((i + 1))
      echo "  server b$i 127.0.0.1:$p check inter 200 rise 2 fall 3"
    done
  } >"$dir/haproxy/haproxy.cfg"
}

start_proxy() {
  local proxy=$1 dir=$2
  case $proxy in
    lb)
      "$LB_BIN" -t -c "$dir/lb/lb.yaml" >/dev/null
      lb_bg "$LB_BIN" -c "$dir/lb/lb.yaml" >"$dir/lb/stdout.log" 2>"$dir/lb/stderr.log" ;;
    nginx)
      "$NGINX" -t -q -c "$dir/nginx/nginx.conf" -p "$dir/nginx" -e "$dir/nginx/error.log" ||
        lb_die "nginx rejected its configuration"
      lb_bg "$NGINX" -c "$dir/nginx/nginx.conf" -p "$dir/nginx" -e "$dir/nginx/error.log" \
        -g 'daemon off;' >"$dir/nginx/stdout.log" 2>&1 ;;
    haproxy)
      "$HAPROXY" -c -q -f "$dir/haproxy/haproxy.cfg" || lb_die "haproxy rejected its configuration"
      lb_bg "$HAPROXY" -f "$dir/haproxy/haproxy.cfg" -db >"$dir/haproxy/stdout.log" 2>&1 ;;
  esac
  proxy_pid=$LB_PID
  lb_wait_port "${port_of[$proxy]}" "$proxy_pid" 10 || lb_die "$proxy did not start"
}

# sleep_until START OFFSET: sleeps until START ($EPOCHREALTIME) + OFFSET seconds.
sleep_until() {
  local s
  s=$(awk -v a="$1" -v t="$2" -v n="$EPOCHREALTIME" 'BEGIN { w = a + t - n; printf "%.3f", (w > 0 ? w : 0) }')
  sleep "$s"
}

# --- one proxy under chaos -----------------------------------------------------------

run_phase() {
  local proxy=$1 dir=$T/$1 port=${port_of[$1]} i t idx down start k=0
  mkdir -p "$dir/lb" "$dir/nginx" "$dir/haproxy"
  write_configs "$dir"
  for ((i = 0; i < n_backends; i++)); do start_backend "$i" "$dir"; done
  start_proxy "$proxy" "$dir"
  # Every backend answers through the proxy before the load starts.
  declare -A seen=()
  for ((i = 0; i < 60 && ${#seen[@]} < n_backends; i++)); do
    id=$(curl -sS -m 5 -o /dev/null -w '%header{x-backend-id}' "http://127.0.0.1:$port/" 2>/dev/null || true)
    [ -n "$id" ] && seen[$id]=1
    sleep 0.05
  done
  [ ${#seen[@]} -eq "$n_backends" ] || lb_die "$proxy: only ${!seen[*]} answered before the load"

  lb_log "$proxy: ${duration}s of wrk -c$conns GET $path + $post_rate POST/s, $n_kills kills"
  lb_bg timeout -k 5 $((duration + 30)) "$WRK" -t2 -c"$conns" -d"${duration}s" --timeout 5s \
    "http://127.0.0.1:$port$path" >"$dir/wrk.out" 2>&1
  local wrk_pid=$LB_PID
  lb_bg timeout -k 5 $((duration + 30)) python3 "$T/post_loop.py" "$port" "$post_rate" \
    "$duration" "$proxy" "$path" "$dir/posts.json" >"$dir/post_loop.log" 2>&1
  local post_pid=$LB_PID
  start=$EPOCHREALTIME
  while read -r t idx down; do
    sleep_until "$start" "$t"
    k=$((k + 1))
    lb_log "  [$k/$n_kills] t=${t%.*}s kill -9 b$((idx + 1)), back in ${down}s"
    kill_backend "$idx"
    sleep "$down"
    start_backend "$idx" "$dir"
  done <"$T/schedule"
  wait "$wrk_pid" || lb_die "$proxy: wrk failed (status $?): $(tail -n 3 "$dir/wrk.out")"
  forget "$wrk_pid"
  wait "$post_pid" || lb_die "$proxy: the POST loop failed: $(tail -n 3 "$dir/post_loop.log")"
  forget "$post_pid"
  stop_pid "$proxy_pid"
  for ((i = 0; i < n_backends; i++)); do stop_pid "${backend_pids[i]}"; done

  python3 - "$proxy" "$dir" "$n_backends" >>"$T/rows" <<'EOF'
import collections, glob, json, re, sys
proxy, d, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
w = open(d + "/wrk.out").read()
m = re.search(r"^\s*(\d+) requests in", w, re.M)
gets = int(m.group(1)) if m else -1
m = re.search(r"Non-2xx or 3xx responses: (\d+)", w)
get_bad = int(m.group(1)) if m else 0
m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", w)
sock = sum(int(x) for x in m.groups()) if m else 0
p = json.load(open(d + "/posts.json"))
ids = collections.Counter()
for f in glob.glob(d + "/posts-b*.log"):
    ids.update(l.strip() for l in open(f) if l.startswith(proxy + "-"))
dups = sum(1 for v in ids.values() if v > 1)
print(json.dumps(dict(proxy=proxy, gets=gets, get_bad=get_bad, sock=sock, sock_detail=m.group(0) if m else "",
                      posts=p["sent"], post_bad=p["non2xx"], post_err=p["errors"],
                      post_statuses=p["statuses"], post_errors=p["error_kinds"],
                      delivered=len(ids), dups=dups, extra=sum(v - 1 for v in ids.values()))))
EOF
  python3 - "$T/rows" "$proxy" "$dir" <<'EOF' >&2
import collections, json, re, sys
rows, proxy, d = sys.argv[1:]
r = [json.loads(l) for l in open(rows)][-1]
print("    GET: %d requests, %d non-2xx, socket errors: %s" % (r["gets"], r["get_bad"], r["sock_detail"] or 0))
print("    POST: %d sent, statuses %s, errors %s; %d ids delivered, %d duplicated" % (
    r["posts"], r["post_statuses"], r["post_errors"], r["delivered"], r["dups"]))
def top(lines, n=8):
    c = collections.Counter(lines)
    for line, k in c.most_common(n):
        print("      %6d  %s" % (k, line))
if proxy == "lb":
    st = collections.Counter()
    for line in open(d + "/lb/access.log"):
        f = line.split('"')
        if len(f) >= 3:
            st[(f[1].split(" ")[0], f[2].split()[0])] += 1
    print("    lb access log (method, status): %s" % dict(sorted(st.items())))
    errs = [re.sub(r"^lb: \S+ \S+ ", "", re.sub(r"127\.0\.0\.1:\d+", "ADDR", l.strip()))
            for l in open(d + "/lb/stderr.log") if " error: " in l or "eject" in l or " is " in l]
    print("    lb stderr, most frequent lines:")
    top(errs)
elif proxy == "nginx":
    errs = [re.sub(r"^.*?\[(\w+)\] \d+#\d+: \*?\d* ?", r"[\1] ", re.sub(r"127\.0\.0\.1:\d+", "ADDR", l.strip())).split(", client")[0]
            for l in open(d + "/nginx/error.log")]
    print("    nginx error.log, most frequent lines:")
    top(errs)
else:
    st = collections.Counter()
    for l in open(d + "/haproxy/stdout.log"):
        m = re.search(r" (\d{3}) \d+ - - (\S{4}) .*\"(\w+) ", l)
        if m and m.group(1)[0] != "2":
            st[(m.group(3), m.group(1), m.group(2))] += 1
    print("    haproxy non-2xx (method, status, termination state): %s" % dict(st))
EOF
}

: >"$T/rows"
lb_log "$(date -u '+%F %T UTC'), $(uname -sr), $(nproc) CPUs; $("$LB_BIN" -v 2>&1 | head -n1)"
for p in "${proxy_list[@]}"; do run_phase "$p"; done

# --- the table ------------------------------------------------------------------------

python3 - "$T/rows" "$duration" "$n_kills" "$seed" "$conns" "$post_rate" "$path" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
duration, kills, seed, conns, rate, path = sys.argv[2:]
print("%ss per proxy, %s kills (kill -9, then restart) of 1 of 3 backends, seed %s; "
      "wrk -c%s GET %s; %s POST/s" % (duration, kills, seed, conns, path, rate))
print()
print("| proxy | GET requests | GET non-2xx | GET socket errors | POSTs sent "
      "| POST non-2xx / errors | duplicated POSTs |")
print("|---|---:|---:|---:|---:|---:|---:|")
for r in rows:
    print("| %s | %d | %d | %d | %d | %d / %d | %d |" % (
        r["proxy"], r["gets"], r["get_bad"], r["sock"], r["posts"], r["post_bad"],
        r["post_err"], r["dups"]))
EOF
