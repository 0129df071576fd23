#!/usr/bin/env bash
# Doorway's Lars programs beside the original C++ Lars, driven by the same client (lars-bench),
# alternating runs, in one session. Results: lars/RESULTS.md.
#
#   lars/bench/compare.sh [RUNS] [OUT_DIR]            (default 3 runs, /tmp/lars-bench-results)
#
# LARS_BENCH_ONLY (a comma-separated subset of dns, agent, reporter, agent-mem, push; all by
# default) runs only those parts, e.g. LARS_BENCH_ONLY=agent for the get_host rounds alone.
#
# Needs: the original built by the original-Lars measuring kit's build.sh ($LARS_ORIGINAL, kept
# beside the repository; and `build.sh --pushfix` for the
# push delay: the unpatched lars_dns crashes on its first push), `cargo build --release -p
# doorway-lars`, root (a network namespace), taskset. Everything listens on 127.0.0.1 inside the
# network namespace `larsbench`, so the original's fixed ports (7778, 7779, UDP 8888-8890, MariaDB
# 3306) meet nothing else running on this machine. Under many requests in flight the servers are
# pinned to CPU 0 and the client to CPU 1; at one request in flight nothing is pinned: on this
# 2-vCPU VM a wake-up across CPUs costs tens of microseconds (an IPI and an idle exit), which
# pinning forces on every round trip and which inflates both sides' CPU per request 2-10x.
# Every process this script starts is stopped by its PID at the end (the original's stack with its
# own run.sh stop).
set -euo pipefail

RUNS=${1:-3}
OUT=${2:-/tmp/lars-bench-results}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ORIG=${LARS_ORIGINAL:?set LARS_ORIGINAL to the original-Lars measuring kit (build.sh, run.sh)}
PUSHFIX_DNS=${LARS_PUSHFIX_DNS:-/tmp/lars-src-pushfix/lars_dns/bin/lars_dns}
REL=$ROOT/target/release
BENCH=$REL/lars-bench
NS=larsbench
DB=mysql://root:aceld@127.0.0.1:3306/lars_dns
RUNDIR=/tmp/lars-run            # the original's run.sh keeps its PIDs here
SERVER_CPU=0
CLIENT_CPU=1
DURATION=${LARS_BENCH_DURATION:-10}
ONLY=${LARS_BENCH_ONLY:-dns,agent,reporter,agent-mem,push}
for part in ${ONLY//,/ }; do
    [[ $part =~ ^(dns|agent|reporter|agent-mem|push)$ ]] ||
        { echo "LARS_BENCH_ONLY: unknown part '$part' (dns, agent, reporter, agent-mem, push)" >&2; exit 2; }
done
want() { [[ ,$ONLY, == *,$1,* ]]; }
WARMUP=${LARS_BENCH_WARMUP:-2}

mkdir -p "$OUT"
LOG=$OUT/results.txt
: > "$LOG"
log() { printf '[compare %s] %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$LOG" >&2; }
in_ns() { ip netns exec "$NS" "$@"; }
sql() { mariadb --protocol=socket -S "$RUNDIR/mysqld.sock" -uroot -paceld -N -B lars_dns -e "$1"; }
PLACE=pinned   # pinned: server threads on SERVER_CPU, client on CLIENT_CPU; free: the scheduler's choice
place() { # place MODE PID...: every thread of each PID on SERVER_CPU (pinned) or on any CPU (free)
    PLACE=$1; shift
    local cpus=$SERVER_CPU; [[ $PLACE == free ]] && cpus=0-$(( $(nproc) - 1 ))
    for p in "$@"; do taskset -a -p -c "$cpus" "$p" > /dev/null; done
}
client() { # client ARGS...: one lars-bench run (on CLIENT_CPU when pinned), its output appended to the log
    local pin=(taskset -c "$CLIENT_CPU"); [[ $PLACE == free ]] && pin=()
    echo "# load $(cut -d' ' -f1-3 /proc/loadavg) placement $PLACE: lars-bench $*" >> "$LOG"
    in_ns timeout 600 "${pin[@]}" "$BENCH" "$@" 2>&1 | tee -a "$LOG" | grep -v '^RESULT' >&2
}

DW_PIDS=()
start_dw() { # start_dw NAME ARGS...: a doorway program in the namespace, its PID in $OUT/NAME.pid
    local name=$1; shift
    # Not through in_ns (a function would run in a subshell and $! be the subshell): `ip netns
    # exec` execs the program, so $! is the server itself (checked below).
    ip netns exec "$NS" "$REL/$1" "${@:2}" < /dev/null > "$OUT/$name.out" 2>&1 &
    echo $! > "$OUT/$name.pid"
    DW_PIDS+=($!)
    sleep 0.2
    [[ $(readlink "/proc/$!/exe") == "$REL/$1" ]] || { log "$name: PID $! is not $REL/$1"; exit 1; }
    for _ in $(seq 100); do grep -q 'listening on\|udp on' "$OUT/$name.out" 2>/dev/null && return; sleep 0.1; done
    log "$name did not start:"; cat "$OUT/$name.out" >&2; exit 1
}
stop_pid() { # stop_pid PID: SIGTERM, wait up to 10 s, then SIGKILL
    local p=$1
    kill -TERM "$p" 2>/dev/null || return 0
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
}
stop_dw() { stop_pid "$(cat "$OUT/$1.pid")"; }
cleanup() {
    set +e
    for p in "${DW_PIDS[@]}"; do stop_pid "$p"; done
    in_ns "$ORIG/run.sh" stop > /dev/null 2>&1
    ip netns del "$NS" 2>/dev/null
}
trap cleanup EXIT

[[ -x $BENCH && -x $REL/lars-dns ]] || { echo "build first: cargo build --release -p doorway-lars" >&2; exit 1; }
ip netns add "$NS" 2>/dev/null || true
in_ns ip link set lo up

log "original stack (MariaDB, lars_dns, lars_reporter, lars_lb_agent) in netns $NS"
LARS_QUIET=1 in_ns "$ORIG/run.sh" start > "$OUT/original-start.log" 2>&1
opid() { cat "$RUNDIR/$1.pid"; }
log "doorway stack: lars-dns 17778, lars-reporter 17779 (both on the same MariaDB), lars-agent UDP 18888-18890"
start_dw dw-dns lars-dns --listen 127.0.0.1:17778 --db "$DB" --log-level warn
start_dw dw-reporter lars-reporter --listen 127.0.0.1:17779 --db "$DB" --log-level warn
start_dw dw-agent lars-agent --udp-base 127.0.0.1:18888 --dns 127.0.0.1:17778 --reporter 127.0.0.1:17779 \
    --listen 127.0.0.1:0 --log-level warn
servers() { echo "$(opid lars_dns) $(opid lars_reporter) $(opid lars_lb_agent) $(cat "$OUT/dw-dns.pid")" \
    "$(cat "$OUT/dw-reporter.pid") $(cat "$OUT/dw-agent.pid")"; }
shape_place() { if [[ $1 == 1 && $2 == 1 ]]; then echo free; else echo pinned; fi; }

side_order() { if (( $1 % 2 )); then echo "doorway original"; else echo "original doorway"; fi; }

# closed_loop KIND ADDR_FLAG DW_ADDR DW_NAME ORIG_ADDR ORIG_NAME COUNT_FLAG SHAPE: RUNS rounds of
# lars-bench KIND at 1 x 1 and at SHAPE ("COUNT DEPTH"), both sides alternating, against doorway's
# program DW_NAME at DW_ADDR and the original's ORIG_NAME at ORIG_ADDR.
closed_loop() {
    local kind=$1 addr_flag=$2 dw_addr=$3 dw_name=$4 orig_addr=$5 orig_name=$6 count_flag=$7 big=$8
    local r shape side addr pid
    for r in $(seq "$RUNS"); do
        for shape in "1 1" "$big"; do
            set -- $shape
            place "$(shape_place "$@")" $(servers)
            for side in $(side_order "$r"); do
                if [[ $side == doorway ]]; then addr=$dw_addr pid=$(cat "$OUT/$dw_name.pid")
                else addr=$orig_addr pid=$(opid "$orig_name"); fi
                client "$kind" "$addr_flag" "$addr" "$count_flag" "$1" --depth "$2" --duration "$DURATION" \
                    --warmup "$WARMUP" --server-pid "$pid" --label "$side"
            done
        done
    done
}

# 1. lars-dns: GetRoute closed loop, 1 x 1 and 8 x 64 (connections x in flight).
want dns && closed_loop dns --addr 127.0.0.1:17778 dw-dns 127.0.0.1:7778 lars_dns --conns "8 64"

# 3. lars-agent: get_host closed loop, 1 x 1 and 4 x 16 (sockets x in flight), modules (1,1..3).
want agent && closed_loop agent --base 127.0.0.1:18888 dw-agent 127.0.0.1:8888 lars_lb_agent --sockets "4 16"

# 2. lars-reporter: new rows (distinct keys) stored per second, on the same MariaDB; doorway on
#    SQLite too (a fresh file each run). The original stores a few thousand rows/s, so it is given
#    fewer rows (the rate is its steady state either way).
#    Reporters pinned to CPU 0 and the client to CPU 1; MariaDB runs where the scheduler puts it.
want reporter && {
    place pinned $(servers)
    DW_ROWS=${LARS_BENCH_DW_ROWS:-300000}
    ORIG_ROWS=${LARS_BENCH_ORIG_ROWS:-60000}
    for r in $(seq "$RUNS"); do
        for side in $(side_order "$r"); do
            sql "TRUNCATE TABLE ServerCallStatus"
            if [[ $side == doorway ]]; then
                client reporter --addr 127.0.0.1:17779 --db "$DB" --rows "$DW_ROWS" --server-pid "$(cat "$OUT/dw-reporter.pid")" \
                    --db-pid "$(opid mariadb)" --label doorway-mariadb
            else
                client reporter --addr 127.0.0.1:7779 --db "$DB" --rows "$ORIG_ROWS" --server-pid "$(opid lars_reporter)" \
                    --db-pid "$(opid mariadb)" --label original-mariadb
            fi
        done
        rm -f "$OUT"/reporter.db*
        start_dw dw-reporter-sqlite lars-reporter --listen 127.0.0.1:17780 --db "sqlite://$OUT/reporter.db" --log-level warn
        place pinned "$(cat "$OUT/dw-reporter-sqlite.pid")"
        client reporter --addr 127.0.0.1:17780 --db "sqlite://$OUT/reporter.db" --rows "$DW_ROWS" \
            --server-pid "$(cat "$OUT/dw-reporter-sqlite.pid")" --label doorway-sqlite
        stop_dw dw-reporter-sqlite
    done
    sql "TRUNCATE TABLE ServerCallStatus"
}

# 3b. Agent memory with 10,000 modules: routes for (1000..10999, 1), three nodes each, in RouteData
#     (version bumped, no RouteChange: nothing is pushed). Fresh agents, RSS before and after.
want agent-mem && {
    PLACE=free
    MODS=${LARS_BENCH_MODULES:-10000}
    sql "DELETE FROM RouteData WHERE modid >= 1000;
         INSERT INTO RouteData(modid, cmdid, serverip, serverport)
           SELECT 999 + m.seq, 1, INET_ATON('10.1.0.0') + h.seq, 7000 + h.seq FROM seq_1_to_$MODS m, seq_1_to_3 h;
         UPDATE RouteVersion SET version = version + 1 WHERE id = 1;"
    sleep 3   # both route services poll the version every second
    for side in doorway original; do
        if [[ $side == doorway ]]; then
            stop_dw dw-agent
            start_dw dw-agent lars-agent --udp-base 127.0.0.1:18888 --dns 127.0.0.1:17778 --reporter 127.0.0.1:17779 \
                --listen 127.0.0.1:0 --log-level warn
            sleep 1
            client agent-mem --base 127.0.0.1:18888 --agent-pid "$(cat "$OUT/dw-agent.pid")" --modules "$MODS" --label doorway
        else
            in_ns "$ORIG/run.sh" stop-lars > /dev/null
            LARS_QUIET=1 in_ns "$ORIG/run.sh" start-lars > /dev/null
            sleep 1
            # The original agent was once gone right after this restart (2026-12-06): say so and go on
            # to the push delay instead of ending the whole run.
            client agent-mem --base 127.0.0.1:8888 --agent-pid "$(opid lars_lb_agent)" --modules "$MODS" --label original ||
                log "original agent-mem failed; the agent's stderr ends: $(tail -3 "$RUNDIR/logs/lars_lb_agent.err" | tr '\n' ' ')"
        fi
    done
    sql "DELETE FROM RouteData WHERE modid >= 1000; UPDATE RouteVersion SET version = version + 1 WHERE id = 1;"
}

# 1b. Push delay: 100 subscribed connections, 10 route changes per run committed to MariaDB (the
#     same SQL for both). One route service at a time: each deletes the RouteChange rows it pushed.
#     The original runs the --pushfix build (its unpatched lars_dns crashes on the first push).
want push && for r in $(seq "$RUNS"); do
    for side in $(side_order "$r"); do
        in_ns "$ORIG/run.sh" stop-lars > /dev/null
        stop_dw dw-dns
        if [[ $side == doorway ]]; then
            start_dw dw-dns lars-dns --listen 127.0.0.1:17778 --db "$DB" --log-level warn
            addr=127.0.0.1:17778
        else
            LARS_QUIET=1 LARS_DNS_BIN=$PUSHFIX_DNS in_ns "$ORIG/run.sh" start-lars > /dev/null
            addr=127.0.0.1:7778
        fi
        sleep 1
        client dns-push --addr "$addr" --db "$DB" --conns 100 --changes 10 --module 1:3 --label "$side"
    done
done

log "summary (medians over runs)"
"$BENCH" summary "$LOG" | tee "$OUT/summary.txt"
