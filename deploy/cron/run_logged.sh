#!/usr/bin/env bash
# One scheduled pipeline run for cron: appends the run's output to LOG_FILE and prints one line
# (which cron mails to MAILTO) only when the run needs a person: exit 1 (failure), 2 (bad
# config), 3 (the data gate stopped the run), or a crash. Exit 4 (another run holds the lock)
# and 130 / 143 (stopped on purpose by SIGINT / SIGTERM, as systemd counts a stop) are a line in
# the log only. Exits with the run's own status.
# usage: run_logged.sh LOG_FILE [run_local.py options...]
set -uo pipefail
if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
  echo "usage: $0 LOG_FILE [run_local.py options...]" >&2
  exit 2
fi
log=$1
shift
repo=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$(dirname "$log")" || exit 1
output=$(mktemp) || exit 1
trap 'rm -f "$output"' EXIT
"$repo/scripts/run_pipeline.sh" "$@" >"$output" 2>&1
status=$?
cat "$output" >>"$log"
case $status in
  0) ;;
  4 | 130 | 143) "$repo/deploy/describe_exit.sh" "$status" >>"$log" ;;
  *)
    error=$(grep '^error: ' "$output" | tail -n 1)
    "$repo/deploy/describe_exit.sh" "$status" "${error:+$error; }log $log"
    ;;
esac
exit "$status"
