#!/bin/sh
# Command of the compose `coordinator` service (compose.yaml): runs the rollout command
# given as arguments, e.g.
#   coordinator.sh pacup rollout run /plans/two-host-incompatible.json --preflight-wait 60s --json
# and exits with ITS exit code (0 done, 6 paused, 7 rolled back, ...: docs/reference.md), so
# `docker-compose up --exit-code-from coordinator` returns the rollout's exit code.
#
# It starts the command ROLLOUT_DELAY seconds (default 3) after its own start, so that the
# load service (started just before) is in full swing when the rollout begins.
# The rollout's JSON events go to stdout unchanged (one object per line). Afterwards the
# exit code is left in /results/rollout.rc for the `load` service, and, unless the rollout
# paused (6: an operator is expected to `rollout resume`), the script waits (at most
# LOAD_REPORT_WAIT seconds) for the load service's final report /results/load.json and
# copies it to stderr: `up --exit-code-from` stops every container as soon as this one
# exits, so the load's final counts would otherwise be cut off.
# POSIX sh (busybox or dash).
results="${RESULTS_DIR:-/results}"
wait_s="${LOAD_REPORT_WAIT:-120}"
delay="${ROLLOUT_DELAY:-3}"
mkdir -p "$results" 2>/dev/null
# Leftovers of an earlier `up` on the same volume are not this run's.
rm -f "$results/rollout.rc" "$results/load.json" 2>/dev/null

if [ "$#" -eq 0 ]; then
    echo "coordinator.sh: no command given" >&2
    exit 2
fi
sleep "$delay"
# In the background so that a SIGTERM (docker stop) reaches it at once.
"$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM INT
wait "$child"
rc=$?
while kill -0 "$child" 2>/dev/null; do # woken by a signal: wait for the real status
    wait "$child"
    rc=$?
done
trap - TERM INT
echo "$rc" > "$results/rollout.rc.tmp" && mv "$results/rollout.rc.tmp" "$results/rollout.rc"
echo "coordinator: rollout command exited $rc" >&2

if [ "$rc" -ne 6 ]; then
    i=0
    trap 'exit "$rc"' TERM INT
    while [ ! -s "$results/load.json" ] && [ "$i" -lt "$wait_s" ]; do
        sleep 1
        i=$((i + 1))
    done
    if [ -s "$results/load.json" ]; then
        echo "coordinator: load report: $(cat "$results/load.json")" >&2
    else
        echo "coordinator: no load report within ${wait_s}s (is the load service running?)" >&2
    fi
fi
exit "$rc"
