#!/usr/bin/env bash
# Memory footprint of `copains serve`: starts a fresh release server and runs
# `copains-bench memory` against it (idle, 1,000 sign-ups and 1,000 logins at concurrency 50,
# then 1,000 gateway connections online with 100 DMs/s for 60 s), sampling the server's RSS.
# Writes docs/memory-footprint.svg (SVG=… to change) and prints the figures of
# docs/benchmarks.md § Memory footprint. SERVER_ENV="NAME=value …" adds variables to the
# server's environment (e.g. LD_PRELOAD of another allocator, to compare).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p copains -p copains-bench
BIN=${CARGO_TARGET_DIR:-target}/release
WORK=$(mktemp -d)
PORT=${PORT:-18182}
URL=http://127.0.0.1:$PORT
ulimit -n "$(ulimit -Hn)"
# As in run.sh: all clients share one address, so the per-address limits are raised.
env ${SERVER_ENV:-} \
COPAINS_API__RATE_LIMITS__AUTH_BURST=1000000 COPAINS_API__RATE_LIMITS__AUTH_PER_MINUTE=1000000 \
COPAINS_API__RATE_LIMITS__MESSAGES_BURST=1000000 COPAINS_API__RATE_LIMITS__BUNDLE_FETCHES_BURST=1000000 \
COPAINS_API__RATE_LIMITS__IDENTIFY_PER_IP_BURST=1000000 COPAINS_API__RATE_LIMITS__IDENTIFY_PER_IP_PER_MINUTE=1000000 \
COPAINS_LOG=warn "$BIN/copains" serve --bind 127.0.0.1:$PORT --data-dir "$WORK/data" >"$WORK/server.log" 2>&1 &
PID=$!
trap 'kill -TERM $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do curl -sf "$URL/readyz" >/dev/null && break; sleep 0.1; done
curl -sf "$URL/readyz" >/dev/null || { cat "$WORK/server.log"; exit 1; }
"$BIN/copains-bench" --url "$URL" memory --pid $PID --svg "${SVG:-docs/memory-footprint.svg}" ${CSV:+--csv "$CSV"} "$@"
