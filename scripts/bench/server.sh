#!/usr/bin/env bash
# The server benchmarks of docs/benchmarks.md ("The server"), one part per argument:
#
#   scripts/bench/server.sh evaluate        # evaluate over HTTP, demo tenant (wrk + http_load)
#   scripts/bench/server.sh signin          # whole TAP sign-ins per second, demo tenant
#   scripts/bench/server.sh import          # 100k tenant: import on SQLite and PostgreSQL, serve start-up
#   scripts/bench/server.sh evaluate-100k   # evaluate over HTTP against the 100k tenant (SQLite)
#   scripts/bench/server.sh visibility      # membership change -> evaluation, one node, demo and 100k
#   scripts/bench/server.sh visibility-pg   # the same across two nodes on one PostgreSQL database
#
# Build first: cargo build --release -p gatehouse
#              cargo build --release -p gatehouse-bench --example http_load --example gen_tenant
# Needs wrk (apt-get install wrk), PostgreSQL on 127.0.0.1:5432 with trust auth (for the
# PostgreSQL parts), and taskset. Each part runs RUNS times (default 3); read the median.
# Pinning: the server on SERVER_CPUS (default 0,1: both cores), the load tool on LOAD_CPUS
# (default 1). Before each run it waits for other processes to go quiet (see `quiet`). Everything lives under WORK (default /tmp/gatehouse-bench) and is removed by
# the next run of the same part; PostgreSQL databases are created fresh and dropped.
set -euo pipefail

cd "$(dirname "$0")/../.."
GH=${GH:-target/release/gatehouse}
LOAD=${LOAD:-target/release/examples/http_load}
GEN=${GEN:-target/release/examples/gen_tenant}
WORK=${WORK:-/tmp/gatehouse-bench}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
PORT_A=${PORT_A:-28080}
PORT_B=${PORT_B:-28081}
SERVER_CPUS=${SERVER_CPUS:-0,1}
LOAD_CPUS=${LOAD_CPUS:-1}
RUNS=${RUNS:-3}
CONNECTIONS=${CONNECTIONS:-64}
DURATION=${DURATION:-10}
TENANT=${TENANT:-$WORK/tenant100k}
BODY_FULL=scripts/bench/evaluate-adele-fr.json
BODY_APPLIED=scripts/bench/evaluate-adele-fr-applied.json
# The same request for a break-glass account, whom every policy excludes: an empty answer, so
# the difference to BODY_APPLIED is the cost of writing the answer.
BODY_EMPTY=scripts/bench/evaluate-breakglass-gb-applied.json
BODY_100K=scripts/bench/evaluate-user100-gb-applied.json

mkdir -p "$WORK"
say() { printf '\n== %s\n' "$*"; }

# start NAME PORT serve-args… : starts a server, waits for /healthz, prints the start-up time.
start() {
    local name=$1 port=$2
    shift 2
    local t0
    t0=$(date +%s.%N)
    taskset -c "$SERVER_CPUS" "$GH" serve --listen "127.0.0.1:$port" "$@" \
        >"$WORK/$name.out" 2>"$WORK/$name.err" &
    echo $! >"$WORK/$name.pid"
    for _ in $(seq 6000); do
        if curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then
            local t1
            t1=$(date +%s.%N)
            echo "$name: listening after $(awk "BEGIN {printf \"%.2f\", $t1 - $t0}") s, $(rss "$name")"
            return 0
        fi
        kill -0 "$(cat "$WORK/$name.pid")" 2>/dev/null || { cat "$WORK/$name.err" >&2; return 1; }
        sleep 0.05
    done
    echo "$name did not start" >&2
    return 1
}

rss() { awk '/VmRSS|VmHWM/ {printf "%s %.0f MB ", $1, $2 / 1024}' "/proc/$(cat "$WORK/$1.pid")/status"; }

stop() {
    local pid
    pid=$(cat "$WORK/$1.pid")
    echo "$1: $(rss "$1")"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
}

# Waits (up to QUIET_WAIT seconds, default 600) until other processes use under 10% of a CPU,
# so that a run measures Gatehouse and not someone's compiler; says so when it gives up.
quiet() {
    local waited=0 busy
    while :; do
        busy=$(top -b -n 2 -d 1 | awk '/^top -/ {frame++} frame == 2 && $1 ~ /^[0-9]+$/ && $9 + 0 > 0 {sum += $9} END {printf "%.0f", sum}')
        [ "${busy:-0}" -lt 10 ] && return 0
        if [ "$waited" -ge "${QUIET_WAIT:-600}" ]; then
            echo "(machine busy: other processes at ${busy}% CPU; measuring anyway)"
            return 0
        fi
        sleep 5
        waited=$((waited + 6))
    done
}

demo_token() { grep -A1 'shown once' "$WORK/$1.out" | tail -1 | tr -d ' '; }

wrk_evaluate() { # url token body
    quiet
    GATEHOUSE_TOKEN=$2 BODY=$3 taskset -c "$LOAD_CPUS" \
        wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" -s scripts/bench/evaluate.lua "$1" | tail -1
}

load_evaluate() { # url token body
    quiet
    taskset -c "$LOAD_CPUS" "$LOAD" evaluate --url "$1" --token "$2" --body "$3" \
        --connections "$CONNECTIONS" --duration "$DURATION" | tail -2
}

fresh_demo() { # name port [serve args]
    local name=$1 port=$2
    shift 2
    rm -rf "$WORK/$name"
    start "$name" "$port" --demo --data-dir "$WORK/$name" "$@"
}

wrk_healthz() { # url: the HTTP floor, a route that does nothing
    quiet
    taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$1/healthz" |
        awk '/50%|99%/ {printf "%s %s, ", $1, $2} /Requests\/sec/ {printf "%s requests/s\n", $2}'
}

# evaluate_runs URL TOKEN BODY… : RUNS wrk runs per body and per connection count, then one
# http_load run per body as a cross-check of the load tool.
evaluate_runs() {
    local url=$1 token=$2 body c
    shift 2
    echo "-- /healthz (wrk, $CONNECTIONS connections)"
    for _ in $(seq "$RUNS"); do wrk_healthz "$url"; done
    for body in "$@"; do
        for c in ${EVAL_CONNECTIONS:-16 64}; do
            echo "-- $body (wrk, $c connections)"
            for _ in $(seq "$RUNS"); do CONNECTIONS=$c wrk_evaluate "$url" "$token" "$body"; done
        done
        echo "-- $body (http_load, $CONNECTIONS connections)"
        load_evaluate "$url" "$token" "$body"
    done
}

part_evaluate() {
    say "evaluate, demo tenant, server on cpus $SERVER_CPUS, load on $LOAD_CPUS"
    fresh_demo demo "$PORT_A"
    local token url=http://127.0.0.1:$PORT_A
    token=$(demo_token demo)
    load_evaluate "$url" "$token" "$BODY_APPLIED" >/dev/null # warm-up
    # shellcheck disable=SC2086
    evaluate_runs "$url" "$token" ${EVAL_BODIES:-$BODY_APPLIED $BODY_FULL $BODY_EMPTY}
    stop demo
}

part_signin() {
    say "TAP sign-in, demo tenant, throttle raised to 1,000,000 attempts/s per IP"
    printf '[signin]\nattempts_per_second_per_ip = 1000000\n' >"$WORK/signin.toml"
    fresh_demo signin "$PORT_A" --config "$WORK/signin.toml"
    local token
    token=$(demo_token signin)
    for c in ${SIGNIN_CONNECTIONS:-1 16}; do
        echo "-- $c connections"
        for _ in $(seq "$RUNS"); do
            quiet
            taskset -c "$LOAD_CPUS" "$LOAD" signin --url "http://127.0.0.1:$PORT_A" --token "$token" \
                --connections "$c" --duration "$DURATION" | tail -4
        done
    done
    stop signin
}

timed_import() { # label import-args…
    local label=$1
    shift
    quiet
    taskset -c "$SERVER_CPUS" /usr/bin/time -v "$GH" import --tenant "$TENANT" "$@" >"$WORK/import.out" 2>"$WORK/import.err" \
        || { cat "$WORK/import.err" >&2; return 1; }
    printf '%s: %s; wall %s, max RSS %.0f MB\n' "$label" "$(cat "$WORK/import.out")" \
        "$(awk -F': ' '/Elapsed/ {print $2}' "$WORK/import.err")" \
        "$(awk -F': ' '/Maximum resident/ {print $2 / 1024}' "$WORK/import.err")"
}

ensure_tenant() {
    [ -f "$TENANT/policies/001-Global-AllApps-MFA-Require.json" ] || "$GEN" "$TENANT"
}

part_import() {
    ensure_tenant
    say "import of $TENANT on SQLite"
    for i in $(seq "$RUNS"); do
        rm -rf "$WORK/k100"
        timed_import "sqlite run $i" --data-dir "$WORK/k100"
    done
    du -sh "$WORK/k100"
    say "import of $TENANT on PostgreSQL"
    for i in $(seq "$RUNS"); do
        psql -q "$PG/postgres" -c 'DROP DATABASE IF EXISTS gatehouse_bench_k100' -c 'CREATE DATABASE gatehouse_bench_k100'
        timed_import "postgres run $i" --database-url "$PG/gatehouse_bench_k100"
    done
    psql -Atq "$PG/postgres" -c "SELECT pg_size_pretty(pg_database_size('gatehouse_bench_k100'))"
    say "serve start-up with the 100k store"
    for i in $(seq "$RUNS"); do
        start k100 "$PORT_A" --data-dir "$WORK/k100"
        stop k100
        start k100pg "$PORT_A" --database-url "$PG/gatehouse_bench_k100"
        stop k100pg
    done
}

k100_token() { "$GH" admin bootstrap --upn nestor@contoso.example "$@" 2>/dev/null; }

part_evaluate_100k() {
    [ -d "$WORK/k100" ] || { echo "run the import part first" >&2; return 1; }
    say "evaluate, 100k tenant (SQLite), server on cpus $SERVER_CPUS, load on $LOAD_CPUS"
    local token url=http://127.0.0.1:$PORT_A
    token=$(k100_token --data-dir "$WORK/k100")
    start k100 "$PORT_A" --data-dir "$WORK/k100"
    load_evaluate "$url" "$token" "$BODY_APPLIED" >/dev/null # warm-up
    # shellcheck disable=SC2086
    evaluate_runs "$url" "$token" ${EVAL_BODIES:-$BODY_APPLIED $BODY_100K $BODY_FULL}
    stop k100
}

visibility() { # write-url read-url token [changes]
    quiet
    taskset -c "$LOAD_CPUS" "$LOAD" visibility --url "$1" --read-url "$2" --token "$3" \
        --body "$BODY_APPLIED" --changes "${4:-${CHANGES:-100}}" | tail -3
}

part_visibility() {
    say "change visibility, one node (SQLite), demo tenant"
    fresh_demo demo "$PORT_A"
    local url=http://127.0.0.1:$PORT_A
    for _ in $(seq "$RUNS"); do visibility "$url" "$url" "$(demo_token demo)"; done
    stop demo
    if [ -d "$WORK/k100" ]; then
        say "change visibility, one node (SQLite), 100k tenant"
        local token
        token=$(k100_token --data-dir "$WORK/k100")
        start k100 "$PORT_A" --data-dir "$WORK/k100"
        for _ in $(seq "$RUNS"); do visibility "$url" "$url" "$token" "${CHANGES_100K:-50}"; done
        stop k100
    fi
}

part_visibility_pg() {
    say "change visibility across two nodes on one PostgreSQL database, demo tenant"
    local db=gatehouse_bench_demo a=http://127.0.0.1:$PORT_A b=http://127.0.0.1:$PORT_B token
    psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
    start pga "$PORT_A" --demo --database-url "$PG/$db"
    start pgb "$PORT_B" --database-url "$PG/$db"
    token=$(demo_token pga)
    for _ in $(seq "$RUNS"); do visibility "$a" "$b" "$token"; done
    echo "-- the same node (A writes, A reads), PostgreSQL"
    visibility "$a" "$a" "$token"
    stop pga
    stop pgb
    psql -q "$PG/postgres" -c "DROP DATABASE $db"
    if psql -Atq "$PG/postgres" -c "SELECT 1 FROM pg_database WHERE datname = 'gatehouse_bench_k100'" | grep -q 1; then
        say "change visibility across two nodes on one PostgreSQL database, 100k tenant"
        token=$(k100_token --database-url "$PG/gatehouse_bench_k100")
        start pga "$PORT_A" --database-url "$PG/gatehouse_bench_k100"
        start pgb "$PORT_B" --database-url "$PG/gatehouse_bench_k100"
        for _ in $(seq "$RUNS"); do visibility "$a" "$b" "$token" "${CHANGES_100K:-50}"; done
        stop pga
        stop pgb
    fi
}

[ $# -gt 0 ] || { sed -n '2,9p' "$0"; exit 2; }
echo "$(date -u +%FT%TZ) $(uptime)"
for part in "$@"; do
    case $part in
        evaluate) part_evaluate ;;
        signin) part_signin ;;
        import) part_import ;;
        evaluate-100k) part_evaluate_100k ;;
        visibility) part_visibility ;;
        visibility-pg) part_visibility_pg ;;
        *) echo "unknown part $part" >&2; exit 2 ;;
    esac
done
