#!/usr/bin/env bash
# Runs every benchmark of this folder with --quick (tiny sizes, seconds each), as CI does, and fails
# if any of them fails or does not end with its `ratio=…` line. PYTHON picks the interpreter
# (default: python3 on PATH; it needs the project installed, as the README's test line does).
#
# QUICK_JOBS benchmarks run at once (default 2). Their figures mean nothing side by side; what CI
# checks is that each still runs to its ratio line, and most of a quick run is waiting for its own
# database and servers to start, so two at a time take about a third less of CI's minutes. Each
# benchmark's output (its log, then its figures) is printed whole when it ends, the longest started
# first.
#
#   bench/run_quick.sh
#   PYTHON=.venv/bin/python QUICK_JOBS=1 bench/run_quick.sh
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
JOBS=${QUICK_JOBS:-2}
work=$(mktemp -d)

declare -A name_of=() started_at=()
# A SIGTERM to this script reaches the running benchmarks, which then stop their servers and databases.
stop() {
    local pid
    for pid in "${!name_of[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    wait
    rm -rf "$work"
    exit 143
}
trap stop TERM HUP INT

failed=()
finish() {  # $1: a benchmark's pid that has ended, $2: its exit status
    local name=${name_of[$1]} status=$2 last
    echo "== bench/$name --quick"
    cat "$work/$name.err" "$work/$name.out"
    echo "(bench/$name: $((SECONDS - started_at[$1])) s)"
    last=$(tail -n 1 "$work/$name.out")
    if [ "$status" -ne 0 ]; then
        echo "FAILED: bench/$name exited with $status"
        failed+=("$name")
    elif [[ "$last" != ratio=* ]]; then
        echo "FAILED: bench/$name did not end with its ratio line"
        failed+=("$name")
    fi
    unset "name_of[$1]" "started_at[$1]"
}

# The longest first (seconds each in a CI run), so the short ones fill in beside them.
order=(prefecture sync_offline_month replicas household_create payments import_responsiveness sync_push
    sync_first_pull list_import resident_login_timing search_by_id eligibility_check sync_concurrent_push
    history_import)
benches=()
for name in "${order[@]}"; do [ -f "bench/$name.py" ] && benches+=("$name.py"); done
for bench in bench/*.py; do
    name=$(basename "$bench")
    # failover.py needs a Patroni cluster (root, fixed ports, minutes): run by hand, never in CI.
    case "$name" in _* | baseline_* | failover.py) continue ;; esac
    [[ " ${benches[*]} " == *" $name "* ]] || benches+=("$name")
done

for name in "${benches[@]}"; do
    while [ "${#name_of[@]}" -ge "$JOBS" ]; do
        wait -n -p ended
        finish "$ended" "$?"
    done
    "$PYTHON" "bench/$name" --quick >"$work/$name.out" 2>"$work/$name.err" &
    name_of[$!]=$name
    started_at[$!]=$SECONDS
done
while [ "${#name_of[@]}" -gt 0 ]; do
    wait -n -p ended
    finish "$ended" "$?"
done
rm -rf "$work"

if [ "${#failed[@]}" -ne 0 ]; then
    echo "failed: ${failed[*]}"
    exit 1
fi
echo "all benchmarks ran (quick)"
