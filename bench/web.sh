#!/usr/bin/env bash
# The web client's figures: bytes (gzip) of the sign-in screen and after sign-in, time to an
# interactive sign-in form and from sign-in to the DM list, and browser-to-browser DM latency
# (p50, p95 over 100 messages), in Debian's headless Chromium against a release
# `copains serve` on loopback. Runs web/e2e/measure.spec.ts RUNS times (default 3) and prints
# each run's figures and the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}"
COPAINS_SETUP_BROWSER=1 scripts/setup
scripts/build-web
cargo build --release --locked -p copains
runs="${RUNS:-3}"
out="$(mktemp -d)"
for i in $(seq "$runs"); do
  (cd web && COPAINS_BIN="$target/release/copains" npx playwright test e2e/measure.spec.ts --reporter=line >/dev/null)
  cp web/test-results/measurements.json "$out/run$i.json"
done
node - "$out" <<'JS'
const fs = require('node:fs');
const dir = process.argv[2];
const runs = fs.readdirSync(dir).map((f) => JSON.parse(fs.readFileSync(`${dir}/${f}`, 'utf8')));
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
const row = (name, pick, unit) => console.log(`${name.padEnd(40)} ${runs.map(pick).join(' / ').padEnd(28)} median ${median(runs.map(pick))} ${unit}`);
row('sign-in screen (gzip)', (r) => r.sign_in_screen_bytes, 'B');
row('after sign-in, app + engine (gzip)', (r) => r.after_sign_in_app_bytes, 'B');
row('navigation to sign-in form', (r) => r.navigation_to_sign_in_form_ms, 'ms');
row('sign-in to DM list', (r) => r.sign_in_to_dm_list_ms, 'ms');
row('sign-up to DM list', (r) => r.sign_up_to_dm_list_ms, 'ms');
row('DM latency p50 (100 messages)', (r) => r.dm_latency_ms.p50, 'ms');
row('DM latency p95 (100 messages)', (r) => r.dm_latency_ms.p95, 'ms');
JS
