#!/usr/bin/env bash
# The benchmark (not a test): bounded wrk loads on loopback against a sample
# backend directly, lb, nginx and HAProxy, each proxy with one worker/thread
# over the same backends, pinned to its own core. Prints a Markdown table to
# stdout (progress goes to stderr). See docs/BENCHMARK.md.
#
#   scripts/bench.sh [--duration S] [--rounds N] [--conns "1 50 1000"]
#                    [--backends N] [--quick]
#
#   --duration S   seconds per wrk run (default 5)
#   --rounds N     interleaved rounds; the table shows medians (default 3)
#   --conns LIST   wrk connection counts (default "1 50 1000")
#   --backends N   lb-backend processes behind the proxies (default 2)
#   --quick        1 round of 2s: a smoke check of the script, not a result
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
conns_list="1 50 1000"
n_backends=2
proxy_cpu=${LB_BENCH_PROXY_CPU:-0}
load_cpu=${LB_BENCH_LOAD_CPU:-1}

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }
need_arg() { [ $# -ge 2 ] || lb_die "$1 needs a value (try --help)"; }
while [ $# -gt 0 ]; do
  case $1 in
    --duration) need_arg "$@"; duration=$2; shift 2 ;;
    --rounds) need_arg "$@"; rounds=$2; shift 2 ;;
    --conns) need_arg "$@"; conns_list=$2; shift 2 ;;
    --backends) need_arg "$@"; n_backends=$2; shift 2 ;;
    --quick) rounds=1; duration=2; shift ;;
    -h | --help) usage; exit 0 ;;
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

find_bin() {
  local b
  for b in "$(command -v "$1" 2>/dev/null || true)" "/usr/sbin/$1" "/usr/local/sbin/$1"; do
    [ -n "$b" ] && [ -x "$b" ] && { echo "$b"; return 0; }
  done
  lb_die "$1 not found (LB_SETUP_BENCH=1 scripts/setup.sh installs it)"
}
NGINX=$(find_bin nginx)
HAPROXY=$(find_bin haproxy)
WRK=$(find_bin wrk)

taskset -c "$proxy_cpu" true 2>/dev/null || lb_die "cannot pin to CPU $proxy_cpu (LB_BENCH_PROXY_CPU)"
taskset -c "$load_cpu" true 2>/dev/null || lb_die "cannot pin to CPU(s) $load_cpu (LB_BENCH_LOAD_CPU)"
[ "$(nproc)" -ge 2 ] || lb_log "warning: $(nproc) CPU: the proxy and the load share it; numbers mean little"

# Each proxy holds two descriptors per connection (client + upstream).
need_fds=$((2 * max_conns + 256))
hard=$(ulimit -Hn)
want=65536
[ "$hard" != unlimited ] && [ "$hard" -lt "$want" ] && want=$hard
ulimit -n "$want"
[ "$want" -ge "$need_fds" ] || lb_die "open files limit $want < $need_fds needed for $max_conns connections"
maxconn=$(((want - 256) / 2)) # client connections each proxy accepts

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

lb_log "starting $n_backends backends on CPU $load_cpu"
backend_pids=()
backend_ports=()
for ((i = 1; i <= n_backends; i++)); do
  lb_bg taskset -c "$load_cpu" "$BACKEND_BIN" --listen 127.0.0.1:0 --id "b$i" 2>"$T/backend$i.log"
  backend_pids+=("$LB_PID")
  port=$(lb_backend_port "$T/backend$i.log" "$LB_PID") ||
    { show_logs "$T/backend$i.log"; lb_die "backend b$i did not start"; }
  backend_ports+=("$port")
done

# --- proxies -------------------------------------------------------------------

mapfile -t ports < <(lb_free_ports 3)
lb_port=${ports[0]} nginx_port=${ports[1]} haproxy_port=${ports[2]}

{
  echo "workers: 1"
  echo "listen:"
  echo "  - address: 127.0.0.1:$lb_port"
  echo "log: { access: off }"
  echo "limits: { max_connections: $maxconn }"
  echo "backends:"
  echo "  app:"
  echo "    balance: roundrobin"
  echo "    keepalive: 1024"
  echo "    servers:"
  for p in "${backend_ports[@]}"; do echo "      - { address: 127.0.0.1:$p }"; done
} >"$T/lb.yaml"

mkdir -p "$T/nginx"
{
  echo "worker_processes 1;"
  echo "worker_rlimit_nofile $want;"
  echo "pid $T/nginx/nginx.pid;"
  echo "error_log $T/nginx/error.log warn;"
  echo "events { worker_connections $want; }" # counts client and upstream connections
  echo "http {"
  echo "  access_log off;"
  echo "  keepalive_requests 1000000;"
  for d in client_body proxy fastcgi uwsgi scgi; do echo "  ${d}_temp_path $T/nginx/$d;"; done
  echo "  upstream app {"
  for p in "${backend_ports[@]}"; do echo "    server 127.0.0.1:$p;"; done
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
} >"$T/nginx/nginx.conf"

{
  echo "global"
  echo "  nbthread 1"
  echo "  maxconn $maxconn"
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
  for p in "${backend_ports[@]}"; do
    i=$((i + 1))
    echo "  server b$i 127.0.0.1:$p"
  done
} >"$T/haproxy.cfg"

"$LB_BIN" -t -c "$T/lb.yaml" >/dev/null
"$NGINX" -t -q -c "$T/nginx/nginx.conf" -p "$T/nginx" -e "$T/nginx/error.log" ||
  { show_logs "$T/nginx/error.log"; lb_die "nginx rejected its configuration"; }
"$HAPROXY" -c -q -f "$T/haproxy.cfg" || lb_die "haproxy rejected its configuration"

lb_log "starting lb, nginx and haproxy on CPU $proxy_cpu"
lb_bg taskset -c "$proxy_cpu" "$LB_BIN" -c "$T/lb.yaml" >"$T/lb.log" 2>&1
lb_pid=$LB_PID
lb_bg taskset -c "$proxy_cpu" "$NGINX" -c "$T/nginx/nginx.conf" -p "$T/nginx" \
  -e "$T/nginx/error.log" -g 'daemon off;' >"$T/nginx/stdout.log" 2>&1
nginx_pid=$LB_PID
lb_bg taskset -c "$proxy_cpu" "$HAPROXY" -f "$T/haproxy.cfg" -db >"$T/haproxy.log" 2>&1
haproxy_pid=$LB_PID

lb_wait_port "$lb_port" "$lb_pid" || { show_logs "$T/lb.log"; lb_die "lb did not start"; }
lb_wait_port "$nginx_port" "$nginx_pid" ||
  { show_logs "$T/nginx/error.log" "$T/nginx/stdout.log"; lb_die "nginx did not start"; }
lb_wait_port "$haproxy_port" "$haproxy_pid" || { show_logs "$T/haproxy.log"; lb_die "haproxy did not start"; }

targets=(direct lb nginx haproxy)
declare -A port_of=([direct]=${backend_ports[0]} [lb]=$lb_port [nginx]=$nginx_port [haproxy]=$haproxy_port)
declare -A pid_of=([lb]=$lb_pid [nginx]=$nginx_pid [haproxy]=$haproxy_pid)

# Every target answers 200 from a backend before anything is measured.
for t in "${targets[@]}"; do
  head=$(curl -sS -m 5 -o /dev/null -D - "http://127.0.0.1:${port_of[$t]}/") ||
    lb_die "$t: no answer on 127.0.0.1:${port_of[$t]}"
  case $head in
    "HTTP/1.1 200"*[Xx]-[Bb]ackend-[Ii]d:*) ;;
    *) lb_die "$t: unexpected answer: ${head%%$'\r'*}" ;;
  esac
done

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
    "$WRK" -t1 -c"$conns" -d"${duration}s" --latency "http://127.0.0.1:${port_of[$target]}/" \
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
lb_log "$(date -u '+%F %T UTC'), $(uname -sr), $(nproc) CPUs ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n1))"
# first_line CMD...: the first line CMD prints (stdout or stderr), whatever its status.
first_line() { { "$@" 2>&1 || true; } | head -n1; }
haproxy_v=$(first_line "$HAPROXY" -v)
wrk_v=$(first_line "$WRK" -v)
lb_log "$(first_line "$LB_BIN" -v); $(first_line "$NGINX" -v); ${haproxy_v%% 20[0-9][0-9]/*}; ${wrk_v%% \[*}"
lb_log "duration ${duration}s, $rounds round(s), conns: ${conns_arr[*]}, $n_backends backends; proxy on CPU $proxy_cpu, wrk + backends on CPU $load_cpu"

# Other work on the machine skews every number: say so when it is not quiet.
read -r _ _ q0 < <(busy)
sleep 2
read -r _ _ q1 < <(busy)
quiet=$(((q1 - q0) * 100 / clk_tck / 2))
if [ "$quiet" -gt 10 ]; then
  lb_log "warning: before the runs, the machine was busy ($quiet% of a core, all proxies idle):" \
    "another process is running; the results will be noisy"
fi

lb_log "warm-up: 1s per target"
for t in "${targets[@]}"; do
  timeout --foreground -k 5 20 taskset -c "$load_cpu" "$WRK" -t1 -c50 -d1s \
    "http://127.0.0.1:${port_of[$t]}/" >/dev/null 2>&1 || lb_die "warm-up of $t failed"
done

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
