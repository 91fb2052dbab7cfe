#!/usr/bin/env bash
# Installs what is missing, builds lb with AddressSanitizer + UndefinedBehavior-
# Sanitizer in build-asan, and runs every test (unit and end-to-end) with ctest.
# Extra arguments go to ctest, e.g. `scripts/test.sh -L unit` or `-R config`.
# Without arguments it also builds the Release configuration (-O2 finds
# warnings a Debug build does not) and runs each libFuzzer target for a short
# bounded time (LB_FUZZ_SECONDS, default 30). Exits non-zero if anything
# failed. Safe to run again and again.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

cmake -S . -B build-asan -DLB_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug --log-level=WARNING
cmake --build build-asan -j2
if [ $# -eq 0 ]; then
  cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=Release --log-level=WARNING
  cmake --build build-rel -j2 --target lb lb-backend
fi

# LeakSanitizer needs to stop the process's threads with ptrace; some
# sandboxes and containers forbid that, and then every test would fail with
# "LeakSanitizer has encountered a fatal error". Check it on a program that
# leaks on purpose, and run without leak checks (saying so) when it is broken.
detect_leaks=1
cc=$(sed -n 's/^CMAKE_C_COMPILER:[A-Z]*=//p' build-asan/CMakeCache.txt)
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
printf '#include <stdlib.h>\nvoid *volatile p;\nint main(void) { p = malloc(7); p = 0; return 0; }\n' >"$probe/leak.c"
if "${cc:-cc}" -fsanitize=address -g "$probe/leak.c" -o "$probe/leak" 2>"$probe/cc.log"; then
  ASAN_OPTIONS=detect_leaks=1 "$probe/leak" >"$probe/run.log" 2>&1 || true
  if ! grep -q 'LeakSanitizer: detected memory leaks' "$probe/run.log"; then
    detect_leaks=0
    echo "test.sh: warning: LeakSanitizer does not work here (ptrace restricted?):" \
      "running without leak checks. Its output was:" >&2
    sed -n '1,5s/^/  /p' "$probe/run.log" >&2
  fi
else
  echo "test.sh: warning: cannot build a LeakSanitizer probe with ${cc:-cc}:" >&2
  sed -n '1,5s/^/  /p' "$probe/cc.log" >&2
fi

export ASAN_OPTIONS="detect_leaks=$detect_leaks${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"

status=0
ctest --test-dir build-asan --output-on-failure "$@" 2>&1 | tee build-asan/ctest.log || status=$?
if [ $# -eq 0 ]; then
  scripts/fuzz.sh "${LB_FUZZ_SECONDS:-30}" || status=1
  # ctest's verdict last, where a reader (or CI) looks for it.
  grep -E '^[0-9]+% tests passed' build-asan/ctest.log || true
fi
exit "$status"
