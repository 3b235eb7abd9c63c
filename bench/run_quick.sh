#!/usr/bin/env bash
# Runs every benchmark of this folder with --quick (tiny sizes, seconds each), as CI does, and fails
# if any of them fails or does not end with its `ratio=…` line. PYTHON picks the interpreter
# (default: python3 on PATH; it needs the project installed, as the README's test line does).
#
#   bench/run_quick.sh
#   PYTHON=.venv/bin/python bench/run_quick.sh
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

child=""
# A SIGTERM to this script reaches the running benchmark, which then stops its servers and database.
trap 'if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null; wait "$child"; fi; exit 143' TERM HUP

failed=()
for bench in bench/*.py; do
    name=$(basename "$bench")
    # failover.py needs a Patroni cluster (root, fixed ports, minutes): run by hand, never in CI.
    case "$name" in _* | baseline_* | failover.py) continue ;; esac
    echo "== $bench --quick"
    started=$SECONDS
    out=$(mktemp)
    "$PYTHON" "$bench" --quick >"$out" &
    child=$!
    wait "$child"
    status=$?
    child=""
    cat "$out"
    echo "($bench: $((SECONDS - started)) s)"
    last=$(tail -n 1 "$out")
    rm -f "$out"
    if [ "$status" -ne 0 ]; then
        echo "FAILED: $bench exited with $status"
        failed+=("$name")
    elif [[ "$last" != ratio=* ]]; then
        echo "FAILED: $bench did not end with its ratio line"
        failed+=("$name")
    fi
done

if [ "${#failed[@]}" -ne 0 ]; then
    echo "failed: ${failed[*]}"
    exit 1
fi
echo "all benchmarks ran (quick)"
