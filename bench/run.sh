#!/usr/bin/env bash
# Runs every benchmark against a fresh release server on this machine and prints the figures
# that go into docs/benchmarks.md. Needs wrk (apt-get install wrk). The memory footprint needs a
# fresh server of its own: bench/memory.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
cargo build --release -p copains -p copains-bench
BIN=${CARGO_TARGET_DIR:-target}/release
WORK=$(mktemp -d)
PORT=${PORT:-18181}
URL=http://127.0.0.1:$PORT
ulimit -n "$(ulimit -Hn)"
# Auth rate limits are raised: the benchmarks log in far more often than a person would. All
# their clients come from one address, and the idle-connection benchmark opens ten gateway
# sessions per account: the gateway's per-address IDENTIFY limit and session caps are raised.
# The voice room's 101 clients share the machine with the server: a voice peer may take longer
# than the 15 s connect timeout to finish ICE and DTLS.
COPAINS_API__RATE_LIMITS__AUTH_BURST=1000000 COPAINS_API__RATE_LIMITS__AUTH_PER_MINUTE=1000000 \
COPAINS_API__RATE_LIMITS__MESSAGES_BURST=1000000 COPAINS_API__RATE_LIMITS__BUNDLE_FETCHES_BURST=1000000 \
COPAINS_API__RATE_LIMITS__USER_WRITES_BURST=1000000 \
COPAINS_API__RATE_LIMITS__IDENTIFY_PER_IP_BURST=1000000 COPAINS_API__RATE_LIMITS__IDENTIFY_PER_IP_PER_MINUTE=1000000 \
COPAINS_GATEWAY__MAX_SESSIONS_PER_DEVICE=1000 COPAINS_GATEWAY__MAX_SESSIONS_PER_USER=1000 \
COPAINS_GATEWAY__VOICE__CONNECT_TIMEOUT_MS=120000 \
COPAINS_LOG=warn "$BIN/copains" serve --bind 127.0.0.1:$PORT --data-dir "$WORK/data" >"$WORK/server.log" 2>&1 &
PID=$!
trap 'kill -TERM $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do curl -sf "$URL/readyz" >/dev/null && break; sleep 0.1; done
curl -sf "$URL/readyz" >/dev/null || { cat "$WORK/server.log"; exit 1; }

echo "== login (argon2id) latency"
"$BIN/copains-bench" --url "$URL" login --n "${LOGINS:-60}"

echo "== GET /api/v1/users/@me throughput (wrk, 2 threads, 64 connections, 5 × 10 s)"
TOKEN=$("$BIN/copains-bench" --url "$URL" token)
# Five runs: the machine is shared and noisy; quote the median.
for _ in 1 2 3 4 5; do
  wrk -t2 -c64 -d10s -H "Authorization: Bearer $TOKEN" "$URL/api/v1/users/@me" | grep -E "Requests/sec|Latency "
done

echo "== device linking (code entered → first message readable; verifying a list of 10 devices)"
"$BIN/copains-bench" --url "$URL" link --rounds "${LINKS:-20}"

echo "== end-to-end encrypted DMs"
for rate in ${RATES:-1000 500}; do
  "$BIN/copains-bench" --url "$URL" dm --pid $PID --pairs "${PAIRS:-100}" --rate "$rate" --seconds "${SECONDS_OF_LOAD:-10}"
done

echo "== memory per idle gateway connection"
"$BIN/copains-bench" --url "$URL" gateway-idle --pid $PID --connections "${CONNECTIONS:-10000}" --accounts "${ACCOUNTS:-1000}"

echo "== channel fan-out (one message to every connected member: 10, 100, 1,000 sessions)"
"$BIN/copains-bench" --url "$URL" channel-fanout --sizes "${FANOUT_SIZES:-10,100,1000}" --messages "${FANOUT_MESSAGES:-100}"

echo "== Sender Keys: a new device's first message into a channel of 1,000, and the rotation after a kick in one of 100"
"$BIN/copains-bench" --url "$URL" channel-first-message --members "${FIRST_MEMBERS:-1000}" --rounds "${FIRST_ROUNDS:-5}"
"$BIN/copains-bench" --url "$URL" channel-rotation --members "${ROTATION_MEMBERS:-100}" --rounds "${ROTATION_ROUNDS:-10}"

echo "== private search over 100,000 messages in a client's local store (no server)"
"$BIN/copains-bench" search --messages "${SEARCH_MESSAGES:-100000}"

echo "== presence fan-out: one member of 1,000 comes online; then 100 together"
"$BIN/copains-bench" --url "$URL" presence --members "${PRESENCE_MEMBERS:-1000}" --rounds 10 --crowd 100 --server-pid $PID

echo "== sustained channel messages per second (SQLite)"
"$BIN/copains-bench" --url "$URL" channel-throughput --senders "${SENDERS:-32}" --seconds "${SECONDS_OF_LOAD:-10}"

echo "== SFU: one publisher to N listeners (in this process, no server)"
"$BIN/copains-bench" sfu-fanout --subscribers "${SFU_SIZES:-10,50,100,200}" --seconds "${SFU_SECONDS:-10}"

echo "== an E2EE voice room of 100 through the server: 5 talk, 2 share a screen; re-keying after a leave and a join"
"$BIN/copains-bench" --url "$URL" voice-room --size "${ROOM_SIZE:-100}" --speakers 5 --screens 2 --seconds "${SFU_SECONDS:-10}" --server-pid $PID

if [ -n "${COPAINS_BENCH_POSTGRES_URL:-}" ]; then
  echo "== sustained channel messages per second (PostgreSQL: $COPAINS_BENCH_POSTGRES_URL)"
  PG_PORT=$((PORT + 1))
  COPAINS_API__RATE_LIMITS__AUTH_BURST=1000000 COPAINS_API__RATE_LIMITS__AUTH_PER_MINUTE=1000000 \
  COPAINS_API__RATE_LIMITS__MESSAGES_BURST=1000000 \
  COPAINS_API__RATE_LIMITS__IDENTIFY_PER_IP_BURST=1000000 COPAINS_API__RATE_LIMITS__IDENTIFY_PER_IP_PER_MINUTE=1000000 \
  COPAINS_DATABASE_URL="$COPAINS_BENCH_POSTGRES_URL" \
  COPAINS_LOG=warn "$BIN/copains" serve --bind 127.0.0.1:$PG_PORT --data-dir "$WORK/pgdata" >"$WORK/server-pg.log" 2>&1 &
  PG_PID=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PG_PORT/readyz" >/dev/null && break; sleep 0.1; done
  "$BIN/copains-bench" --url "http://127.0.0.1:$PG_PORT" channel-throughput --senders "${SENDERS:-32}" --seconds "${SECONDS_OF_LOAD:-10}"
  kill -TERM $PG_PID; wait $PG_PID 2>/dev/null || true
fi
