#!/usr/bin/env bash
# Overload runs against a release build (docs/reliability.md, "Figures"):
# h2load floods ListTenants; the gRPC code counts come from the server's own
# tenantry_rpc_calls_total (h2load sees only HTTP 200), goodput is OK calls
# per second, p99 is over every response in h2load's per-request log, and the
# server's RSS is read after each run.
#
#   cargo build --release
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres benches/overload.sh
#
# Needs h2load (Debian: nghttp2-client), GNU time at /usr/bin/time (Debian:
# time), psql, curl and pgrep.
#
# Settings: BIN (target/release/tenantry), RUNS (3), SECONDS_PER_RUN (15),
# CLIENTS (200), STREAMS (100: streams per client), IDLE_SECONDS (30: the quiet
# after each run, then RSS is read again), GRPC_PORT, HTTP_PORT, ACCESS_LOG (1:
# the server writes its access log, RUST_LOG=info, and each run prints the
# server-side latency of its calls by code, first byte in to status out, from
# the log's latency_ms: how fast refusals are; the log costs the server CPU, so
# goodput is lower than without it), BASELINE ("4x4": CLIENTS x STREAMS of a
# run below saturation before the floods, "" for none; docs/reliability.md
# compares floods with it).
#
# Every run also prints the CPU each party used per OK call: the server,
# PostgreSQL (all its processes) and h2load, in milliseconds of CPU per
# second of the run (1000 = one core) and in microseconds per OK call.
set -euo pipefail

BIN=${BIN:-target/release/tenantry}
BASE=${DATABASE_URL:?set DATABASE_URL to a server where a database may be created}
RUNS=${RUNS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-15}
CLIENTS=${CLIENTS:-200}
STREAMS=${STREAMS:-100}
IDLE_SECONDS=${IDLE_SECONDS:-30}
GRPC=127.0.0.1:${GRPC_PORT:-50071}
HTTP=127.0.0.1:${HTTP_PORT:-8091}
DB=tenantry_overload_$$
WORK=$(mktemp -d)
source "$(dirname "$0")/support/scratch_db.sh"
URL=$(scratch_url "$BASE" "$DB")

psql -q "$BASE" -c "CREATE DATABASE $DB"
cleanup() {
    if [[ -n "${SERVER:-}" ]]; then { kill "$SERVER" && wait "$SERVER"; } 2>/dev/null || true; fi
    psql -q "$BASE" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || true
    rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN" keys generate --out-dir "$WORK/keys" >/dev/null 2>&1
export TENANTRY_JWT_PRIVATE_KEY_FILE="$WORK/keys/jwt-signing-key.pem"
DATABASE_URL=$URL RUST_LOG=$([[ ${ACCESS_LOG:-0} == 1 ]] && echo info || echo warn) "$BIN" serve --migrate --no-workers --grpc-addr "$GRPC" --http-addr "$HTTP" \
    --log-format json >"$WORK/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 100); do curl -fs "http://$HTTP/readyz" >/dev/null && break; sleep 0.2; done
echo "server up, RSS $(ps -o rss= -p "$SERVER") KiB"
KEY=$(DATABASE_URL=$URL "$BIN" bootstrap)
curl -fs -X POST "http://$HTTP/v1/tenants" -H "authorization: Bearer $KEY" -H 'content-type: application/json' \
    -d '{"slug":"loadtest","display_name":"Load test","plan_id":"free"}' >/dev/null
printf '\0\0\0\0\0' >"$WORK/empty" # one empty ListTenantsRequest, framed

codes() {
    curl -fs "http://$HTTP/metrics" |
        { grep '^tenantry_rpc_calls_total{service="tenantry.v1.TenantService",method="ListTenants"' || true; } |
        sed -E 's/.*code="([A-Z_]+)"} ([0-9.e+]+)/\1 \2/'
}

# CPU ticks (utime + stime, CLK_TCK a second) of the server and of every PostgreSQL process.
ticks() { awk '{ t += $14 + $15 } END { print t + 0 }' "$@" 2>/dev/null || true; }
cpu_ticks() { echo "$(ticks "/proc/$SERVER/stat") $(ticks $(pgrep -x postgres | sed 's|.*|/proc/&/stat|'))"; }

# One h2load run of $1 clients x $2 streams for $3 seconds, reported as "$4".
load() {
    local clients=$1 streams=$2 secs=$3 name=$4 before after
    codes >"$WORK/before"
    logged=$(wc -l <"$WORK/server.log")
    rm -f "$WORK/requests"
    before=$(cpu_ticks)
    /usr/bin/time -f '%U %S' -o "$WORK/h2load.time" \
        h2load -c "$clients" -m "$streams" -D "$secs" -d "$WORK/empty" --log-file="$WORK/requests" \
        -H 'content-type: application/grpc' -H 'te: trailers' -H "authorization: Bearer $KEY" \
        "http://$GRPC/tenantry.v1.TenantService/ListTenants" >"$WORK/h2load" 2>&1 || true
    after=$(cpu_ticks)
    codes >"$WORK/after"
    echo "$name ($clients x $streams, $secs s): $(grep -E '^requests:' "$WORK/h2load")"
    awk -v secs="$secs" -v hz="$(getconf CLK_TCK)" -v cpu="$before $after $(cat "$WORK/h2load.time")" '
        FILENAME == ARGV[1] { before[$1] = $2; next }
        { n = $2 - before[$1]; printf "  %s %d\n", $1, n; if ($1 == "OK") ok = n }
        END {
            split(cpu, c, " ")
            server = (c[3] - c[1]) * 1000 / hz; pg = (c[4] - c[2]) * 1000 / hz; client = (c[5] + c[6]) * 1000
            printf "  goodput %.0f OK/s\n", ok / secs
            printf "  CPU ms/s: server %.0f, PostgreSQL %.0f, h2load %.0f", server / secs, pg / secs, client / secs
            if (ok) printf "; per OK call: server %.0f us, PostgreSQL %.0f us", server * 1000 / ok, pg * 1000 / ok
            printf "\n"
        }' "$WORK/before" "$WORK/after"
    sort -n -k3 "$WORK/requests" | awk '{ d[NR] = $3 } END { if (NR) printf "  p50 %.1f ms, p99 %.1f ms over %d responses\n", d[int(NR * 0.50)] / 1000, d[int(NR * 0.99)] / 1000, NR }'
}

if [[ -n "${BASELINE-4x4}" ]]; then
    IFS=x read -r base_clients base_streams <<<"${BASELINE-4x4}"
    load "$base_clients" "$base_streams" 10 "below saturation"
    sleep 5
fi
for run in $(seq "$RUNS"); do
    load "$CLIENTS" "$STREAMS" "$SECONDS_PER_RUN" "flood $run"
    if [[ ${ACCESS_LOG:-0} == 1 ]]; then
        tail -n +$((logged + 1)) "$WORK/server.log" | python3 -c '
import collections, json, sys
latencies = collections.defaultdict(list)
for line in sys.stdin:
    try:
        entry = json.loads(line)
    except ValueError:
        continue
    if "latency_ms" in entry and "code" in entry:
        latencies[entry["code"]].append(entry["latency_ms"])
for code, v in sorted(latencies.items()):
    v.sort()
    n = len(v)
    over = sum(x > 10 for x in v)
    print(f"  server-side {code}: p50 {v[n // 2]:.2f} ms, p99 {v[n * 99 // 100]:.2f} ms, max {v[-1]:.2f} ms; {over} of {n} over 10 ms")
'
    fi
    echo "  RSS after run $run: $(ps -o rss= -p "$SERVER") KiB"
    sleep "$IDLE_SECONDS"
    echo "  RSS after $IDLE_SECONDS s idle: $(ps -o rss= -p "$SERVER") KiB"
done
