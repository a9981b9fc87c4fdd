#!/usr/bin/env bash
# Instructions per call of the full server, counted by valgrind's callgrind:
# the same figure for the same build and calls whatever else the machine is
# doing, so a change to the hot path shows even when benches/hot_path.sh's
# timings drown it in noise (docs/performance.md, "Hot path"). Counts user
# space only: the kernel's share (sockets, wakeups) is not in it.
#
# For each build (BIN, then BIN_B when set) it starts `tenantry serve` under
# callgrind with its own database, warms it with WARM calls, then counts
# CALLS calls of WhoAmI as the platform admin (an API key) over gRPC
# (h2load, 4 connections x 8 streams) and over REST (h2load --h1,
# 4 kept-alive connections), and prints instructions per call. Every thread
# of the server is counted, the log writer's included.
#
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres benches/instructions.sh
#
# Needs valgrind and h2load (Debian: apt-get install valgrind nghttp2-client),
# psql, curl, python3. Settings: CALLS (5000), WARM (2000), BIN
# (target/release/tenantry, built first unless BUILD=0), BIN_B (a second
# build, counted the same way), OUT (a directory to keep the callgrind files
# in, for callgrind_annotate).
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=${DATABASE_URL:?set DATABASE_URL to a server where a database may be created}
CALLS=${CALLS:-5000}
WARM=${WARM:-2000}
for tool in valgrind callgrind_control h2load; do
    command -v "$tool" >/dev/null || { echo "$tool not found: apt-get install valgrind nghttp2-client" >&2; exit 1; }
done
if [[ ${BUILD:-1} == 1 ]]; then
    cargo build --release --locked --bin tenantry
fi
BIN=${BIN:-target/release/tenantry}

DB=tenantry_instructions_$$
WORK=$(mktemp -d)
OUT=${OUT:-$WORK}
mkdir -p "$OUT"
source benches/support/scratch_db.sh
URL=$(scratch_url "$BASE" "$DB")
SERVER=""
psql -q "$BASE" -c "CREATE DATABASE $DB"
cleanup() {
    if [[ -n $SERVER ]]; then { kill "$SERVER" && wait "$SERVER"; } 2>/dev/null || true; fi
    psql -q "$BASE" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || true
    [[ $OUT == "$WORK" ]] && rm -rf "$WORK"
    return 0
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

"$BIN" keys generate --out-dir "$WORK/keys" >/dev/null 2>&1
export TENANTRY_JWT_PRIVATE_KEY_FILE="$WORK/keys/jwt-signing-key.pem"
DATABASE_URL=$URL "$BIN" migrate >/dev/null 2>&1
ADMIN=$(DATABASE_URL=$URL "$BIN" bootstrap)
printf '\0\0\0\0\0' >"$WORK/whoami" # an empty WhoAmIRequest, framed

load() { # door grpc http calls
    if [[ $1 == rest ]]; then
        h2load --h1 -n "$4" -c 4 -H "authorization: Bearer $ADMIN" "http://$3/v1/auth/whoami"
    else
        h2load -n "$4" -c 4 -m 8 -d "$WORK/whoami" -H 'content-type: application/grpc' -H 'te: trailers' \
            -H "authorization: Bearer $ADMIN" "http://$2/tenantry.v1.AuthService/WhoAmI"
    fi >"$WORK/h2load" 2>&1
    grep -q "succeeded, 0 failed, 0 errored" "$WORK/h2load" || { cat "$WORK/h2load" >&2; exit 1; }
}

count() { # name bin door
    local name=$1 bin=$2 door=$3 grpc http file
    grpc=127.0.0.1:$(free_port)
    http=127.0.0.1:$(free_port)
    file="$OUT/callgrind.$name.$door"
    DATABASE_URL=$URL valgrind --tool=callgrind --callgrind-out-file="$file" --dump-instr=no \
        "$bin" serve --no-workers --log-format json --grpc-addr "$grpc" --http-addr "$http" \
        2>"$WORK/$name.log" >/dev/null &
    SERVER=$!
    for _ in $(seq 300); do curl -fs "http://$http/readyz" >/dev/null && break; sleep 0.2; done
    curl -fs "http://$http/readyz" >/dev/null || { echo "$name did not start" >&2; tail "$WORK/$name.log" >&2; exit 1; }
    load "$door" "$grpc" "$http" "$WARM"
    callgrind_control --zero "$SERVER" >/dev/null 2>&1
    load "$door" "$grpc" "$http" "$CALLS"
    callgrind_control --dump=counted "$SERVER" >/dev/null 2>&1
    kill "$SERVER"
    wait "$SERVER" 2>/dev/null || true
    SERVER=""
    # The dump after --zero holds exactly the counted calls.
    awk -v name="$name" -v door="$door" -v n="$CALLS" '/^summary:/ { printf "%-8s %-5s %10.0f\n", name, door, $2 / n }' "$file".1
}

echo "instructions per WhoAmI call (callgrind, $CALLS calls after $WARM, every server thread)"
printf '%-8s %-5s %10s\n' build door per_call
for door in grpc rest; do
    count A "$BIN" "$door"
    if [[ -n ${BIN_B:-} ]]; then count B "$BIN_B" "$door"; fi
done
