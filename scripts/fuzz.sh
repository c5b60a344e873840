#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) and runs each for a
# bounded time, starting from the seed corpus in tests/fuzz/corpus. Prints
# executions and coverage per target; exits non-zero on any crash, leak,
# sanitizer report or broken invariant (the reproducer is left in $WORK).
#   scripts/fuzz.sh SECONDS_PER_TARGET [BUILD_DIR]
# FUZZ_SEED=N fixes libFuzzer's mutation sequence (make test uses 1, so CI
# repeats the same inputs); unset, every run explores afresh.
set -euo pipefail
SECONDS_PER_TARGET=${1:-60}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(realpath -m "${2:-$ROOT/build-fuzz}")
cmake -S "$ROOT/tests/fuzz" -B "$BUILD" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j2 >/dev/null
WORK=$(mktemp -d)
TARGETS="perturb combine project formulas noise"
# One target per core at a time: each still gets a whole core for its
# SECONDS_PER_TARGET, and the run takes a core-count-th of the time.
JOBS=${FUZZ_JOBS:-$(nproc)}
run_target() {
  local t=$1
  mkdir -p "$WORK/$t"
  cp "$ROOT/tests/fuzz/corpus/$t/"* "$WORK/$t/" 2>/dev/null || true
  if (cd "$WORK" && "$BUILD/fuzz_$t" "$WORK/$t" -max_total_time="$SECONDS_PER_TARGET" \
        -print_final_stats=1 -rss_limit_mb=2048 -timeout=10 -seed="${FUZZ_SEED:-0}" \
        >"$WORK/$t.log" 2>&1); then
    echo ok >"$WORK/$t.result"
  else
    echo "FAILED (see $WORK/$t.log)" >"$WORK/$t.result"
  fi
}
running=0
for t in $TARGETS; do
  if [ "$running" -ge "$JOBS" ]; then
    wait -n
    running=$((running - 1))
  fi
  run_target "$t" &
  running=$((running + 1))
done
wait
status=0
printf '%-10s %12s %8s %8s %s\n' target executions cov corpus result
for t in $TARGETS; do
  log="$WORK/$t.log"
  result=$(cat "$WORK/$t.result")
  [ "$result" = ok ] || status=1
  execs=$( (grep -o 'stat::number_of_executed_units: [0-9]*' "$log" || true) | awk '{print $2}' | tail -1)
  cov=$( (grep -o 'cov: [0-9]*' "$log" || true) | tail -1 | awk '{print $2}')
  printf '%-10s %12s %8s %8s %s\n' "$t" "${execs:-?}" "${cov:-?}" "$(ls "$WORK/$t" | wc -l)" "$result"
  [ "$result" = ok ] || tail -20 "$log"
done
[ $status -eq 0 ] && rm -rf "$WORK"
exit $status
