# shellcheck shell=bash
# Helpers shared by demo.sh and bench.sh: processes started in the background
# are recorded by pid and stopped on exit (also on Ctrl-C), ports are checked
# before use, readiness is polled with a deadline. Source it; do not run it.

LB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LB_PIDS=()   # background processes this script started, in start order
LB_TMP=""    # a temporary directory, removed on exit unless LB_KEEP_TMP=1

lb_log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
lb_die() {
  lb_log "error: $*"
  exit 1
}

# lb_tmpdir: creates LB_TMP once.
lb_tmpdir() {
  [ -n "$LB_TMP" ] || LB_TMP=$(mktemp -d "${TMPDIR:-/tmp}/lb-${0##*/}.XXXXXX")
}

# lb_bg CMD...: starts CMD in the background (its stdin from /dev/null; the
# caller redirects stdout/stderr around the call) and records its pid in
# LB_PID and LB_PIDS.
lb_bg() {
  "$@" </dev/null &
  LB_PID=$!
  LB_PIDS+=("$LB_PID")
}

# lb_alive PID: true while PID exists and is not a zombie.
lb_alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat:0:1}" != Z ]
}

# lb_stop PID [SECONDS]: SIGTERM, then SIGKILL after SECONDS (default 5), then reap.
lb_stop() {
  local pid=$1 limit=$(( ${2:-5} * 10 )) i=0
  if lb_alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    while lb_alive "$pid" && [ "$i" -lt "$limit" ]; do
      sleep 0.1
      i=$((i + 1))
    done
    if lb_alive "$pid"; then
      lb_log "pid $pid did not stop after ${2:-5}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || true
}

# lb_cleanup: stops every recorded process, newest first; removes LB_TMP.
# Runs from the EXIT trap, so it is also what Ctrl-C and SIGTERM end in.
lb_cleanup() {
  local rc=$? i
  trap - EXIT INT TERM
  for ((i = ${#LB_PIDS[@]} - 1; i >= 0; i--)); do
    lb_stop "${LB_PIDS[i]}" "${LB_STOP_SECONDS:-5}"
  done
  LB_PIDS=()
  if [ -n "$LB_TMP" ] && [ "${LB_KEEP_TMP:-0}" != 1 ]; then
    rm -rf "$LB_TMP"
  elif [ -n "$LB_TMP" ]; then
    lb_log "kept $LB_TMP"
  fi
  exit "$rc"
}
trap lb_cleanup EXIT
set -E # so that the ERR trap also sees failures inside functions
_lb_rc=0
# (said once, by the script itself, not again by each subshell it ran in)
trap '_lb_rc=$?; [ "$BASHPID" = "$$" ] && lb_log "failed (status $_lb_rc) at line $LINENO: $BASH_COMMAND"' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

# lb_port_taken PORT [HOST]: true when something already holds HOST:PORT
# (a listener on it or on the wildcard address). It binds without
# SO_REUSEPORT, so a listener that would share the port with a new one is seen.
lb_port_taken() {
  ! python3 - "$1" "${2:-127.0.0.1}" <<'EOF'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # ignore TIME_WAIT leftovers
try:
    s.bind((sys.argv[2], int(sys.argv[1])))
except OSError:
    sys.exit(1)
EOF
}

# lb_free_ports N: prints N distinct free loopback ports, one a line.
lb_free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
held = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    held.append(s)
for s in held:
    print(s.getsockname()[1])
EOF
}

# lb_wait_port PORT PID [SECONDS]: waits until 127.0.0.1:PORT accepts a
# connection; fails when PID exits first or after SECONDS (default 10).
lb_wait_port() {
  local port=$1 pid=$2 limit=$(( ${3:-10} * 20 )) i=0
  while ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    lb_alive "$pid" || return 1
    i=$((i + 1))
    [ "$i" -lt "$limit" ] || return 1
    sleep 0.05
  done
}

# lb_wait_line FILE REGEX PID SECONDS: waits until a line of FILE matches
# REGEX (grep -E); returns 1 if PID ends or SECONDS pass first.
lb_wait_line() {
  local file=$1 re=$2 pid=$3 limit=$(( $4 * 10 )) i=0
  until grep -Eq "$re" "$file" 2>/dev/null; do
    lb_alive "$pid" || return 1
    i=$((i + 1))
    [ "$i" -lt "$limit" ] || return 1
    sleep 0.1
  done
}

# lb_backend_port LOGFILE PID [SECONDS]: waits for lb-backend's ready line
# ("lb-backend ID listening on ADDR:PORT") in LOGFILE and prints the port.
lb_backend_port() {
  local log=$1 pid=$2 limit=$(( ${3:-10} * 20 )) i=0 line
  while :; do
    line=$(grep -m1 -o 'listening on .*:[0-9]*$' "$log" 2>/dev/null || true)
    if [ -n "$line" ]; then
      echo "${line##*:}"
      return 0
    fi
    lb_alive "$pid" || return 1
    i=$((i + 1))
    [ "$i" -lt "$limit" ] || return 1
    sleep 0.05
  done
}

# lb_build_release: configures and builds build-rel (Release) quietly.
lb_build_release() {
  cmake -S "$LB_ROOT" -B "$LB_ROOT/build-rel" -DCMAKE_BUILD_TYPE=Release --log-level=WARNING >/dev/null
  cmake --build "$LB_ROOT/build-rel" -j2 >/dev/null 2>&1 ||
    cmake --build "$LB_ROOT/build-rel" -j1 # again, to show the errors unmixed
}

# lb_find_bin NAME: the path of a program (PATH, /usr/sbin, /usr/local/sbin), or die.
lb_find_bin() {
  local b
  for b in "$(command -v "$1" 2>/dev/null || true)" "/usr/sbin/$1" "/usr/local/sbin/$1"; do
    [ -n "$b" ] && [ -x "$b" ] && { echo "$b"; return 0; }
  done
  lb_die "$1 not found (LB_SETUP_BENCH=1 scripts/setup.sh installs it)"
}

# lb_usage: prints the calling script's header comment (line 2 to `set -euo`).
lb_usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

# lb_need_arg OPTION [VALUE...]: dies unless the option has a value.
lb_need_arg() { [ $# -ge 2 ] || lb_die "$1 needs a value (try --help)"; }
