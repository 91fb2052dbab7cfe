#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan+UBSan) and runs each for a bounded
# time over a copy of the committed seed corpus. Exit status 1 on a finding;
# the crashing input is left in build-fuzz/findings/.
#   scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 60)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
scripts/setup.sh
CC=clang cmake -S . -B build-fuzz -DLB_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j2 --target fuzz_request fuzz_response >/dev/null
mkdir -p build-fuzz/findings
status=0
for target in request response; do
  work="build-fuzz/corpus-$target"
  mkdir -p "$work"
  echo "fuzz: $target for ${seconds}s"
  if ! ./build-fuzz/tests/fuzz/fuzz_$target -max_total_time="$seconds" -print_final_stats=1 \
      -artifact_prefix=build-fuzz/findings/ "$work" "tests/fuzz/corpus/$target" \
      >"build-fuzz/fuzz-$target.log" 2>&1; then
    echo "fuzz: $target FAILED, see build-fuzz/fuzz-$target.log and build-fuzz/findings/"
    grep -E "ERROR|SUMMARY" "build-fuzz/fuzz-$target.log" | head -5
    status=1
  else
    grep -E "stat::number_of_executed_units" "build-fuzz/fuzz-$target.log" | sed "s/^/fuzz: $target /"
  fi
done
exit $status
