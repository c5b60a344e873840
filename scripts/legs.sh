#!/usr/bin/env bash
# Runs `make` targets one after the other, timing each, and prints how long
# each took at the end, also when one fails (then it stops there and fails).
#   scripts/legs.sh TIMES_FILE TARGET...      (make test runs this)
set -uo pipefail
times=$1
shift
mkdir -p "$(dirname "$times")"
: >"$times"
status=0
for target in "$@"; do
  start=$(date +%s)
  make --no-print-directory "$target"
  status=$?
  echo "$target $(($(date +%s) - start)) $([ $status = 0 ] && echo passed || echo FAILED)" >>"$times"
  [ $status = 0 ] || break
done
echo
echo "make test, per leg (seconds; $(nproc) cores, $(date -u +%Y-%m-%d)):"
awk '{ printf "  %-14s %6d  %s\n", $1, $2, $3; total += $2 }
     END { printf "  %-14s %6d  (%.1f min)\n", "total", total, total / 60 }' "$times"
exit $status
