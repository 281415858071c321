#!/usr/bin/env bash
# Runs the TSan harness with every process's reports going to files in a fresh directory
# (the cluster's processes inherit TSAN_OPTIONS); fails when the harness fails or when any
# process of the run wrote a report.
set -u
harness=$1
tessera=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
TSAN_OPTIONS="log_path=$dir/report second_deadlock_stack=1 history_size=4" \
  timeout 600 "$harness" "$tessera"
rc=$?
reports=$(ls "$dir" 2>/dev/null | wc -l)
if [ "$reports" -gt 0 ]; then
  for f in "$dir"/*; do echo "== $f"; cat "$f"; done
  echo "tsan: $reports process(es) reported data races or other errors"
  exit 1
fi
if [ $rc -ne 0 ]; then
  echo "tsan: the harness failed (exit $rc)"
  exit 1
fi
echo "tsan: no reports from the client, the scheduler or the workers"
