#!/usr/bin/env bash
# The offline compose harness (docs/compose.md): builds the images without any registry,
# then rehearses the rollout of compose.yaml in four scenarios, each in a fresh compose
# project that is removed afterwards:
#
#   a  compose up: `docker-compose up --exit-code-from coordinator` exits 0, nothing lost
#   b  host2 killed during its wave: the rollout pauses (exit 6); host2's agent is started
#      again; `pacup rollout resume` exits 0; nothing lost
#   c  host1 cut off the network for longer than the heartbeat TTL at its wave's health
#      gate: the coordinator does not go on without it (waits, or pauses with 6); after
#      reconnection the rollout (resumed if it paused) finishes with 0; nothing lost
#   d  the same cut while host1's REGION1 is being drained: the coordinator does not
#      take the unseen regions for stopped; it pauses (6) and resume finishes with 0
#   e  the production plan fixtures/plans/enterprise-server.json, unchanged: its
#      `ssh {host} casstop/casstart/...` templates reach the host containers through
#      `docker exec` (scripts/compose/bin/ssh); it holds before each finalising step
#      (8), and `rollout resume` goes on (8 at the next hold) to the end with 0; every region was stopped and started through
#      the vendor-syntax tools on its own host; nothing lost
#
# "Nothing lost": the load service's final counts show every submitted job completed,
# no duplicate job run and no failed client transaction.
#
# Usage: scripts/compose-harness.sh [--no-build | --build-only] [a] [b] [c] [d] [e]
#        (default: build the images, then scenarios a, b, c, d and e)
# Prints one summary line per scenario; exits 0 only if every scenario passed.
#
# Images: pacup:local (this machine's target/release/pacup and caspac, its redis-server
# and redis-cli, the shared libraries they need, busybox for a shell, the machine's
# static docker CLI for scenario e's ssh stand-in) made with
# `docker import` from a root filesystem directory; the same image is tagged
# pacup-redis:local and used as REDIS_IMAGE. Set PACUP_IMAGE / REDIS_IMAGE to use other
# images (with --no-build, e.g. after `docker build -t pacup:local .` and a pulled
# redis:7.2).
#
# Environment: COMPOSE_HARNESS_OUT (logs; default target/compose-harness),
# COMPOSE_HARNESS_PREFIX (compose project prefix; default pacup-h, projects <prefix>1..5),
# HARNESS_PARTITION_S (length of the cut in c and d; default 8 s, 4 x the 2 s heartbeat TTL).
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${COMPOSE_HARNESS_OUT:-$ROOT/target/compose-harness}"
PREFIX="${COMPOSE_HARNESS_PREFIX:-pacup-h}"
PARTITION_S="${HARNESS_PARTITION_S:-8}"
PAC=MyPAC
COMPOSE_YAML="$ROOT/compose.yaml"

tag_redis=0
if [ -z "${REDIS_IMAGE:-}" ]; then
    REDIS_IMAGE=pacup-redis:local
    tag_redis=1
fi
PACUP_IMAGE="${PACUP_IMAGE:-pacup:local}"
export PACUP_IMAGE REDIS_IMAGE
# The harness's own settings, whatever the caller's shell has.
unset COMPOSE_FILE COMPOSE_PROJECT_NAME LOAD_MAX LOAD_JOB_RATE LOAD_CLIENT_RATE
export COMPOSE_HTTP_TIMEOUT=120

build=1
build_only=0
scenarios=()
for arg in "$@"; do
    case "$arg" in
        --no-build) build=0 ;;
        --build-only) build_only=1 ;;
        a | b | c | d | e) scenarios+=("$arg") ;;
        -h | --help)
            sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "compose-harness: unknown argument '$arg' (expected --no-build, --build-only, a, b, c, d, e)" >&2
            exit 2
            ;;
    esac
done
# e is opt-in until it has run against the current fixture (its host checks ask for 20 GiB).
[ ${#scenarios[@]} -gt 0 ] || scenarios=(a b c d e)

mkdir -p "$OUT"
T0=$(date +%s)
log() { echo "compose-harness: $*"; }
now() { date +%s; }
elapsed() { echo $(($(now) - $1)); }

# ---------------------------------------------------------------------------------------
# Cleanup: every project this run touched is taken down (containers, networks, volumes),
# however the script ends.
PROJECTS=()
BG_PIDS=()
cleanup() {
    local p pid
    for pid in "${BG_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    for p in "${PROJECTS[@]}"; do
        timeout 120 docker-compose -f "$COMPOSE_YAML" -p "$p" down -v --remove-orphans -t 5 >>"$OUT/cleanup.log" 2>&1
    done
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

dc() { timeout 180 docker-compose -f "$COMPOSE_YAML" -p "$PROJECT" "$@"; }
fresh_project() {
    PROJECT="$1"
    PROJECTS+=("$PROJECT")
    timeout 120 docker-compose -f "$COMPOSE_YAML" -p "$PROJECT" down -v --remove-orphans -t 5 >>"$OUT/cleanup.log" 2>&1
}
down_project() { timeout 120 docker-compose -f "$COMPOSE_YAML" -p "$PROJECT" down -v --remove-orphans -t 10 >>"$OUT/cleanup.log" 2>&1; }
cid() { timeout 60 docker-compose -f "$COMPOSE_YAML" -p "$PROJECT" ps -q "$1" 2>/dev/null | head -n 1; }

# num KEY TEXT: the first number after "KEY": in a JSON text (empty if none).
num() { printf '%s\n' "$2" | sed -n "s/.*\"$1\":\([0-9][0-9]*\).*/\1/p" | head -n 1; }
str() { printf '%s\n' "$2" | sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" | head -n 1; }

# The load service's final report (JSON) once it printed it, waiting at most $1 seconds.
load_report() {
    local until=$(($(now) + $1)) c line
    c="$(cid load)"
    while :; do
        line="$(docker logs "$c" 2>&1 | grep '^LOAD RESULT ' | tail -n 1)"
        if [ -n "$line" ]; then
            echo "${line#LOAD RESULT }"
            return 0
        fi
        [ "$(now)" -lt "$until" ] || return 1
        sleep 2
    done
}

# Checks a load report; prints the counts; returns non-zero if anything was lost.
LOAD_SUMMARY=""
check_load() {
    local r="$1" sub comp lost dup sent failed res
    sub="$(num submitted "$r")" comp="$(num completed "$r")" lost="$(num lost "$r")"
    dup="$(num duplicates "$r")" sent="$(num sent "$r")" failed="$(num failed "$r")"
    res="$(str result "$r")"
    LOAD_SUMMARY="jobs $comp/$sub completed, $dup duplicates; clients $sent sent, $failed failed"
    [ "$res" = ok ] && [ -n "$sub" ] && [ "$sub" -gt 0 ] && [ "$sub" = "$comp" ] &&
        [ "$lost" = 0 ] && [ "$dup" = 0 ] && [ "$failed" = 0 ] && [ -n "$sent" ] && [ "$sent" -gt 0 ]
}

# pac status as JSON, asked from inside a running container of the project.
pac_status() { timeout 20 docker exec "$1" pacup -q --json pac status "$PAC" 2>/dev/null; }
# Whether `pac status` (asked in CONTAINER) shows HOST alive. Parsed as JSON: a host's
# object nests others (its checks), so no line-based split finds its fields together.
host_alive() { # host_alive CONTAINER HOST
    pac_status "$1" | python3 -c '
import json, sys
hosts = json.load(sys.stdin).get("hosts", [])
sys.exit(0 if any(h.get("name") == sys.argv[1] and h.get("alive") for h in hosts) else 1)
' "$2" 2>/dev/null
}

# Follows a container's log into a file (background); the pid is remembered for cleanup.
follow() {
    docker logs -f "$1" >"$2" 2>&1 &
    BG_PIDS+=($!)
}

# Waits until FILE has a line matching the extended regex, at most $3 seconds, polling
# every 50ms. Returns non-zero on timeout or when container $4 has exited meanwhile.
wait_line() {
    local file="$1" re="$2" until=$(($(now) + $3)) c="$4" i=0
    while ! grep -Eq "$re" "$file" 2>/dev/null; do
        [ "$(now)" -lt "$until" ] || return 1
        i=$((i + 1))
        if [ $((i % 20)) -eq 0 ] && [ "$(docker inspect -f '{{.State.Running}}' "$c" 2>/dev/null)" != true ]; then
            grep -Eq "$re" "$file" 2>/dev/null
            return
        fi
        sleep 0.05
    done
}

# Exit code of a container once it exits, waiting at most $2 seconds ("timeout" if not).
wait_exit() {
    local rc
    if rc="$(timeout "$2" docker wait "$1" 2>/dev/null)"; then echo "$rc"; else echo timeout; fi
}

# Events of the coordinator as compact lines: "seq action host region status".
event_lines() {
    grep '^{"ts"' "$1" | sed -E 's/.*"seq":([0-9]+).*"action":"([a-z_]+)","host":("[^"]*"|null),"region":("[^"]*"|null),"status":"([a-z]+)".*/\1 \2 \3 \4 \5/' | tr -d '"'
}

show_tail() { # show_tail FILE...
    local f
    for f in "$@"; do
        [ -s "$f" ] || continue
        echo "---- last lines of $f"
        tail -n 25 "$f" | cut -c1-300
    done
}

RESULTS=()
FAILED=0
result() { # result PASS|FAIL "line"
    RESULTS+=("$1 $2")
    [ "$1" = PASS ] || FAILED=1
    log "$1 $2"
}

# ---------------------------------------------------------------------------------------
# Images, without any registry.
sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
    log "installing $* (apt-get)"
    sudo_if_needed apt-get update -qq >/dev/null 2>&1
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

build_images() {
    local t b rootfs lib a hash old new
    t=$(now)
    log "building target/release/pacup and caspac (cargo build --release --locked)"
    (cd "$ROOT" && cargo build --release --locked -q) || { log "cargo build failed"; return 1; }
    [ -x /bin/busybox ] || apt_install busybox-static
    command -v redis-server >/dev/null 2>&1 || apt_install redis-server
    command -v redis-cli >/dev/null 2>&1 || apt_install redis-tools
    [ -x /bin/busybox ] && command -v redis-server >/dev/null && command -v redis-cli >/dev/null ||
        { log "busybox, redis-server or redis-cli is missing"; return 1; }

    rootfs="$OUT/rootfs"
    rm -rf "$rootfs"
    mkdir -p "$rootfs"/{bin,usr/local/bin,etc,tmp,data,results,root,lib64}
    chmod 1777 "$rootfs/tmp"
    install -m 0755 "$ROOT/target/release/pacup" "$ROOT/target/release/caspac" "$rootfs/usr/local/bin/"
    install -m 0755 "$ROOT/target/release/casstart" "$ROOT/target/release/casstop" \
        "$ROOT/target/release/casstate" "$rootfs/usr/local/bin/"
    # Debian's redis-server is a symlink to redis-check-rdb, which acts on the name it was
    # started by: copy the file under the name redis-server.
    install -m 0755 "$(readlink -f "$(command -v redis-server)")" "$rootfs/usr/local/bin/redis-server"
    install -m 0755 "$(readlink -f "$(command -v redis-cli)")" "$rootfs/usr/local/bin/redis-cli"
    install -m 0755 /bin/busybox "$rootfs/bin/busybox"
    # Scenario e's ssh stand-in runs `docker exec` from inside a container: the docker CLI
    # is a static binary, so the file alone is enough.
    b="$(command -v docker)"
    if [ -n "$b" ] && ! ldd "$b" >/dev/null 2>&1; then
        install -m 0755 "$(readlink -f "$b")" "$rootfs/usr/local/bin/docker"
    else
        log "no static docker CLI on this machine: scenario e cannot run"
    fi
    for a in $(/bin/busybox --list); do
        [ -e "$rootfs/bin/$a" ] || ln -s busybox "$rootfs/bin/$a"
    done
    # Shared libraries and the dynamic loader, at the paths ldd names.
    for b in "$rootfs"/usr/local/bin/*; do
        ldd "$b" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'
    done | sort -u | while read -r lib; do
        mkdir -p "$rootfs$(dirname "$lib")"
        cp -L "$lib" "$rootfs$lib"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$rootfs/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
    printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
    : >"$rootfs/etc/hosts"
    : >"$rootfs/etc/resolv.conf"
    tar -C "$rootfs" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$OUT/rootfs.tar" . ||
        { log "tar of the root filesystem failed"; return 1; }
    hash="$(sha256sum "$OUT/rootfs.tar" | cut -c1-16)"
    old="$(docker image inspect -f '{{.Id}}' "$PACUP_IMAGE" 2>/dev/null)"
    if [ -n "$old" ] && [ "$(docker image inspect -f '{{index .Config.Labels "org.pacup.rootfs"}}' "$PACUP_IMAGE" 2>/dev/null)" = "$hash" ]; then
        log "image $PACUP_IMAGE is up to date (rootfs $hash)"
    else
        docker import \
            --change "LABEL org.pacup.rootfs=$hash" \
            --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
            --change 'WORKDIR /data' \
            --change 'CMD ["pacup", "--help"]' \
            "$OUT/rootfs.tar" "$PACUP_IMAGE" >/dev/null || { log "docker import failed"; return 1; }
        new="$(docker image inspect -f '{{.Id}}' "$PACUP_IMAGE")"
        log "imported $PACUP_IMAGE (rootfs $hash, $(du -m "$OUT/rootfs.tar" | cut -f1) MB)"
        [ -z "$old" ] || [ "$old" = "$new" ] || docker rmi "$old" >/dev/null 2>&1 || true
    fi
    if [ "$tag_redis" = 1 ]; then
        docker tag "$PACUP_IMAGE" "$REDIS_IMAGE" || return 1
    fi
    rm -rf "$rootfs" "$OUT/rootfs.tar"
    # Smoke test: the binaries run in the image.
    docker run --rm --network none "$PACUP_IMAGE" pacup --version >/dev/null &&
        docker run --rm --network none "$REDIS_IMAGE" redis-server --version >/dev/null ||
        { log "the image's binaries do not run"; return 1; }
    log "images $PACUP_IMAGE and $REDIS_IMAGE ready in $(elapsed "$t")s"
}

# ---------------------------------------------------------------------------------------
# a: docker-compose up --exit-code-from coordinator
scenario_a() {
    local t d rc report why="" took
    t=$(now)
    d="$OUT/a"
    mkdir -p "$d"
    fresh_project "${PREFIX}1"
    log "a: docker-compose -p $PROJECT up --exit-code-from coordinator"
    timeout 420 docker-compose -f "$COMPOSE_YAML" -p "$PROJECT" up --no-color --exit-code-from coordinator >"$d/up.log" 2>&1
    rc=$?
    dc logs --no-color coordinator >"$d/coordinator.log" 2>&1
    dc logs --no-color load >"$d/load.log" 2>&1
    report="$(grep -o 'LOAD RESULT .*' "$d/load.log" | tail -n 1 | sed 's/^LOAD RESULT //')"
    [ "$rc" = 0 ] || why="up exited $rc (expected the rollout's 0)"
    if [ -z "$report" ]; then
        why="${why:+$why; }no load report"
    elif ! check_load "$report"; then
        why="${why:+$why; }work lost: $report"
    fi
    took="$(grep '"action":"done"' "$d/coordinator.log" | tail -n 1 | sed -n 's/.*"elapsed_ms":\([0-9]*\).*/\1/p')"
    if [ -z "$why" ]; then
        result PASS "a (compose up): exit 0, rollout done in ${took:-?}ms; $LOAD_SUMMARY; $(elapsed "$t")s"
    else
        result FAIL "a (compose up): $why; $(elapsed "$t")s (logs: $d)"
        show_tail "$d/up.log"
    fi
    down_project
}

# Starts the stack detached and waits until the coordinator container exists.
up_detached() {
    local d="$1"
    timeout 300 docker-compose -f "$COMPOSE_YAML" -p "$PROJECT" up -d >"$d/up.log" 2>&1 || {
        echo "docker-compose up -d failed"
        return 1
    }
    [ -n "$(cid coordinator)" ] || {
        echo "no coordinator container"
        return 1
    }
}

# Runs `pacup rollout resume` in a one-off coordinator container; prints its exit code.
resume() {
    local d="$1" rc
    timeout 300 docker-compose -f "$COMPOSE_YAML" -p "$PROJECT" run --rm -T --no-deps coordinator \
        pacup --json rollout resume "$PAC" >"$d/resume.log" 2>"$d/resume.err"
    rc=$?
    echo "$rc"
}

# ---------------------------------------------------------------------------------------
# b: host2 killed during its wave
scenario_b() {
    local t d why="" coord host1 host2 rc="" rc2="" trigger="" i kill_seq
    t=$(now)
    d="$OUT/b"
    mkdir -p "$d"
    fresh_project "${PREFIX}2"
    log "b: host2 killed during its wave (project $PROJECT)"
    if ! why="$(up_detached "$d")"; then
        result FAIL "b (host2 killed): $why (logs: $d)"
        show_tail "$d/up.log"
        down_project
        return
    fi
    coord="$(cid coordinator)" host1="$(cid host1)" host2="$(cid host2)"
    follow "$coord" "$d/coordinator.log"
    # The first event of host2's wave (listener_off REGION2 started): kill at once.
    if ! wait_line "$d/coordinator.log" '"host":"host2"' 180 "$coord"; then
        why="no event for host2 within 180s"
    else
        docker kill -s KILL "$host2" >/dev/null
        kill_seq="$(grep -c '^{"ts"' "$d/coordinator.log")"
        trigger="$(event_lines "$d/coordinator.log" | sed -n "${kill_seq}p" | awk '{print $2, ($4 == "null" ? "" : $4), $5}' | tr -s ' ')"
        log "b: killed host2; the coordinator was at: $trigger"
        rc="$(wait_exit "$coord" 300)"
        log "b: rollout exited $rc"
        if [ "$rc" != 6 ]; then
            why="rollout exited $rc (expected 6, paused)"
        else
            dc start host2 >>"$d/up.log" 2>&1
            i=0
            until host_alive "$host1" host2; do
                i=$((i + 1))
                [ "$i" -lt 60 ] || break
                sleep 1
            done
            if ! host_alive "$host1" host2; then
                why="host2's agent did not come back within 60s"
                timeout 20 docker exec "$host1" pacup --json pac status "$PAC" >"$d/pac-status.json" 2>&1
                log "b: pac status (exit $?) in $d/pac-status.json"
            else
                log "b: host2's agent is back; rollout resume"
                rc2="$(resume "$d")"
                log "b: rollout resume exited $rc2"
                [ "$rc2" = 0 ] || why="rollout resume exited $rc2 (expected 0)"
            fi
        fi
    fi
    finish_scenario b "host2 killed at ${trigger:-?}" "rollout exit ${rc:-none}${rc2:+, resume $rc2}" \
        "$why" "$t" "$d" "$host1"
}

# ---------------------------------------------------------------------------------------
# c and d: host1 cut off the network for longer than the heartbeat TTL during its wave.
#   c: at wave 1's health gate (host1's regions just started at 2.0.0): the coordinator
#      needs host1 to be seen healthy before it flips the new store to running.
#   d: while host1's REGION1 is being drained (a client holds a connection to it, so the
#      drain lasts): the coordinator must neither drain nor stop a region it cannot see.
cut_scenario() {
    local name="$1" what="$2" re="$3" t d why="" coord host1 load net rc="" rc2="" report
    local trigger="" cut_seq after_seq bad state
    t=$(now)
    d="$OUT/$name"
    mkdir -p "$d"
    fresh_project "$4"
    log "$name: host1 cut off the network for ${PARTITION_S}s $what (project $PROJECT)"
    if ! why="$(up_detached "$d")"; then
        result FAIL "$name (host1 cut off $what): $why (logs: $d)"
        show_tail "$d/up.log"
        down_project
        return
    fi
    coord="$(cid coordinator)" host1="$(cid host1)" load="$(cid load)"
    net="$(docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}' "$host1" | awk '{print $1}')"
    if [ "$name" = d ]; then
        # A client that stays connected to REGION1 (the load's balancer lets go of a
        # region as soon as its listener is off): the drain waits for it.
        docker exec -d "$load" sh -c 'sleep 900 | nc host1 7001' || why="cannot start the lingering client"
    fi
    follow "$coord" "$d/coordinator.log"
    if [ -n "$why" ]; then
        :
    elif ! wait_line "$d/coordinator.log" "$re" 180 "$coord"; then
        why="no event matching $re within 180s"
    else
        docker network disconnect "$net" "$host1"
        # Where the coordinator was when the cut took effect (the disconnect takes a while).
        cut_seq="$(grep -c '^{"ts"' "$d/coordinator.log")"
        trigger="$(event_lines "$d/coordinator.log" | sed -n "${cut_seq}p" | awk '{print $2, ($4 == "null" ? "" : $4), $5}' | tr -s ' ')"
        log "$name: host1 disconnected from $net; the coordinator was at: $trigger"
        sleep "$PARTITION_S"
        after_seq="$(grep -c '^{"ts"' "$d/coordinator.log")"
        # What the coordinator did while it could not see host1.
        event_lines "$d/coordinator.log" | awk -v a="$cut_seq" -v b="$after_seq" 'NR > a && NR <= b' >"$d/during-cut.txt"
        docker network connect --alias host1 "$net" "$host1"
        log "$name: host1 reconnected after ${PARTITION_S}s; events meanwhile: $(paste -sd ';' "$d/during-cut.txt")"
        # Done or skipped host1 actions, or a passed health gate, while host1 was cut off
        # mean the coordinator proceeded on a host it could not see.
        bad="$(awk '($3 == "host1" || $2 == "health_gate") && ($5 == "done" || $5 == "skipped")' "$d/during-cut.txt" | paste -sd ';' -)"
        [ -z "$bad" ] || why="the coordinator went on while host1 was cut off: $bad"
        rc="$(wait_exit "$coord" 300)"
        log "$name: rollout exited $rc"
        case "$rc" in
            0) ;;
            6)
                log "$name: rollout paused; rollout resume"
                rc2="$(resume "$d")"
                log "$name: rollout resume exited $rc2"
                [ "$rc2" = 0 ] || why="${why:+$why; }rollout resume exited $rc2 (expected 0)"
                ;;
            *) why="${why:+$why; }rollout exited $rc (expected 0 or 6)" ;;
        esac
    fi
    finish_scenario "$name" "host1 cut off ${PARTITION_S}s at ${trigger:-?}" \
        "rollout exit ${rc:-none}${rc2:+, resume $rc2}" "$why" "$t" "$d" "$host1"
}

# Common end of b, c, d: the load report (when the rollout finished), logs, the result line.
finish_scenario() {
    local name="$1" title="$2" outcome="$3" why="$4" t="$5" d="$6" c="$7" report state blocking
    state="$(timeout 20 docker exec "$c" pacup -q --json rollout status "$PAC" 2>/dev/null | tee "$d/rollout-status.json" |
        sed 's/"regions":\[[^]]*\]//' | sed -n 's/.*"state":"\([a-z_]*\)".*/\1/p')"
    if [ "$state" = "done" ]; then
        report="$(load_report 180)"
        if [ -z "$report" ]; then
            why="${why:+$why; }no load report"
        elif ! check_load "$report"; then
            why="${why:+$why; }work lost: $report"
        fi
    else
        blocking="$(str blocking "$(cat "$d/rollout-status.json")")"
        why="${why:+$why; }rollout ${state:-?}${blocking:+ ($blocking)}"
    fi
    docker logs "$(cid load)" >"$d/load.log" 2>&1
    docker logs "$(cid host1)" >"$d/host1.log" 2>&1
    docker logs "$(cid host2)" >"$d/host2.log" 2>&1
    if [ -z "$why" ]; then
        result PASS "$name ($title): $outcome; $LOAD_SUMMARY; $(elapsed "$t")s"
    else
        result FAIL "$name ($title): $why; $(elapsed "$t")s (logs: $d)"
        show_tail "$d/coordinator.log" "$d/coordinator.err" "$d/resume.log" "$d/resume.err" "$d/load.log"
    fi
    down_project
}

scenario_c() { cut_scenario c "at host1's health gate" '"action":"health_gate"' "${PREFIX}3"; }
scenario_d() { cut_scenario d "while REGION1 drains" '"action":"drain","host":"host1","region":"REGION1","status":"started"' "${PREFIX}4"; }

# ---------------------------------------------------------------------------------------
# e: the production plan, unchanged, with its ssh templates reaching the host containers
scenario_e() {
    local t d why="" host1 load rc="" rc2="" ssh_log missing r i
    t=$(now)
    d="$OUT/e"
    mkdir -p "$d"
    fresh_project "${PREFIX}5"
    log "e: fixtures/plans/enterprise-server.json through docker exec (project $PROJECT)"
    if ! timeout 300 docker-compose -f "$COMPOSE_YAML" -p "$PROJECT" up -d psor host1 host2 load >"$d/up.log" 2>&1; then
        result FAIL "e (production plan): docker-compose up -d failed (logs: $d)"
        show_tail "$d/up.log"
        down_project
        return
    fi
    host1="$(cid host1)" load="$(cid load)"
    # The load's depends_on waits for both hosts to be healthy; give it a moment to be
    # in full swing, as the coordinator service's ROLLOUT_DELAY does.
    sleep 3
    es() { timeout 600 docker-compose -f "$COMPOSE_YAML" -p "$PROJECT" run --rm -T --no-deps \
        -e COMPOSE_PROJECT="$PROJECT" coordinator-es "$@"; }
    es pacup --json rollout run /plans/enterprise-server.json --preflight-wait=60s \
        >"$d/coordinator.log" 2>"$d/coordinator.err"
    rc=$?
    log "e: rollout run exited $rc"
    if [ "$rc" != 8 ]; then
        why="rollout run exited $rc (expected 8, held before finalisation)"
    else
        # The plan holds at each finalising step (hold_finalization): an operator checks
        # the new store and resumes; each resume exits 8 at the next hold, 0 at the end.
        rc2=8 i=0
        while [ "$rc2" = 8 ] && [ "$i" -lt 3 ]; do
            i=$((i + 1))
            es pacup --json rollout resume "$PAC" >>"$d/resume.log" 2>>"$d/resume.err"
            rc2=$?
            log "e: rollout resume #$i exited $rc2"
        done
        [ "$rc2" = 0 ] || why="rollout resume exited $rc2 (expected 8 at each hold, then 0)"
    fi
    # Every region went down and up through the vendor's tools on its own host.
    ssh_log="$(timeout 20 docker exec "$load" cat /results/ssh.log 2>/dev/null)"
    printf '%s\n' "$ssh_log" >"$d/ssh.log"
    missing=""
    # One line per ssh call: the host, then the remote command (the start templates put
    # ES_PAC_MIN_COMP_CHECK=... before casstart), hence "host .*command".
    for r in "host1 .*casstop -rREGION1( |$)" "host1 .*casstop -rREGION1B" "host2 .*casstop -rREGION2" \
        "host1 .*casstart /rREGION1 /s:u" "host1 .*casstart /rREGION1B /s:[uw]" "host2 .*casstart /rREGION2 /s:[uw]" \
        "host1 .*/opt/site/bin/apply-es-patch 2.0.0" "host2 .*/opt/site/bin/apply-es-patch 2.0.0"; do
        grep -Eq "^$r" "$d/ssh.log" || missing="${missing:+$missing; }$r"
    done
    [ -z "$missing" ] || why="${why:+$why; }templates that never ran through ssh: $missing"
    finish_scenario e "production plan via docker exec, $(grep -c . "$d/ssh.log") ssh calls" \
        "rollout exit ${rc:-none}${rc2:+, resume $rc2}" "$why" "$t" "$d" "$host1"
}

# ---------------------------------------------------------------------------------------
# In a function, so that bash has read the whole file before anything runs (editing the
# script while it runs cannot change what it does).
main() {
    command -v docker-compose >/dev/null 2>&1 || { log "docker-compose is not installed"; exit 1; }
    docker info >/dev/null 2>&1 || { log "the Docker engine is not reachable"; exit 1; }
    if [ "$build" = 1 ]; then
        build_images || { log "FAIL: images could not be built"; exit 1; }
    fi
    [ "$build_only" = 0 ] || exit 0
    for s in "${scenarios[@]}"; do
        "scenario_$s"
    done
    log "summary ($(elapsed "$T0")s in all, logs in $OUT):"
    local r passed=0 failed=0
    for r in "${RESULTS[@]}"; do
        echo "  $r"
        case "$r" in PASS*) passed=$((passed + 1)) ;; *) failed=$((failed + 1)) ;; esac
    done
    echo "compose-harness: $passed passed, $failed failed"
    exit "$FAILED"
}
main
