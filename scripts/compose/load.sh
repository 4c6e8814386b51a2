#!/bin/sh
# Command of the compose `load` service (compose.yaml): batch jobs and client
# transactions against the PAC for as long as its rollout is under way, then the final
# counts.
#
# Load runs in chunks of LOAD_CHUNK seconds (`pacup jobs submit --rate --duration` beside
# `pacup clients run --rate --duration --json`, each chunk's counts added up) until the
# rollout reaches an end state (done, aborted, failed, rolled_back), or the coordinator
# exited with anything but 6 (/results/rollout.rc: e.g. a refused preflight), or
# LOAD_MAX seconds passed. A paused rollout (6) keeps the load going: an operator is
# expected to `pacup rollout resume`.
#
# Then it waits (at most DRAIN_WAIT seconds) for every submitted job to complete, prints
# `pacup jobs stats --json` and one summary line
#   LOAD RESULT {"result":"ok"|"lost_work", "jobs":{...}, "clients":{...}, ...}
# writes the same JSON to /results/load.json, and idles until stopped (exiting would make
# `docker-compose up --exit-code-from coordinator` stop everything before the
# coordinator's end).
#
# Environment: PAC (MyPAC), JOB_RATE (20/s), CLIENT_RATE (20/s), LOAD_CHUNK (5),
# LOAD_MAX (600), DRAIN_WAIT (60), RESULTS_DIR (/results), PACUP_PSOR.
# POSIX sh (busybox or dash).
pac="${PAC:-MyPAC}"
job_rate="${JOB_RATE:-20/s}"
client_rate="${CLIENT_RATE:-20/s}"
chunk="${LOAD_CHUNK:-5}"
load_max="${LOAD_MAX:-600}"
drain_wait="${DRAIN_WAIT:-60}"
results="${RESULTS_DIR:-/results}"
tmp="$(mktemp -d 2>/dev/null || echo /tmp/load.$$)"
mkdir -p "$tmp" "$results"
rm -f "$results/load.json" "$results/rollout.rc" 2>/dev/null

stop=0 jpid="" cpid=""
trap 'stop=1; kill -TERM $jpid $cpid 2>/dev/null' TERM INT

say() { echo "load: $*" >&2; }
# num KEY FILE: the first number after "KEY": in a one-line JSON document (0 if none).
num() {
    v="$(sed -n "s/.*\"$1\":\([0-9][0-9]*\).*/\1/p" "$2" 2>/dev/null | head -n 1)"
    echo "${v:-0}"
}
rollout_state() {
    # The regions array of `rollout status` has "state" fields of its own: drop it first.
    pacup -q --json rollout status "$pac" 2>/dev/null |
        sed 's/"regions":\[[^]]*\]//' |
        sed -n 's/.*"state":"\([a-z_]*\)".*/\1/p'
}

start="$(date +%s)"
jobs_submitted=0 sent=0 ok=0 failed=0 retried=0 errors=0 chunks=0
state="" why=""
say "starting: jobs $job_rate, clients $client_rate, chunks of ${chunk}s, at most ${load_max}s"
while :; do
    elapsed=$(($(date +%s) - start))
    if [ "$stop" -eq 1 ]; then why="stopped by a signal"; break; fi
    if [ "$elapsed" -ge "$load_max" ]; then why="LOAD_MAX (${load_max}s) reached"; break; fi
    pacup -q --json jobs submit "$pac" --rate "$job_rate" --duration "${chunk}s" \
        >"$tmp/jobs.out" 2>"$tmp/jobs.err" &
    jpid=$!
    pacup -q --json clients run "$pac" --rate "$client_rate" --duration "${chunk}s" \
        >"$tmp/clients.out" 2>"$tmp/clients.err" &
    cpid=$!
    wait "$jpid"
    jrc=$?
    while kill -0 "$jpid" 2>/dev/null; do wait "$jpid"; jrc=$?; done
    wait "$cpid"
    while kill -0 "$cpid" 2>/dev/null; do wait "$cpid"; done
    chunks=$((chunks + 1))
    if [ "$jrc" -ne 0 ] || ! grep -q '"submitted"' "$tmp/jobs.out"; then
        errors=$((errors + 1))
        say "jobs submit failed (exit $jrc): $(cat "$tmp/jobs.err")"
    fi
    jobs_submitted=$((jobs_submitted + $(num submitted "$tmp/jobs.out")))
    if grep -q '"sent"' "$tmp/clients.out"; then
        sent=$((sent + $(num sent "$tmp/clients.out")))
        ok=$((ok + $(num ok "$tmp/clients.out")))
        failed=$((failed + $(num failed "$tmp/clients.out")))
        retried=$((retried + $(num retried "$tmp/clients.out")))
    else
        errors=$((errors + 1))
        say "clients run printed no report: $(cat "$tmp/clients.err")"
    fi
    state="$(rollout_state)"
    say "t=$(($(date +%s) - start))s jobs submitted $jobs_submitted; clients sent $sent, ok $ok, failed $failed; rollout ${state:-not started}"
    case "$state" in
        done | aborted | failed | rolled_back) why="rollout $state"; break ;;
    esac
    if [ -s "$results/rollout.rc" ]; then
        rc="$(cat "$results/rollout.rc")"
        if [ "$rc" != 6 ]; then why="coordinator exited $rc"; break; fi
    fi
done
load_s=$(($(date +%s) - start))
if [ "$stop" -eq 1 ]; then
    say "stopped by a signal after ${load_s}s, before a final report"
    exit 143
fi
say "load stopped after ${load_s}s: $why; waiting up to ${drain_wait}s for pending jobs"

i=0
while :; do
    pacup -q --json jobs stats "$pac" >"$tmp/stats.json" 2>"$tmp/stats.err"
    pending="$(num pending "$tmp/stats.json")"
    if grep -q '"submitted"' "$tmp/stats.json" && [ "$pending" -eq 0 ]; then break; fi
    if [ "$i" -ge "$drain_wait" ]; then break; fi
    i=$((i + 1))
    sleep 1
done
cat "$tmp/stats.json"
submitted="$(num submitted "$tmp/stats.json")"
completed="$(num completed "$tmp/stats.json")"
pending="$(num pending "$tmp/stats.json")"
duplicates="$(num duplicates "$tmp/stats.json")"
tx="$(num transactions "$tmp/stats.json")"
tx_dup="$(num transaction_duplicates "$tmp/stats.json")"
lost=$((submitted - completed))
result=ok
if ! grep -q '"submitted"' "$tmp/stats.json" || [ "$lost" -ne 0 ] || [ "$duplicates" -ne 0 ] ||
    [ "$failed" -ne 0 ] || [ "$errors" -ne 0 ]; then
    result=lost_work
fi
report="{\"result\":\"$result\",\"pac\":\"$pac\",\"stopped\":\"$why\",\"rollout_state\":\"$state\",\"load_seconds\":$load_s,\
\"jobs\":{\"submitted\":$submitted,\"completed\":$completed,\"pending\":$pending,\"lost\":$lost,\"duplicates\":$duplicates,\"submitted_by_load\":$jobs_submitted},\
\"clients\":{\"sent\":$sent,\"ok\":$ok,\"failed\":$failed,\"retried\":$retried},\
\"transactions\":{\"recorded\":$tx,\"repeated\":$tx_dup},\"errors\":$errors}"
say "jobs: $submitted submitted, $completed completed, $lost lost, $duplicates duplicates; clients: $sent sent, $ok ok, $failed failed ($retried retried); $errors load errors: $result"
echo "LOAD RESULT $report"
printf '%s\n' "$report" >"$results/load.json.tmp" && mv "$results/load.json.tmp" "$results/load.json"
rm -rf "$tmp"

# Idle until stopped (see above).
trap 'exit 0' TERM INT
while :; do
    sleep 1 &
    wait $!
done
