#!/usr/bin/env bash
# The benchmark (not a test): bounded wrk loads on loopback against a sample
# backend directly, lb, nginx and HAProxy, each proxy with one worker/thread
# over the same backends, pinned to its own core. Prints a Markdown table to
# stdout (progress goes to stderr). See docs/BENCHMARK.md.
#
#   scripts/bench.sh [--duration S] [--rounds N] [--conns "1 50 1000"]
#                    [--backends N] [--quick] [--paced]
#   scripts/bench.sh --callgrind [--requests N]
#   scripts/bench.sh --idle [--idle-conns N]
#   scripts/bench.sh --large [--rounds N]
#   scripts/bench.sh --spread [--rounds N] [--duration S]
#   scripts/bench.sh --together [--rounds N] [--duration S] [--conns LIST]
#
#   --duration S   seconds per wrk run (default 5)
#   --rounds N     interleaved rounds; the table shows medians (default 3)
#   --conns LIST   wrk connection counts (default "1 50 1000")
#   --backends N   lb-backend processes behind the proxies (default 2)
#   --quick        1 round of 2s: a smoke check of the script, not a result
#   --paced        equal offered load: 200 connections (unless --conns), each
#                  waiting 10 ms between requests; compare CPU per request
#
# Other modes (each prints its own table; see docs/PERFORMANCE.md):
#   --callgrind    instructions per proxied request: each proxy (1 worker, no
#                  log, one backend) under valgrind --tool=callgrind, serving
#                  exactly N and 2N keep-alive requests over 10 connections;
#                  reports (Ir(2N) - Ir(N)) / N and the top 10 functions by
#                  self Ir. --requests N sets N (default 20000)
#   --idle         RSS per idle keep-alive client connection: VmRSS growth of
#                  each proxy while N idle connections (one request each) are
#                  held, / N. --idle-conns N sets N (default 10000)
#   --large        a 1 GiB download (/bytes?n=1073741824) with curl, directly
#                  and through each proxy: MB/s, medians of --rounds runs
#   --spread       lb with 2 workers, 1,000 wrk connections for --duration s,
#                  --rounds times: connections accepted per worker (max/min)
#                  and accept wakeups that found nothing, from lb's exit log
#   --together     lb, nginx and HAProxy all at once on the proxy core, each
#                  driven by its own wrk (--conns each, default 25) on the
#                  load core: whatever else runs on the machine slows all
#                  three alike, so the ratios of CPU per request (user and
#                  system time apart) hold on a noisy machine
#
# Environment: LB_BENCH_PROXY_CPU (default 0) is the core of the proxy under
# test; LB_BENCH_LOAD_CPU (default 1) the core(s) of wrk and the backends, in
# taskset -c syntax. LB_KEEP_TMP=1 keeps the configs and logs.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$LB_ROOT"

duration=5
rounds=3
default_conns="1 50 1000"
conns_list=$default_conns
n_backends=2
mode=default
paced_ms=0        # --paced: each connection waits this long between requests
cg_requests=20000 # --callgrind: N
cg_conns=10       # --callgrind: keep-alive connections of the client
idle_conns=10000  # --idle
spread_conns=1000 # --spread: wrk connections
spread_workers=2  # --spread: lb workers
large_bytes=1073741824
proxy_cpu=${LB_BENCH_PROXY_CPU:-0}
load_cpu=${LB_BENCH_LOAD_CPU:-1}

while [ $# -gt 0 ]; do
  case $1 in
    --duration) lb_need_arg "$@"; duration=$2; shift 2 ;;
    --rounds) lb_need_arg "$@"; rounds=$2; shift 2 ;;
    --conns) lb_need_arg "$@"; conns_list=$2; shift 2 ;;
    --backends) lb_need_arg "$@"; n_backends=$2; shift 2 ;;
    --quick) rounds=1; duration=2; shift ;;
    --paced) paced_ms=10; shift ;;
    --callgrind | --idle | --large | --spread | --together)
      [ "$mode" = default ] || lb_die "$1: one mode at a time (already --$mode)"
      mode=${1#--}
      shift
      ;;
    --requests) lb_need_arg "$@"; cg_requests=$2; shift 2 ;;
    --idle-conns) lb_need_arg "$@"; idle_conns=$2; shift 2 ;;
    -h | --help) lb_usage; exit 0 ;;
    *) lb_die "unknown argument '$1' (try --help)" ;;
  esac
done
# count VALUE MAX NAME: VALUE must be a whole number from 1 to MAX.
count() {
  if ! [[ $1 =~ ^[1-9][0-9]{0,5}$ ]] || [ "$1" -gt "$2" ]; then lb_die "$3: 1..$2, not '$1'"; fi
}
count "$duration" 600 --duration
count "$rounds" 50 --rounds
count "$n_backends" 16 --backends
count "$cg_requests" 500000 --requests
count "$idle_conns" 100000 --idle-conns
# --paced: equal offered load for every target (200 connections, each
# waiting 10 ms between requests, about 20,000 req/s offered), where CPU per
# request is the fair figure; wrk paces with a Lua delay().
wrk_script=()
if [ "$paced_ms" -gt 0 ]; then
  [ "$conns_list" = "$default_conns" ] && conns_list=200
  lb_tmpdir # removed on exit
  paced_lua=$LB_TMP/paced.lua
  printf 'function delay()\n  return %d\nend\n' "$paced_ms" >"$paced_lua"
  wrk_script=(-s "$paced_lua")
fi
[ "$mode" = together ] && [ "$conns_list" = "$default_conns" ] && conns_list=25
read -ra conns_arr <<<"$conns_list"
[ ${#conns_arr[@]} -gt 0 ] || lb_die "--conns: empty"
max_conns=0
for c in "${conns_arr[@]}"; do
  count "$c" 20000 "--conns (each)"
  [ "$c" -gt "$max_conns" ] && max_conns=$c
done

# cpu_list LIST: the CPU numbers of a taskset -c list ("1", "1,3", "2-3").
cpu_list() {
  local part i parts=() cpus=()
  IFS=, read -ra parts <<<"$1"
  for part in "${parts[@]}"; do
    for ((i = ${part%-*}; i <= ${part#*-}; i++)); do cpus+=("$i"); done
  done
  echo "${cpus[*]}"
}

for list in "$proxy_cpu" "$load_cpu"; do
  [[ $list =~ ^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$ ]] ||
    lb_die "CPU list '$list': use taskset -c syntax, e.g. 1 or 1-3"
done
proxy_cpus=$(cpu_list "$proxy_cpu")
load_cpus=$(cpu_list "$load_cpu")
n_proxy_cpus=$(wc -w <<<"$proxy_cpus")
n_load_cpus=$(wc -w <<<"$load_cpus")

LB_SETUP_BENCH=1 scripts/setup.sh
lb_log "building build-rel (Release)"
lb_build_release
LB_BIN=$LB_ROOT/build-rel/lb
BACKEND_BIN=$LB_ROOT/build-rel/backends/lb-backend

NGINX=$(lb_find_bin nginx)
HAPROXY=$(lb_find_bin haproxy)
WRK=$(lb_find_bin wrk)
CURL=$(lb_find_bin curl)
if [ "$mode" = callgrind ]; then
  if ! VALGRIND=$(command -v valgrind) || ! CG_ANNOTATE=$(command -v callgrind_annotate); then
    lb_die "--callgrind needs valgrind (apt-get install valgrind)"
  fi
fi

taskset -c "$proxy_cpu" true 2>/dev/null || lb_die "cannot pin to CPU $proxy_cpu (LB_BENCH_PROXY_CPU)"
taskset -c "$load_cpu" true 2>/dev/null || lb_die "cannot pin to CPU(s) $load_cpu (LB_BENCH_LOAD_CPU)"
[ "$(nproc)" -ge 2 ] || lb_log "warning: $(nproc) CPU: the proxy and the load share it; numbers mean little"

# Each proxy holds two descriptors per connection (client + upstream).
case $mode in
  default) need_fds=$((2 * max_conns + 256)) what="$max_conns connections" ;;
  spread) need_fds=$((2 * spread_conns + 256)) what="$spread_conns connections" ;;
  # idle connections need no upstream connection each: a few hundred in all
  idle) need_fds=$((idle_conns + 1024)) what="$idle_conns idle connections" ;;
  *) need_fds=1024 what="this mode" ;;
esac
hard=$(ulimit -Hn)
want=65536
[ "$hard" != unlimited ] && [ "$hard" -lt "$want" ] && want=$hard
ulimit -n "$want"
[ "$want" -ge "$need_fds" ] || lb_die "open files limit $want < $need_fds needed for $what"
maxconn=$(((want - 256) / 2)) # client connections each proxy accepts
# --idle: every proxy must accept all the idle clients; they need one
# descriptor each (not two), so the limit allows more than the default.
[ "$mode" = idle ] && [ "$maxconn" -lt $((idle_conns + 512)) ] && maxconn=$((idle_conns + 512))

clk_tck=$(getconf CLK_TCK)
lb_tmpdir
T=$LB_TMP

# --- processes and their CPU time --------------------------------------------

# ticks PID...: sum of utime+stime (all threads; clock ticks) of the processes.
ticks() {
  local total=0 pid s f
  for pid in "$@"; do
    read -r s 2>/dev/null <"/proc/$pid/stat" || continue
    s=${s##*) }
    read -ra f <<<"$s"
    total=$((total + f[11] + f[12])) # fields 14 and 15, counted from the state field (3)
  done
  echo "$total"
}

# busy: CPU time (clock ticks) spent outside idle and iowait, from /proc/stat,
# everything included (interrupts, softirq: much of loopback TCP is charged
# there, not to a process): "PROXY_CORES LOAD_CORES WHOLE_MACHINE".
busy() {
  local name user nice system _idle _iowait irq softirq steal _rest t p=0 l=0 m=0
  while read -r name user nice system _idle _iowait irq softirq steal _rest; do
    t=$((user + nice + system + irq + softirq + steal))
    case $name in
      cpu) m=$t ;;
      cpu[0-9]*)
        [[ " $proxy_cpus " == *" ${name#cpu} "* ]] && p=$((p + t))
        [[ " $load_cpus " == *" ${name#cpu} "* ]] && l=$((l + t))
        ;;
      *) break ;;
    esac
  done </proc/stat
  echo "$p $l $m"
}

# tree PID: PID and its children (nginx: the master and its worker).
tree() {
  local d s f
  echo "$1"
  for d in /proc/[0-9]*; do
    read -r s 2>/dev/null <"$d/stat" || continue
    s=${s##*) }
    read -ra f <<<"$s"
    [ "${f[1]}" = "$1" ] && echo "${d#/proc/}"
  done
  return 0
}

show_logs() {
  local f
  for f in "$@"; do
    [ -s "$f" ] && { lb_log "--- $f"; tail -n 20 "$f" >&2; }
  done
  return 0
}

# --- backends ------------------------------------------------------------------

# start_backends N: N lb-backend processes on the load core(s); fills
# backend_pids and backend_ports.
backend_pids=()
backend_ports=()
start_backends() {
  local i port
  lb_log "starting $1 backend(s) on CPU $load_cpu"
  for ((i = 1; i <= $1; i++)); do
    lb_bg taskset -c "$load_cpu" "$BACKEND_BIN" --listen 127.0.0.1:0 --id "b$i" 2>"$T/backend$i.log"
    backend_pids+=("$LB_PID")
    port=$(lb_backend_port "$T/backend$i.log" "$LB_PID") ||
      { show_logs "$T/backend$i.log"; lb_die "backend b$i did not start"; }
    backend_ports+=("$port")
  done
}

# --- proxies -------------------------------------------------------------------

# new_ports: free ports for the three proxies (lb_port, nginx_port, haproxy_port).
new_ports() {
  local ports
  mapfile -t ports < <(lb_free_ports 3)
  lb_port=${ports[0]} nginx_port=${ports[1]} haproxy_port=${ports[2]}
}

# write_configs DIR WORKERS PORT...: lb.yaml, nginx/nginx.conf and haproxy.cfg
# in DIR, listening on lb_port, nginx_port, haproxy_port, over the backends on
# PORT... (lb gets WORKERS workers; nginx and HAProxy always one).
write_configs() {
  local dir=$1 workers=$2 p i
  shift 2
  {
    echo "workers: $workers"
    echo "listen:"
    echo "  - address: 127.0.0.1:$lb_port"
    echo "log: { access: off }"
    echo "limits: { max_connections: $maxconn }"
    echo "backends:"
    echo "  app:"
    echo "    balance: roundrobin"
    echo "    keepalive: 1024"
    echo "    servers:"
    for p in "$@"; do echo "      - { address: 127.0.0.1:$p }"; done
  } >"$dir/lb.yaml"

  mkdir -p "$dir/nginx"
  {
    echo "worker_processes 1;"
    echo "worker_rlimit_nofile $want;"
    echo "pid $dir/nginx/nginx.pid;"
    echo "error_log $dir/nginx/error.log warn;"
    echo "events { worker_connections $want; }" # counts client and upstream connections
    echo "http {"
    echo "  access_log off;"
    echo "  keepalive_requests 1000000;"
    # --large: stream the body as lb and HAProxy do, instead of spooling what
    # the client has not taken yet to a temporary file (its default, up to
    # 1 GiB; the worker, user nobody, could not write in $T anyway).
    [ "$mode" = large ] && echo "  proxy_max_temp_file_size 0;"
    for d in client_body proxy fastcgi uwsgi scgi; do echo "  ${d}_temp_path $dir/nginx/$d;"; done
    echo "  upstream app {"
    for p in "$@"; do echo "    server 127.0.0.1:$p;"; done
    echo "    keepalive 2048;"
    echo "    keepalive_requests 1000000;"
    echo "  }"
    echo "  server {"
    echo "    listen 127.0.0.1:$nginx_port;"
    echo "    location / {"
    echo "      proxy_pass http://app;"
    echo "      proxy_http_version 1.1;"
    echo "      proxy_set_header Connection \"\";"
    echo "      proxy_set_header Host \$host;"
    echo "      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;"
    echo "      proxy_set_header X-Forwarded-Proto \$scheme;"
    echo "      proxy_set_header X-Forwarded-Host \$host;"
    echo "    }"
    echo "  }"
    echo "}"
  } >"$dir/nginx/nginx.conf"

  {
    echo "global"
    echo "  nbthread 1"
    echo "  maxconn $maxconn"
    if [ "$mode" = idle ]; then
      # HAProxy wants two descriptors per connection up front; idle clients
      # need one. Without this it refuses maxconn > (open files limit) / 2.
      echo "  ulimit-n $want"
      echo "  no strict-limits"
    fi
    echo "defaults"
    echo "  mode http"
    echo "  option http-keep-alive"
    echo "  http-reuse always"
    echo "  timeout connect 2s"
    echo "  timeout client 60s"
    echo "  timeout server 30s"
    echo "  timeout http-keep-alive 60s"
    echo "frontend fe"
    echo "  bind 127.0.0.1:$haproxy_port"
    echo "  option forwardfor"
    echo "  http-request set-header X-Forwarded-Proto http"
    echo "  http-request set-header X-Forwarded-Host %[req.hdr(host)]"
    echo "  default_backend app"
    echo "backend app"
    echo "  balance roundrobin"
    i=0
    for p in "$@"; do
      i=$((i + 1))
      echo "  server b$i 127.0.0.1:$p"
    done
  } >"$dir/haproxy.cfg"

  "$LB_BIN" -t -c "$dir/lb.yaml" >/dev/null
  "$NGINX" -t -q -c "$dir/nginx/nginx.conf" -p "$dir/nginx" -e "$dir/nginx/error.log" ||
    { show_logs "$dir/nginx/error.log"; lb_die "nginx rejected its configuration"; }
  "$HAPROXY" -c -q -f "$dir/haproxy.cfg" 2>"$dir/haproxy-check.log" ||
    { show_logs "$dir/haproxy-check.log"; lb_die "haproxy rejected its configuration"; }
}

# start_proxy NAME DIR [WRAPPER...]: starts proxy NAME (lb, nginx, haproxy)
# with its configuration in DIR on the proxy core, under WRAPPER (e.g.
# valgrind) if given; sets pid_of[NAME] and log_of[NAME] (its output). nginx
# runs with a master process unless WRAPPER is given (then master_process off).
declare -A pid_of=() log_of=() port_of=()
start_proxy() {
  local name=$1 dir=$2 nginx_g='daemon off;'
  shift 2
  [ $# -gt 0 ] && nginx_g='daemon off; master_process off;'
  case $name in
    lb)
      log_of[lb]=$dir/lb.log
      lb_bg taskset -c "$proxy_cpu" "$@" "$LB_BIN" -c "$dir/lb.yaml" >"$dir/lb.log" 2>&1
      ;;
    nginx)
      log_of[nginx]=$dir/nginx/stdout.log
      lb_bg taskset -c "$proxy_cpu" "$@" "$NGINX" -c "$dir/nginx/nginx.conf" -p "$dir/nginx" \
        -e "$dir/nginx/error.log" -g "$nginx_g" >"$dir/nginx/stdout.log" 2>&1
      ;;
    haproxy)
      log_of[haproxy]=$dir/haproxy.log
      lb_bg taskset -c "$proxy_cpu" "$@" "$HAPROXY" -f "$dir/haproxy.cfg" -db >"$dir/haproxy.log" 2>&1
      ;;
  esac
  pid_of[$name]=$LB_PID
}

# wait_proxy NAME SECONDS: waits until proxy NAME accepts connections; on
# failure shows its logs and returns 1.
wait_proxy() {
  local name=$1 extra=()
  [ "$name" = nginx ] && extra=("${log_of[nginx]%/*}/error.log")
  lb_wait_port "${port_of[$name]}" "${pid_of[$name]}" "$2" && return 0
  show_logs "${log_of[$name]}" "${extra[@]}"
  return 1
}

# check_answer TARGET: TARGET answers 200 from a backend.
check_answer() {
  local t=$1 head
  head=$(curl -sS -m 30 -o /dev/null -D - "http://127.0.0.1:${port_of[$t]}/") ||
    lb_die "$t: no answer on 127.0.0.1:${port_of[$t]}"
  case $head in
    "HTTP/1.1 200"*[Xx]-[Bb]ackend-[Ii]d:*) ;;
    *) lb_die "$t: unexpected answer: ${head%%$'\r'*}" ;;
  esac
}

# first_line CMD...: the first line CMD prints (stdout or stderr), whatever its status.
first_line() { { "$@" 2>&1 || true; } | head -n1; }

# describe_machine: the date, machine, versions and how busy the machine is
# before anything runs (to stderr), and sets `quiet` (% of a core busy).
describe_machine() {
  local haproxy_v wrk_v q0 q1 rev
  lb_log "$(date -u '+%F %T UTC'), $(uname -sr), $(nproc) CPUs ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n1))"
  haproxy_v=$(first_line "$HAPROXY" -v)
  wrk_v=$(first_line "$WRK" -v)
  # the commit built, and whether the sources differed from it
  rev=$(git -C "$LB_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
  git -C "$LB_ROOT" diff --quiet HEAD -- lb backends CMakeLists.txt 2>/dev/null ||
    rev="$rev + uncommitted changes in lb/ or backends/"
  lb_log "$(first_line "$LB_BIN" -v) (commit $rev); $(first_line "$NGINX" -v); ${haproxy_v%% 20[0-9][0-9]/*}; ${wrk_v%% \[*}"
  # Other work on the machine skews every number: say so when it is not quiet.
  read -r _ _ q0 < <(busy)
  sleep 2
  read -r _ _ q1 < <(busy)
  quiet=$(((q1 - q0) * 100 / clk_tck / 2))
  lb_log "load average: $(cut -d' ' -f1-3 /proc/loadavg); busy before the runs: $quiet% of a core"
  if [ "$quiet" -gt 10 ]; then
    lb_log "warning: before the runs, the machine was busy ($quiet% of a core, all proxies idle):" \
      "another process is running; the results will be noisy"
  fi
}

# rss PID...: the sum of VmRSS (kB) of the processes.
rss() {
  local total=0 pid kb
  for pid in "$@"; do
    kb=$(sed -n 's/^VmRSS:\s*\([0-9]*\) kB/\1/p' "/proc/$pid/status" 2>/dev/null || true)
    total=$((total + ${kb:-0}))
  done
  echo "$total"
}

# stop_now PID SECONDS: stops one process now (SIGTERM, SIGKILL after SECONDS).
stop_now() { lb_stop "$1" "$2"; }

# --- --callgrind: instructions per request ------------------------------------------

# keepalive_requests PORT N CONNS: exactly N requests (GET / as wrk sends it)
# over CONNS keep-alive connections, one request at a time on each; fails
# unless every answer is a whole 200 response.
keepalive_requests() {
  timeout --foreground -k 5 1200 taskset -c "$load_cpu" python3 - "$@" <<'EOF'
import selectors, socket, sys
port, total, conns = (int(x) for x in sys.argv[1:4])
request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port
sel = selectors.DefaultSelector()
share = [total // conns + (1 if i < total % conns else 0) for i in range(conns)]
socks = []
for left in share:
    if not left:
        continue
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(request)
    socks.append(s)
    sel.register(s, selectors.EVENT_READ, [b"", left - 1])
done = 0
while done < total:
    events = sel.select(timeout=120)
    if not events:
        sys.exit("no answer for 120 s after %d of %d responses" % (done, total))
    for key, _ in events:
        s, st = key.fileobj, key.data
        data = s.recv(65536)
        if not data:
            sys.exit("connection closed after %d of %d responses" % (done, total))
        st[0] += data
        end = st[0].find(b"\r\n\r\n")
        if end < 0:
            continue
        head = st[0][:end].decode("latin-1").split("\r\n")
        if not head[0].startswith("HTTP/1.1 200"):
            sys.exit("unexpected response: %r" % head[0])
        length = [int(l.split(":", 1)[1]) for l in head if l.lower().startswith("content-length:")]
        if not length:
            sys.exit("response without Content-Length")
        if len(st[0]) < end + 4 + length[0]:
            continue
        if len(st[0]) > end + 4 + length[0]:
            sys.exit("more bytes than one response")
        done += 1
        st[0] = b""
        if st[1]:
            st[1] -= 1
            s.sendall(request)
        else:
            sel.unregister(s)
for s in socks:
    s.close()
EOF
}

mode_callgrind() {
  local n=$cg_requests t k dir out ir why
  start_backends 1
  describe_machine
  lb_log "callgrind: N = $n; each proxy runs twice (N and 2N requests over $cg_conns keep-alive connections)"
  : >"$T/cg-results"
  for t in lb nginx haproxy; do
    for k in 1 2; do
      dir=$T/cg-$t-$k
      out=$dir/callgrind.out
      mkdir -p "$dir"
      new_ports
      port_of=([lb]=$lb_port [nginx]=$nginx_port [haproxy]=$haproxy_port)
      write_configs "$dir" 1 "${backend_ports[0]}"
      lb_log "callgrind: $t under valgrind, $((k * n)) requests"
      start_proxy "$t" "$dir" "$VALGRIND" --tool=callgrind --callgrind-out-file="$out"
      why=""
      if ! wait_proxy "$t" 120; then
        why="did not start under valgrind (see its log above)"
      elif ! keepalive_requests "${port_of[$t]}" $((k * n)) "$cg_conns" 2>"$dir/client.err"; then
        show_logs "$dir/client.err" "${log_of[$t]}"
        why="the client failed under valgrind: $(tail -n1 "$dir/client.err")"
      fi
      lb_stop "${pid_of[$t]}" 120 # valgrind writes the profile at exit
      ir=$(sed -n 's/^totals: *//p' "$out" 2>/dev/null | head -n1)
      if [ -z "$why" ] && [ -z "$ir" ]; then
        show_logs "${log_of[$t]}"
        why="no callgrind profile at exit"
      fi
      if [ -n "$why" ]; then
        lb_log "callgrind: $t: $why"
        echo "$t fail $why" >>"$T/cg-results"
        break
      fi
      "$CG_ANNOTATE" --auto=no --threshold=100 "$out" >"$dir/annotate.txt"
      echo "$t $k $ir" >>"$T/cg-results"
      lb_log "    Ir = $ir"
    done
  done

  python3 - "$T" "$n" "$cg_conns" <<'EOF'
import os, re, sys
T, n, conns = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ir, fail = {}, {}
for line in open(os.path.join(T, "cg-results")):
    t, k, rest = line.rstrip("\n").split(" ", 2)
    if k == "fail":
        fail[t] = rest
    else:
        ir[t, int(k)] = int(rest)

def functions(path):
    """{file:function: self Ir} from callgrind_annotate, and the object of each."""
    out, objs, started, obj = {}, {}, False, "?"
    for line in open(path):
        if re.match(r"^Ir\s+file:function", line):
            started = True
            continue
        m = re.match(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(\S.*?)(?:\s+\[(.*)\])?\s*$", line)
        if not started or not m:
            continue
        if m.group(3):
            obj = os.path.basename(m.group(3))
        key = m.group(2)
        out[key] = out.get(key, 0) + int(m.group(1).replace(",", ""))
        objs.setdefault(key, obj)
    return out, objs

def name(key, obj):
    file, _, fn = key.rpartition(":")
    file = os.path.basename(file)
    where = obj if file in ("", "???") else "%s, %s" % (obj, file)
    return "`%s` (%s)" % (fn, where)

print("| proxy | Ir, %d requests | Ir, %d requests | **instructions / request** | start-up + shut-down |" % (n, 2 * n))
print("|---|---:|---:|---:|---:|")
per = {}
for t in ("lb", "nginx", "haproxy"):
    if (t, 1) in ir and (t, 2) in ir:
        per[t] = (ir[t, 2] - ir[t, 1]) / n
        print("| %s | %s | %s | **%.0f** | %s |" % (t, format(ir[t, 1], ","), format(ir[t, 2], ","),
              per[t], format(round(ir[t, 1] - n * per[t]), ",")))
    else:
        print("| %s | — | — | could not be measured: %s | |" % (t, fail.get(t, "?")))
for other in ("nginx", "haproxy"):
    if "lb" in per and other in per:
        print("| *lb ÷ %s* | | | *%.2f×* | |" % (other, per["lb"] / per[other]))
print()
print("(Ir(2N) − Ir(N)) / N with N = %d, %s keep-alive connections, one backend; "
      "start-up + shut-down = Ir(N) − N × instructions/request." % (n, conns))
for t in ("lb", "nginx", "haproxy"):
    if t not in per:
        continue
    f1, _ = functions(os.path.join(T, "cg-%s-1" % t, "annotate.txt"))
    f2, objs = functions(os.path.join(T, "cg-%s-2" % t, "annotate.txt"))
    print()
    print("%s: top 10 functions by self Ir in the %d-request run" % (t, 2 * n))
    print()
    print("| function (object, file) | self Ir | % of the run | per request ((2N − N) / N) |")
    print("|---|---:|---:|---:|")
    for key in sorted(f2, key=f2.get, reverse=True)[:10]:
        print("| %s | %s | %.1f%% | %.0f |" % (name(key, objs[key]), format(f2[key], ","),
              100.0 * f2[key] / ir[t, 2], (f2[key] - f1.get(key, 0)) / n))
EOF
}

# --- --idle: memory per idle keep-alive connection ------------------------------------

mode_idle() {
  local t port before after closed est open client line
  local -a pp
  start_backends "$n_backends"
  new_ports
  port_of=([lb]=$lb_port [nginx]=$nginx_port [haproxy]=$haproxy_port)
  write_configs "$T" 1 "${backend_ports[@]}"
  lb_log "starting lb, nginx and haproxy on CPU $proxy_cpu (max connections $maxconn)"
  for t in lb nginx haproxy; do start_proxy "$t" "$T"; done
  for t in lb nginx haproxy; do
    wait_proxy "$t" 10 || lb_die "$t did not start"
    check_answer "$t"
  done
  describe_machine
  : >"$T/idle-results"
  for t in lb nginx haproxy; do
    port=${port_of[$t]}
    mapfile -t pp < <(tree "${pid_of[$t]}")
    # Warm-up: the proxy's pools and upstream connections exist before the
    # baseline (200 connections, 100 at a time as below, each closed after
    # its response).
    timeout --foreground -k 5 120 taskset -c "$load_cpu" python3 scripts/idle-clients.py \
      --port "$port" --count 200 --hold 0 >/dev/null 2>"$T/idle-$t-warm.err" ||
      { show_logs "$T/idle-$t-warm.err"; lb_die "$t: warm-up failed"; }
    sleep 1
    before=$(rss "${pp[@]}")
    lb_log "idle: $t: RSS $before kB; opening $idle_conns idle keep-alive connections"
    lb_bg taskset -c "$load_cpu" python3 scripts/idle-clients.py --port "$port" \
      --count "$idle_conns" --hold 300 --timeout 150 >"$T/idle-$t.out" 2>"$T/idle-$t.err"
    client=$LB_PID
    lb_wait_line "$T/idle-$t.out" '^ready' "$client" 180 ||
      { show_logs "$T/idle-$t.err"; lb_die "$t: the idle clients did not get ready"; }
    sleep 2 # let the proxy settle
    after=$(rss "${pp[@]}")
    est=$(ss -Htn state established "( sport = :$port )" | wc -l)
    lb_stop "$client" 10
    line=$(grep '^open' "$T/idle-$t.out" || true)
    open=$(awk '{print $2}' <<<"$line")
    sleep 2
    closed=$(rss "${pp[@]}")
    lb_log "    RSS with the idle connections $after kB, after they closed $closed kB;" \
      "$est established on the proxy's port; client: ${line:-?}"
    echo "$t $idle_conns $before $after $closed $est ${open:-0}" >>"$T/idle-results"
  done

  python3 - "$T/idle-results" <<'EOF'
import sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
print("| proxy | idle connections | RSS before | RSS with them | growth | **bytes / connection** "
      "| RSS after they closed | still open at the end |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for t, n, before, after, closed, est, still in rows:
    n, before, after, closed = int(n), int(before), int(after), int(closed)
    mb = lambda kb: "%.1f MB" % (kb / 1024)
    print("| %s | %d | %s | %s | %s | **%.0f** | %s | %s |" % (
        t, n, mb(before), mb(after), mb(after - before), (after - before) * 1024 / n, mb(closed),
        still))
EOF
}

# --- --large: a 1 GiB download ------------------------------------------------------------

mode_large() {
  local t r out code size speed secs p0 p1 rc c0p c0l c1p c1l
  local -a pp
  start_backends "$n_backends"
  new_ports
  port_of=([direct]=${backend_ports[0]} [lb]=$lb_port [nginx]=$nginx_port [haproxy]=$haproxy_port)
  write_configs "$T" 1 "${backend_ports[@]}"
  lb_log "starting lb, nginx and haproxy on CPU $proxy_cpu"
  for t in lb nginx haproxy; do start_proxy "$t" "$T"; done
  for t in lb nginx haproxy; do wait_proxy "$t" 10 || lb_die "$t did not start"; done
  for t in direct lb nginx haproxy; do check_answer "$t"; done
  describe_machine
  : >"$T/large-results"
  for ((r = 1; r <= rounds; r++)); do
    for t in direct lb nginx haproxy; do
      pp=()
      [ "$t" != direct ] && mapfile -t pp < <(tree "${pid_of[$t]}")
      p0=$(ticks "${pp[@]}")
      read -r c0p c0l _ < <(busy)
      rc=0
      out=$(timeout --foreground -k 5 300 taskset -c "$load_cpu" "$CURL" -sS -m 280 -o /dev/null \
        -w '%{http_code} %{size_download} %{speed_download} %{time_total}' \
        "http://127.0.0.1:${port_of[$t]}/bytes?n=$large_bytes" 2>"$T/large-$t-$r.err") || rc=$?
      p1=$(ticks "${pp[@]}")
      read -r c1p c1l _ < <(busy)
      read -r code size speed secs <<<"$out"
      if [ "$rc" -ne 0 ] || [ "$code" != 200 ] || [ "$size" != "$large_bytes" ]; then
        show_logs "$T/large-$t-$r.err"
        if [ "$t" != direct ]; then
          if lb_alive "${pid_of[$t]}"; then lb_log "$t is still running"; else lb_log "$t is no longer running"; fi
          show_logs "${log_of[$t]}"
        fi
        lb_die "$t: download failed (curl status $rc, HTTP ${code:-?}, ${size:-0} of $large_bytes bytes)"
      fi
      lb_log "round $r: $t: $((${speed%.*} / 1000000)) MB/s in ${secs}s; proxy CPU $(((p1 - p0) * 1000 / clk_tck)) ms"
      echo "$t $r $speed $secs $((p1 - p0)) $((c1p - c0p)) $((c1l - c0l))" >>"$T/large-results"
      sleep 0.5
    done
  done

  python3 - "$T/large-results" "$clk_tck" "$large_bytes" "$n_proxy_cpus" "$n_load_cpus" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
hz, size = float(sys.argv[2]), int(sys.argv[3])
NP, NL = int(sys.argv[4]), int(sys.argv[5])
med = {}
# Core busy: % of the proxy core(s) and of the load core(s) over the download
# (ticks of /proc/stat ÷ the download's wall time): which side set the pace.
print("| target | MB/s (median) | runs, MB/s | proxy CPU s per GiB | proxy core busy | load core busy | ÷ direct |")
print("|---|---:|---|---:|---:|---:|---:|")
for t in ("direct", "lb", "nginx", "haproxy"):
    rs = [r for r in rows if r[0] == t]
    speeds = [float(r[2]) / 1e6 for r in rs]
    med[t] = statistics.median(speeds)
    cpu = "—" if t == "direct" else "%.2f" % (statistics.median(int(r[4]) for r in rs) / hz * (1 << 30) / size)
    pcore = statistics.median(int(r[5]) / hz / float(r[3]) / NP * 100 for r in rs)
    lcore = statistics.median(int(r[6]) / hz / float(r[3]) / NL * 100 for r in rs)
    print("| %s | %.0f | %s | %s | %.0f%% | %.0f%% | %s |" % (
        t, med[t], ", ".join("%.0f" % s for s in speeds), cpu, pcore, lcore,
        "" if t == "direct" else "%.2f×" % (med[t] / med["direct"])))
EOF
}

# --- --spread: SO_REUSEPORT spread over 2 workers ---------------------------------------------

mode_spread() {
  local r dir pid rc
  start_backends "$n_backends"
  describe_machine
  : >"$T/spread-results"
  for ((r = 1; r <= rounds; r++)); do
    dir=$T/spread-$r
    mkdir -p "$dir"
    new_ports
    write_configs "$dir" "$spread_workers" "${backend_ports[@]}"
    # Not pinned: the workers have both cores. Ready when lb says it listens
    # (a test connection would count as an accept).
    lb_bg "$LB_BIN" -c "$dir/lb.yaml" >"$dir/lb.log" 2>&1
    pid=$LB_PID
    lb_wait_line "$dir/lb.log" 'listening on' "$pid" 10 ||
      { show_logs "$dir/lb.log"; lb_die "lb did not start"; }
    lb_log "round $r: lb with $spread_workers workers, wrk -c$spread_conns for ${duration}s"
    rc=0
    timeout --foreground -k 5 $((duration + 30)) taskset -c "$load_cpu" "$WRK" -t2 -c"$spread_conns" \
      -d"${duration}s" "http://127.0.0.1:$lb_port/" >"$dir/wrk.out" 2>&1 || rc=$?
    [ "$rc" -eq 0 ] || { show_logs "$dir/wrk.out"; lb_die "wrk failed (status $rc)"; }
    lb_stop "$pid" 30 # the workers log their counts as they end
    grep 'connections accepted' "$dir/lb.log" >&2 || { show_logs "$dir/lb.log"; lb_die "lb logged no counts"; }
    echo "$r $dir/lb.log $dir/wrk.out" >>"$T/spread-results"
    sleep 1
  done

  python3 - "$T/spread-results" "$spread_workers" "$spread_conns" <<'EOF'
import re, statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
workers = int(sys.argv[2])
cols = " | ".join("worker %d accepted" % i for i in range(workers))
cols2 = " | ".join("worker %d found none" % i for i in range(workers))
print("| round | %s | **max/min** | %s | req/s | errors |" % (cols, cols2))
print("|---|" + "---:|" * (2 * workers + 3))
ratios = []
for r, log, wrk in rows:
    acc, none = {}, {}
    for m in re.finditer(r"worker (\d+): (\d+) connections accepted, (\d+) wakeups found none", open(log).read()):
        acc[int(m.group(1))], none[int(m.group(1))] = int(m.group(2)), int(m.group(3))
    text = open(wrk).read()
    rps = re.search(r"^Requests/sec:\s*([\d.]+)", text, re.M)
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors += int(m.group(1)) if m else 0
    a = [acc.get(i, 0) for i in range(workers)]
    ratio = max(a) / min(a) if min(a) else float("inf")
    ratios.append(ratio)
    print("| %s | %s | **%.2f** | %s | %s | %d |" % (
        r, " | ".join(str(x) for x in a), ratio, " | ".join(str(none.get(i, 0)) for i in range(workers)),
        "%.0f" % float(rps.group(1)) if rps else "—", errors))
print("| *median* |%s **%.2f** |%s | |" % (" |" * workers, statistics.median(ratios), " |" * workers))
EOF
}

case $mode in
  callgrind) mode_callgrind; exit 0 ;;
  idle) mode_idle; exit 0 ;;
  large) mode_large; exit 0 ;;
  spread) mode_spread; exit 0 ;;
esac

# --- the default mode: start everything ---------------------------------------------

start_backends "$n_backends"
new_ports
write_configs "$T" 1 "${backend_ports[@]}"
lb_log "starting lb, nginx and haproxy on CPU $proxy_cpu"
for t in lb nginx haproxy; do start_proxy "$t" "$T"; done
port_of=([direct]=${backend_ports[0]} [lb]=$lb_port [nginx]=$nginx_port [haproxy]=$haproxy_port)
for t in lb nginx haproxy; do wait_proxy "$t" 10 || lb_die "$t did not start"; done
targets=(direct lb nginx haproxy)

# Every target answers 200 from a backend before anything is measured.
for t in "${targets[@]}"; do check_answer "$t"; done

# --- one measured run ------------------------------------------------------------

# run TARGET CONNS ROUND: one wrk run; appends a line to $T/results:
#   target conns round req/s p50_us p99_us proxy_us/req load_us/req
#   proxy_core_busy% load_core_busy% errors other%
# where other% is machine CPU time not charged to the proxy or the load side
# processes (softirq, interrupts, other processes), in % of one core.
run() {
  local target=$1 conns=$2 round=$3 out=$T/wrk-$1-$2-$3
  local -a ppids=()
  if [ "$target" != direct ]; then mapfile -t ppids < <(tree "${pid_of[$target]}"); fi
  local p0 b0 c0 p1 b1 c1 t0 t1 rc=0 TIMEFORMAT='%3U %3S'
  p0=$(ticks "${ppids[@]}")
  b0=$(ticks "${backend_pids[@]}")
  c0=$(busy)
  t0=$EPOCHREALTIME
  { time timeout --foreground -k 5 $((duration + 30)) taskset -c "$load_cpu" \
    "$WRK" -t1 -c"$conns" -d"${duration}s" --latency "${wrk_script[@]}" \
    "http://127.0.0.1:${port_of[$target]}/" \
    >"$out.out" 2>"$out.err"; } 2>"$out.time" || rc=$?
  t1=$EPOCHREALTIME
  c1=$(busy)
  p1=$(ticks "${ppids[@]}")
  b1=$(ticks "${backend_pids[@]}")
  if [ "$rc" -ne 0 ] || ! grep -q '^Requests/sec:' "$out.out"; then
    show_logs "$out.out" "$out.err"
    lb_die "wrk against $target (c=$conns) failed (status $rc)"
  fi
  for pid in "${ppids[@]:0:1}" "${backend_pids[@]}"; do
    lb_alive "$pid" || lb_die "pid $pid ($target or a backend) died during the run"
  done
  python3 - "$target" "$conns" "$round" "$out.out" "$out.time" "$clk_tck" "$t0" "$t1" \
    "${#ppids[@]}" "$((p1 - p0))" "$((b1 - b0))" "$c0" "$c1" "$n_proxy_cpus" "$n_load_cpus" \
    >>"$T/results" <<'EOF'
import re, sys
(target, conns, rnd, wrk_out, time_out, hz, t0, t1, nproxy, pt, bt, c0, c1,
 n_pcpu, n_lcpu) = sys.argv[1:]
text = open(wrk_out).read()
unit = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6}
def lat(pct):
    m = re.search(r"^\s*%s%%\s+([\d.]+)(us|ms|s|m)\s*$" % pct, text, re.M)
    return float(m.group(1)) * unit[m.group(2)]
requests = int(re.search(r"^\s*(\d+) requests in", text, re.M).group(1))
rps = float(re.search(r"^Requests/sec:\s*([\d.]+)", text, re.M).group(1))
errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
errors += int(m.group(1)) if m else 0
wall = float(t1) - float(t0)
hz = float(hz)
core = [(int(b) - int(a)) / hz for a, b in zip(c0.split(), c1.split())]
proxy_cpu = int(pt) / hz
load_cpu = sum(float(x) for x in open(time_out).read().split()[-2:]) + int(bt) / hz
other = core[2] - proxy_cpu - load_cpu
def per_req(cpu):
    return "%.3f" % (cpu * 1e6 / requests) if requests else "nan"
if int(nproxy):
    proxy_us, proxy_core = per_req(proxy_cpu), "%.1f" % (100 * core[0] / wall / int(n_pcpu))
else:
    proxy_us = proxy_core = "-"
print(target, conns, rnd, "%.1f" % rps, "%.1f" % lat(50), "%.1f" % lat(99), proxy_us,
      per_req(load_cpu), proxy_core, "%.1f" % (100 * core[1] / wall / int(n_lcpu)), errors,
      "%.0f" % max(0, 100 * other / wall))
EOF
}

# --- the runs ----------------------------------------------------------------------

: >"$T/results"
describe_machine
lb_log "duration ${duration}s, $rounds round(s), conns: ${conns_arr[*]}, $n_backends backends; proxy on CPU $proxy_cpu, wrk + backends on CPU $load_cpu"

lb_log "warm-up: 1s per target"
for t in "${targets[@]}"; do
  timeout --foreground -k 5 20 taskset -c "$load_cpu" "$WRK" -t1 -c50 -d1s \
    "http://127.0.0.1:${port_of[$t]}/" >/dev/null 2>&1 || lb_die "warm-up of $t failed"
done

# --- --together: the three proxies at once ------------------------------------------

# user_system PID: user and system clock ticks of PID and its children
# (nginx's worker is a child of its master).
user_system() {
  local u=0 s=0 pid st f
  for pid in $(tree "$1"); do
    read -r st 2>/dev/null <"/proc/$pid/stat" || continue
    st=${st##*) }
    read -ra f <<<"$st"
    u=$((u + f[11]))
    s=$((s + f[12]))
  done
  echo "$u $s"
}

# run_together CONNS ROUND: one wrk per proxy, all at once; appends a line per
# proxy to $T/together: target conns round requests user0 system0 user1 system1.
run_together() {
  local c=$1 r=$2 t
  local -A before=() wrk_pid=()
  for t in lb nginx haproxy; do before[$t]=$(user_system "${pid_of[$t]}"); done
  for t in lb nginx haproxy; do
    timeout --foreground -k 5 $((duration + 30)) taskset -c "$load_cpu" "$WRK" -t1 -c"$c" \
      -d"${duration}s" "http://127.0.0.1:${port_of[$t]}/" >"$T/together-$t-$c-$r.out" 2>&1 &
    wrk_pid[$t]=$!
  done
  for t in lb nginx haproxy; do
    wait "${wrk_pid[$t]}" || { show_logs "$T/together-$t-$c-$r.out"; lb_die "wrk against $t failed"; }
  done
  for t in lb nginx haproxy; do
    lb_alive "${pid_of[$t]}" || lb_die "$t died during the run"
    echo "$t $c $r $(awk '/requests in/ {print $1}' "$T/together-$t-$c-$r.out") ${before[$t]}" \
      "$(user_system "${pid_of[$t]}")" >>"$T/together"
  done
}

if [ "$mode" = together ]; then
  describe_machine
  : >"$T/together"
  for c in "${conns_arr[@]}"; do
    for ((r = 1; r <= rounds; r++)); do
      lb_log "c=$c round $r: lb, nginx and haproxy at once, ${duration}s"
      run_together "$c" "$r"
      sleep 0.5
    done
  done
  python3 - "$T/together" "$clk_tck" "${conns_arr[@]}" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
hz, conns = float(sys.argv[2]), sys.argv[3:]
print("| proxy | conns each | requests | user µs/req | system µs/req | **CPU µs/req** | runs, CPU µs/req |")
print("|---|---:|---:|---:|---:|---:|---|")
for c in conns:
    med = {}
    for t in ("lb", "nginx", "haproxy"):
        rs = [r for r in rows if r[0] == t and r[1] == c]
        per = [(1e6 / hz * (int(r[6]) - int(r[4])) / int(r[3]),
                1e6 / hz * (int(r[7]) - int(r[5])) / int(r[3])) for r in rs]
        tot = [u + s for u, s in per]
        med[t] = statistics.median(tot)
        print("| %s | %s | %.0f | %.2f | %.2f | **%.2f** | %s |" % (
            t, c, statistics.median(int(r[3]) for r in rs), statistics.median(u for u, _ in per),
            statistics.median(s for _, s in per), med[t], ", ".join("%.2f" % x for x in tot)))
    for o in ("nginx", "haproxy"):
        print("| *lb ÷ %s* | %s | | | | *%.2f×* | |" % (o, c, med["lb"] / med[o]))
EOF
  exit 0
fi

total=$(( ${#conns_arr[@]} * rounds * ${#targets[@]} ))
n=0
for c in "${conns_arr[@]}"; do
  for ((r = 1; r <= rounds; r++)); do
    for t in "${targets[@]}"; do
      n=$((n + 1))
      lb_log "[$n/$total] c=$c round $r: $t"
      run "$t" "$c" "$r"
      read -r _ _ _ rps _ _ us_req _ pcore lcore errors other < <(tail -n1 "$T/results")
      lb_log "    ${rps%.*} req/s, proxy $us_req µs/req, cores busy: proxy $pcore%, load $lcore%;" \
        "$errors errors; CPU not charged to these processes: $other% of a core"
      sleep 0.5
    done
  done
done

# --- the table -------------------------------------------------------------------------

python3 - "$T/results" "${conns_arr[@]}" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
conns_order = sys.argv[2:]
targets = ["direct", "lb", "nginx", "haproxy"]

def med(vals):
    vals = [float(v) for v in vals if v not in ("-", "nan")]
    return statistics.median(vals) if vals else None

def fmt_lat(us):
    return "%.0f µs" % us if us < 1000 else "%.2f ms" % (us / 1000)

def fmt(v, spec):
    return "—" if v is None else spec % v

agg = {}
for t in targets:
    for c in conns_order:
        rs = [r for r in rows if r[0] == t and r[1] == c]
        if not rs:
            continue
        agg[t, c] = dict(rps=med(r[3] for r in rs), p50=med(r[4] for r in rs),
                         p99=med(r[5] for r in rs), cpu=med(r[6] for r in rs),
                         lcpu=med(r[7] for r in rs), pcore=med(r[8] for r in rs),
                         lcore=med(r[9] for r in rs), err=sum(int(r[10]) for r in rs))

print("| target | conns | req/s | p50 | p99 | proxy CPU µs/req | load CPU µs/req "
      "| proxy core busy | load core busy | errors |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for c in conns_order:
    for t in targets:
        a = agg.get((t, c))
        if not a:
            continue
        print("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |" % (
            t, c, fmt(a["rps"], "%.0f"), fmt_lat(a["p50"]), fmt_lat(a["p99"]),
            fmt(a["cpu"], "%.2f"), fmt(a["lcpu"], "%.2f"), fmt(a["pcore"], "%.0f%%"),
            fmt(a["lcore"], "%.0f%%"), a["err"]))
    lb = agg.get(("lb", c))
    for other in ("nginx", "haproxy"):
        o = agg.get((other, c))
        if not lb or not o:
            continue
        rps = lb["rps"] / o["rps"] if o["rps"] else None
        cpu = lb["cpu"] / o["cpu"] if lb["cpu"] is not None and o["cpu"] else None
        print("| *lb ÷ %s* | %s | *%s* | | | *%s* | | | | |" % (
            other, c, fmt(rps, "%.2f×"), fmt(cpu, "%.2f×")))
EOF
