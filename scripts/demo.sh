#!/usr/bin/env bash
# The demo: installs what is missing, builds lb (Release, build-rel), starts
# three sample backends (web1..web3 on 127.0.0.1:9001-9003) and lb with
# config/lb.yaml on 127.0.0.1:8080, and runs until Ctrl-C; then it stops
# everything it started.
#
#   scripts/demo.sh            run until Ctrl-C
#   scripts/demo.sh --smoke    (or LB_DEMO_SMOKE=1) a few requests, a check, then stop
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$LB_ROOT"

smoke=${LB_DEMO_SMOKE:-0}
for arg in "$@"; do
  case $arg in
    --smoke) smoke=1 ;;
    -h | --help)
      sed -n '2,8s/^# \{0,1\}//p' "$0"
      exit 0
      ;;
    *) lb_die "unknown argument '$arg' (try --help)" ;;
  esac
done

LB_PORT=8080
STATS_PORT=9180
BACKEND_PORTS=(9001 9002 9003)

scripts/setup.sh
lb_log "building build-rel (Release)"
lb_build_release
LB_BIN=$LB_ROOT/build-rel/lb
BACKEND_BIN=$LB_ROOT/build-rel/backends/lb-backend
"$LB_BIN" -t -c config/lb.yaml >/dev/null

taken=()
for port in "$LB_PORT" "$STATS_PORT" "${BACKEND_PORTS[@]}"; do
  if lb_port_taken "$port"; then taken+=("$port"); fi
done
if [ ${#taken[@]} -gt 0 ]; then
  lb_die "port(s) ${taken[*]} on 127.0.0.1 already in use (another demo running?);" \
    "the demo needs 8080, 9180 and 9001-9003 free. Nothing was started."
fi

lb_tmpdir
LB_STOP_SECONDS=12 # lb drains in-flight requests for up to timeouts.drain (10s)
for i in "${!BACKEND_PORTS[@]}"; do
  id=web$((i + 1))
  port=${BACKEND_PORTS[i]}
  lb_bg "$BACKEND_BIN" --listen "127.0.0.1:$port" --id "$id" 2>"$LB_TMP/$id.log"
  lb_wait_port "$port" "$LB_PID" || {
    cat "$LB_TMP/$id.log" >&2
    lb_die "backend $id did not start on 127.0.0.1:$port"
  }
done

# lb's access log (config/lb.yaml: stdout) and messages go to this terminal.
lb_bg "$LB_BIN" -c config/lb.yaml
lb_pid=$LB_PID
lb_wait_port "$LB_PORT" "$lb_pid" || lb_die "lb did not start on 127.0.0.1:$LB_PORT"

cat >&2 <<EOF

lb is listening on http://127.0.0.1:$LB_PORT/ in front of web1..web3 (127.0.0.1:9001-9003).
Try, in another terminal:

  curl -i http://127.0.0.1:$LB_PORT/
  for i in 1 2 3 4 5 6; do curl -s http://127.0.0.1:$LB_PORT/; done
  curl -s -b /tmp/lb-demo.jar -c /tmp/lb-demo.jar http://127.0.0.1:$LB_PORT/session
  curl -s http://127.0.0.1:$STATS_PORT/metrics      # counters and server state

(/session keeps a per-session counter in one server's memory: without affinity
the next request may land on another server and start over at count=1.)
EOF

if [ "$smoke" = 1 ]; then
  lb_log "smoke check"
  seen=""
  for _ in 1 2 3 4 5 6; do
    head=$(curl -sS -m 5 -o /dev/null -D - "http://127.0.0.1:$LB_PORT/") ||
      lb_die "curl through lb failed"
    case $head in
      "HTTP/1.1 200"*) ;;
      *) lb_die "unexpected response: ${head%%$'\r'*}" ;;
    esac
    id=$(printf '%s' "$head" | tr -d '\r' | sed -n 's/^[Xx]-[Bb]ackend-[Ii]d: *//p')
    seen+=" $id"
  done
  for id in web1 web2 web3; do
    case "$seen " in *" $id "*) ;; *) lb_die "no response from $id in:$seen" ;; esac
  done
  jar=$LB_TMP/cookies
  for _ in 1 2; do
    body=$(curl -sS -m 5 -b "$jar" -c "$jar" "http://127.0.0.1:$LB_PORT/session") ||
      lb_die "curl /session through lb failed"
    lb_log "/session: $body"
  done
  metrics=$(curl -sS -m 5 "http://127.0.0.1:$STATS_PORT/metrics") || lb_die "GET /metrics failed"
  case $metrics in
    *'lb_worker_responses_total{worker="0",code="2xx"}'*) ;;
    *) lb_die "no response counters in /metrics" ;;
  esac
  lb_log "smoke check passed: responses from$seen; /metrics answers"
  exit 0
fi

lb_log "running; Ctrl-C stops lb and the backends"
status=0
wait "$lb_pid" || status=$?
lb_die "lb exited on its own (status $status)"
