#!/usr/bin/env bash
# The hot path against bare tonic, in one interleaved run (docs/performance.md,
# "Hot path"). Same client (h2load), same settings, same request, release builds:
#
#   bare      examples/bare_echo: tonic with no layers, a fixed WhoAmI answer
#             (sent the same request as jwt, access token included)
#   jwt       tenantry serve, WhoAmI with a user's access token (every layer,
#             JSON access log to a file, in-process limits)
#   key       the same server, WhoAmI with the tenant's API key
#   redis     a second tenantry serve with REDIS_URL (the Redis limiter), JWT
#   rest      the first server, GET /v1/auth/whoami through the REST gateway, JWT
#             (wrk, 2 x CLIENTS kept-alive HTTP/1.1 connections, REST_SECONDS each;
#             skipped without wrk: apt-get install wrk)
#   getuser   the first server, GetUser (a tenant-scoped PostgreSQL read), JWT,
#             16 calls in flight (below the pool size: nothing is shed)
#
# Each round runs every variant for CALLS calls, in turn, so drift in the
# machine's load falls on all alike. Per variant and round it reports calls/s,
# p50/p99 (over h2load's per-request log) and the server's CPU per call
# ((utime + stime) / calls, from /proc). The tenantry servers' own
# tenantry_rpc_calls_total must grow by exactly the calls made, all OK, or
# the run fails. Prints medians and the ratios to bare at the end.
#
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres REDIS_URL=redis://127.0.0.1:6379 \
#       benches/hot_path.sh
#
# Needs h2load (Debian: apt-get install nghttp2-client), psql, curl, python3.
# Settings: ROUNDS (7), CALLS (100000), CLIENTS (16), STREAMS (32: per
# client), VARIANTS (all of the above, in this order), LOG (the full servers' RUST_LOG; unset means their default),
# BUILD (1: cargo build --release first; 0 to use what is built), BIN and
# BARE_BIN (the binaries), BIN_B (a second tenantry binary, measured as
# variant `alt` next to jwt, `altredis` next to redis and `altrest` next to
# rest: an A/B of a change in one run), LOG_B (RUST_LOG of BIN_B's servers
# only: BIN_B=$BIN LOG_B=warn measures what the access log and the call spans
# cost, in one run), PERF_OUT
# (a file: `perf record` (flat) the server of PERF_VARIANT, default jwt, while
# it is measured; read it with `perf report -i FILE`; PERF_ARGS adds to perf's
# arguments, e.g. "--call-graph dwarf,16384" for call chains), SYSCALLS (1: count each
# gRPC variant's server system calls and context switches per call with
# `perf stat`, REST's too; exact counts, unlike the timings, so a change to how the server
# reads and writes shows at once; needs perf's syscall tracepoints).
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=${DATABASE_URL:?set DATABASE_URL to a server where a database may be created}
REDIS=${REDIS_URL:?set REDIS_URL (the redis variant uses it)}
ROUNDS=${ROUNDS:-7}
CALLS=${CALLS:-100000}
CLIENTS=${CLIENTS:-16}
STREAMS=${STREAMS:-32}
VARIANTS=${VARIANTS:-bare jwt key redis rest getuser}
command -v h2load >/dev/null || { echo "h2load not found: apt-get install nghttp2-client" >&2; exit 1; }

if [[ ${BUILD:-1} == 1 ]]; then
    cargo build --release --locked --bin tenantry --example bare_echo
fi
BIN=${BIN:-target/release/tenantry}
BARE_BIN=${BARE_BIN:-target/release/examples/bare_echo}

DB=tenantry_hot_path_$$
WORK=$(mktemp -d)
source benches/support/scratch_db.sh
URL=$(scratch_url "$BASE" "$DB")
PIDS=()
psql -q "$BASE" -c "CREATE DATABASE $DB"
cleanup() {
    # A process killed by the signal exits non-zero (the bare echo does): not
    # a failure here, and under `set -e` it would end the cleanup early.
    for pid in "${PIDS[@]}"; do { kill "$pid" && wait "$pid"; } 2>/dev/null || true; done
    psql -q "$BASE" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ready() { for _ in $(seq 150); do curl -fs "http://$1/readyz" >/dev/null && return; sleep 0.2; done; echo "server on $1 not ready" >&2; exit 1; }

"$BIN" keys generate --out-dir "$WORK/keys" >/dev/null 2>&1
export TENANTRY_JWT_PRIVATE_KEY_FILE="$WORK/keys/jwt-signing-key.pem"
DATABASE_URL=$URL "$BIN" migrate >/dev/null 2>&1
# A plan whose rate the bench never reaches (200,000 calls/s, a bucket of 4,000: a call whose
# thread stalls for the bucket's 20 ms between reading the clock and taking its token is
# refused, so the bucket must not be much smaller on this machine): every
# call is still rate-limited, none refused.
psql -q "$URL" -c "INSERT INTO platform.plans (id, display_name, requests_per_second, burst, monthly_request_quota,
    max_concurrent_jobs, min_replicas, max_replicas) VALUES ('bench', 'Bench', 200000, 4000, 0, 10, 1, 2)"

start_full() { # name [--bin bin] [--log filter] [env options and assignments...]
    local name=$1 bin=$BIN log=${LOG:-} grpc http
    shift
    if [[ ${1:-} == --bin ]]; then bin=$2; shift 2; fi
    if [[ ${1:-} == --log ]]; then log=$2; shift 2; fi
    grpc=127.0.0.1:$(free_port)
    http=127.0.0.1:$(free_port)
    env "$@" DATABASE_URL="$URL" ${log:+RUST_LOG=$log} "$bin" serve --no-workers --log-format json \
        --grpc-addr "$grpc" --http-addr "$http" 2>"$WORK/$name.log" >/dev/null &
    PIDS+=($!)
    eval "${name}_PID=$! ${name}_GRPC=$grpc ${name}_HTTP=$http"
    wait_ready "$http"
}
start_full local -u REDIS_URL TENANTRY_RATE_LIMIT_ENGINE=local
start_full redis REDIS_URL="$REDIS"
# An A/B comparison: BIN_B serves variant `alt` (WhoAmI, JWT, in-process
# limits) next to jwt, `altredis` next to redis (its own server with the
# Redis limiter) and `altrest` next to rest, each where the variant it
# mirrors is measured.
if [[ -n ${BIN_B:-} ]]; then
    start_full alt --bin "$BIN_B" ${LOG_B:+--log "$LOG_B"} -u REDIS_URL TENANTRY_RATE_LIMIT_ENGINE=local
    [[ " $VARIANTS " == *" redis "* ]] && start_full altredis --bin "$BIN_B" ${LOG_B:+--log "$LOG_B"} REDIS_URL="$REDIS"
    VARIANTS=$(sed -E 's/(^| )jwt( |$)/\1jwt alt\2/; s/(^| )redis( |$)/\1redis altredis\2/; s/(^| )rest( |$)/\1rest altrest\2/' <<<"$VARIANTS")
fi
BARE=127.0.0.1:$(free_port)
"$BARE_BIN" "$BARE" >/dev/null 2>&1 &
BARE_PID=$!
PIDS+=("$BARE_PID")

ADMIN=$(DATABASE_URL=$URL "$BIN" bootstrap)
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
rest() { # method path body [extra curl args]
    curl -fsS -X "$1" "http://$local_HTTP$2" -H "authorization: Bearer $ADMIN" -H 'content-type: application/json' \
        -H 'x-tenant-id: bench' ${3:+-d "$3"}
}
curl -fsS -X POST "http://$local_HTTP/v1/tenants" -H "authorization: Bearer $ADMIN" -H 'content-type: application/json' \
    -d '{"slug":"bench","display_name":"Bench","plan_id":"bench"}' >/dev/null
USER_ID=$(rest POST /v1/users '{"email":"load@bench.test","display_name":"Load Tester","password":"correct horse battery staple","roles":["admin"]}' | json "['user']['id']")
JWT=$(curl -fsS -X POST "http://$local_HTTP/v1/auth:login" -H 'content-type: application/json' \
    -d '{"tenant":"bench","email":"load@bench.test","password":"correct horse battery staple"}' | json "['accessToken']")
KEY=$(rest POST /v1/api-keys '{"name":"bench","scopes":["users:read"]}' | json "['secret']")

printf '\0\0\0\0\0' >"$WORK/whoami" # an empty WhoAmIRequest, framed
python3 - "$USER_ID" >"$WORK/getuser" <<'EOF' # GetUserRequest{user_id}, framed
import struct, sys
field = sys.argv[1].encode()
message = b"\x0a" + bytes([len(field)]) + field
sys.stdout.buffer.write(b"\0" + struct.pack(">I", len(message)) + message)
EOF

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
ok_calls() { # http method
    curl -fs "http://$1/metrics" | awk -v m="method=\"$2\"" 'index($0, "tenantry_rpc_calls_total{") == 1 && index($0, m) {
        if (index($0, "code=\"OK\"")) ok += $NF; else bad += $NF } END { printf "%d %d\n", ok, bad }'
}
TICK=$(getconf CLK_TCK)

# SYSCALLS=1: the server's system calls and context switches per call.
COUNTING=""
count_syscalls_start() { # pid
    COUNTING=""
    if [[ ${SYSCALLS:-0} == 1 && $CHECKED == 1 ]]; then
        perf stat -x, -e context-switches,raw_syscalls:sys_enter,syscalls:sys_enter_sendto,syscalls:sys_enter_writev,syscalls:sys_enter_recvfrom,syscalls:sys_enter_futex,syscalls:sys_enter_epoll_wait \
            -p "$1" -o "$WORK/syscalls" &
        COUNTING=$!
    fi
}
count_syscalls_end() { # variant calls
    [[ -n $COUNTING ]] || return 0
    kill -INT "$COUNTING"
    wait "$COUNTING" || true
    awk -F, -v v="$1" -v n="$2" '$3 != "" && $1 ~ /^[0-9]+$/ {
        name = $3; sub(/^syscalls:sys_enter_/, "", name); sub(/^raw_syscalls:sys_enter$/, "all system calls", name)
        printf "%s%s %.3f", sep, name, $1 / n; sep = ", " }
        END { print " per call (" v ")" }' "$WORK/syscalls"
}

run() { # variant pid addr path body token metrics_http method [clients streams]
    local variant=$1 pid=$2 addr=$3 path=$4 body=$5 token=$6 http=${7:-} method=${8:-}
    local clients=${9:-$CLIENTS} streams=${10:-$STREAMS}
    local before_cpu after_cpu before after
    [[ -n $http ]] && before=$(ok_calls "$http" "$method")
    before_cpu=$(cpu_ticks "$pid")
    local perf=""
    if [[ -n ${PERF_OUT:-} && $CHECKED == 1 && $variant == "${PERF_VARIANT:-jwt}" ]]; then
        perf record -F 1999 ${PERF_ARGS:-} -p "$pid" -o "$PERF_OUT" >/dev/null 2>&1 &
        perf=$!
    fi
    count_syscalls_start "$pid"
    h2load -n "$CALLS" -c "$clients" -m "$streams" -d "$body" --log-file="$WORK/requests" \
        -H 'content-type: application/grpc' -H 'te: trailers' ${token:+-H "authorization: Bearer $token"} \
        "http://$addr$path" >"$WORK/h2load" 2>&1 || { cat "$WORK/h2load" >&2; exit 1; }
    after_cpu=$(cpu_ticks "$pid")
    if [[ -n $perf ]]; then kill -INT "$perf"; wait "$perf" || true; fi
    count_syscalls_end "$variant" "$CALLS"
    if [[ -n $http ]]; then
        after=$(ok_calls "$http" "$method")
        read -r ok0 bad0 <<<"$before"
        read -r ok1 bad1 <<<"$after"
        if ((CHECKED && (ok1 - ok0 != CALLS || bad1 != bad0))); then
            echo "$variant: the server counted $((ok1 - ok0)) OK and $((bad1 - bad0)) other calls of $CALLS" >&2
            curl -fs "http://$http/metrics" | grep "^tenantry_rpc_calls_total{.*method=\"$method\"" >&2
            local server=local
            [[ $variant == redis || $variant == alt || $variant == altredis ]] && server=$variant
            grep '"code":' "$WORK/$server.log" | grep -v '"code":"OK"' | tail -3 >&2
            exit 1
        fi
    fi
    grep -q "succeeded, 0 failed, 0 errored" "$WORK/h2load" || { cat "$WORK/h2load" >&2; exit 1; }
    local rps
    rps=$(awk '/^finished in/ { gsub(",", "", $4); print $4 }' "$WORK/h2load")
    sort -n -k3 "$WORK/requests" | awk -v v="$variant" -v rps="$rps" -v ticks=$((after_cpu - before_cpu)) \
        -v hz="$TICK" -v n="$CALLS" '{ d[NR] = $3 } END {
        printf "%s %.0f %.2f %.2f %.2f\n", v, rps, d[int(NR * 0.50)] / 1000, d[int(NR * 0.99)] / 1000, ticks / hz / n * 1e6 }' \
        >>"$WORK/results"
}

run_rest() { # variant pid http: WhoAmI over REST (the gateway), wrk with CLIENTS x 2 kept-alive connections
    local variant=$1 pid=$2 http=$3 before_cpu after_cpu before after seconds=${REST_SECONDS:-3}
    before=$(ok_calls "$http" WhoAmI)
    before_cpu=$(cpu_ticks "$pid")
    local perf=""
    if [[ -n ${PERF_OUT:-} && $CHECKED == 1 && $variant == "${PERF_VARIANT:-jwt}" ]]; then
        perf record -F 1999 ${PERF_ARGS:-} -p "$pid" -o "$PERF_OUT" >/dev/null 2>&1 &
        perf=$!
    fi
    count_syscalls_start "$pid"
    wrk -t 1 -c $((CLIENTS * 2)) -d "${seconds}s" --latency -H "authorization: Bearer $JWT" \
        "http://$http/v1/auth/whoami" >"$WORK/wrk" 2>&1 || { cat "$WORK/wrk" >&2; exit 1; }
    after_cpu=$(cpu_ticks "$pid")
    if [[ -n $perf ]]; then kill -INT "$perf"; wait "$perf" || true; fi
    after=$(ok_calls "$http" WhoAmI)
    read -r ok0 bad0 <<<"$before"
    read -r ok1 bad1 <<<"$after"
    if ((CHECKED && bad1 != bad0)); then
        echo "$variant: the server counted $((bad1 - bad0)) calls that were not OK" >&2
        exit 1
    fi
    local n=$((ok1 - ok0))
    count_syscalls_end "$variant" "$n"
    awk -v v="$variant" -v n="$n" -v secs="$seconds" -v ticks=$((after_cpu - before_cpu)) -v hz="$TICK" '
        function ms(x) { if (x ~ /us$/) return x / 1000; if (x ~ /ms$/) return x + 0; if (x ~ /s$/) return x * 1000; return x }
        $1 == "50%" { p50 = ms($2) } $1 == "99%" { p99 = ms($2) }
        END { printf "%s %.0f %.2f %.2f %.2f\n", v, n / secs, p50, p99, ticks / hz / n * 1e6 }' "$WORK/wrk" >>"$WORK/results"
}

run_variant() {
    case $1 in
    # The same request as jwt's, access token included: h2load never indexes
    # `authorization` (HPACK), so both servers decode it on every call.
    bare) run bare "$BARE_PID" "$BARE" /tenantry.v1.AuthService/WhoAmI "$WORK/whoami" "$JWT" ;;
    jwt) run jwt "$local_PID" "$local_GRPC" /tenantry.v1.AuthService/WhoAmI "$WORK/whoami" "$JWT" "$local_HTTP" WhoAmI ;;
    key) run key "$local_PID" "$local_GRPC" /tenantry.v1.AuthService/WhoAmI "$WORK/whoami" "$KEY" "$local_HTTP" WhoAmI ;;
    redis) run redis "$redis_PID" "$redis_GRPC" /tenantry.v1.AuthService/WhoAmI "$WORK/whoami" "$JWT" "$redis_HTTP" WhoAmI ;;
    # 16 in flight: fewer than the pool's connections, so admission control never sheds.
    rest) command -v wrk >/dev/null && run_rest rest "$local_PID" "$local_HTTP" ;;
    alt) run alt "$alt_PID" "$alt_GRPC" /tenantry.v1.AuthService/WhoAmI "$WORK/whoami" "$JWT" "$alt_HTTP" WhoAmI ;;
    altredis) run altredis "$altredis_PID" "$altredis_GRPC" /tenantry.v1.AuthService/WhoAmI "$WORK/whoami" "$JWT" "$altredis_HTTP" WhoAmI ;;
    altrest) command -v wrk >/dev/null && run_rest altrest "$alt_PID" "$alt_HTTP" ;;
    getuser) run getuser "$local_PID" "$local_GRPC" /tenantry.v1.AuthService/GetUser "$WORK/getuser" "$JWT" "$local_HTTP" GetUser 4 4 ;;
    *) echo "unknown variant $1" >&2; exit 1 ;;
    esac
}

# Warm up every variant (caches, connections, first-call costs, the
# admission control's view of each method); warm-up calls are not checked.
CHECKED=0
SAVED=$CALLS
CALLS=5000
for variant in $VARIANTS; do run_variant "$variant"; done
CALLS=$SAVED
CHECKED=1
: >"$WORK/results"

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg); $ROUNDS rounds of $CALLS calls, h2load -c $CLIENTS -m $STREAMS"
printf '%-8s %10s %9s %9s %12s\n' variant calls/s p50_ms p99_ms cpu_us/call
for round in $(seq "$ROUNDS"); do
    for variant in $VARIANTS; do run_variant "$variant"; done
    tail -"$(wc -w <<<"$VARIANTS")" "$WORK/results" | awk -v r="$round" '{ printf "%-8s %10d %9.2f %9.2f %12.2f   (round %d)\n", $1, $2, $3, $4, $5, r }'
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "access log: $(wc -l <"$WORK/local.log") lines, $(du -h "$WORK/local.log" | cut -f1) (first server)"

python3 - "$WORK/results" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    v, rps, p50, p99, cpu = line.split()
    rows.setdefault(v, []).append((float(rps), float(p50), float(p99), float(cpu)))
med = {v: [statistics.median(c) for c in zip(*r)] for v, r in rows.items()}
print("\nmedians")
print(f"{'variant':8} {'calls/s':>10} {'p50_ms':>9} {'p99_ms':>9} {'cpu_us/call':>12}")
for v, (rps, p50, p99, cpu) in med.items():
    print(f"{v:8} {rps:10.0f} {p50:9.2f} {p99:9.2f} {cpu:12.2f}")
print("\nratios (median of per-round ratios)")
def ratio(a, b, i=0):
    return statistics.median(x[i] / y[i] for x, y in zip(rows[a], rows[b]))
lines = [
    ("WhoAmI JWT / bare echo, throughput", "jwt", "bare", 0, "(goal >= 0.70)"),
    ("WhoAmI key / bare echo, throughput", "key", "bare", 0, "(goal >= 0.70)"),
    ("Redis limiter / in-process (JWT)", "redis", "jwt", 0, "(goal >= 0.80)"),
    ("REST WhoAmI (gateway) / gRPC WhoAmI", "rest", "jwt", 0, "(goal >= 0.70)"),
    ("GetUser (one tenant read) / WhoAmI", "getuser", "jwt", 0, ""),
    ("A/B: BIN_B / BIN, WhoAmI JWT", "alt", "jwt", 0, ""),
    ("A/B: BIN_B / BIN, CPU per call", "alt", "jwt", 3, ""),
    ("A/B: BIN_B / BIN, Redis limiter", "altredis", "redis", 0, ""),
    ("A/B: BIN_B / BIN, Redis CPU per call", "altredis", "redis", 3, ""),
    ("A/B: BIN_B / BIN, REST", "altrest", "rest", 0, ""),
    ("A/B: BIN_B / BIN, REST CPU per call", "altrest", "rest", 3, ""),
    ("bare echo CPU / WhoAmI JWT CPU", "bare", "jwt", 3, ""),
]
for label, a, b, i, goal in lines:
    if a in rows and b in rows:
        print(f"{label:36} {ratio(a, b, i):.2f}   {goal}")
if "jwt" in med:
    print(f"{'WhoAmI JWT CPU per call':36} {med['jwt'][3]:.2f} us   (goal <= 12)")
EOF
