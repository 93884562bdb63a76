/**
 * Starts the real server for the browser tests: the release `copains` binary (built
 * beforehand, as is the web client: this setup builds nothing), on a free port, with a
 * fresh data directory, serving web/dist. Stops it and removes the data afterwards.
 */

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir, homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const WEB = resolve(dirname(fileURLToPath(import.meta.url)), '..');
/** The platform admin every run starts with (see `copains admin create-admin`). */
export const E2E_ADMIN = 'platformadmin';
/** A second one, for a test whose admin signs in first from its own browser. */
export const E2E_ADMIN_2 = 'platformadmin2';
export const E2E_ADMIN_PASSWORD = 'correct horse battery';
const ROOT = resolve(WEB, '..');

function serverBinary(): string {
  const candidates = [
    process.env.COPAINS_BIN,
    process.env.CARGO_TARGET_DIR && join(process.env.CARGO_TARGET_DIR, 'release', 'copains'),
    join(homedir(), '.cache', 'copains', 'target', 'release', 'copains'),
    join(ROOT, 'target', 'release', 'copains'),
  ].filter((p): p is string => Boolean(p));
  const found = candidates.find((p) => existsSync(p));
  if (!found) {
    throw new Error(
      `No copains binary (looked at ${candidates.join(', ')}). Build it first: cargo build --release --locked -p copains (or set COPAINS_BIN).`,
    );
  }
  return found;
}

function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      srv.close(() => resolvePort(port));
    });
  });
}

async function waitReady(base: string, child: ChildProcess, deadlineMs: number): Promise<void> {
  const until = Date.now() + deadlineMs;
  let last = '';
  while (Date.now() < until) {
    if (child.exitCode !== null) throw new Error(`copains exited with ${child.exitCode} before it was ready`);
    try {
      const res = await fetch(`${base}/readyz`);
      if (res.ok) return;
      last = `status ${res.status}`;
    } catch (e) {
      last = String(e);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`copains was not ready within ${deadlineMs} ms (${last})`);
}

export default async function globalSetup(): Promise<() => Promise<void>> {
  const dist = join(WEB, 'dist');
  if (!existsSync(join(dist, 'index.html'))) throw new Error('web/dist is missing: run `npm run build` first.');
  const binary = serverBinary();
  const port = await freePort();
  const data = mkdtempSync(join(tmpdir(), 'copains-e2e-'));
  const base = `http://127.0.0.1:${port}`;
  mkdirSync(join(WEB, 'test-results'), { recursive: true });
  const log = createWriteStream(join(WEB, 'test-results', 'server.log'), { flags: 'w' });
  const child = spawn(binary, ['serve', '--bind', `127.0.0.1:${port}`, '--data-dir', data], {
    cwd: data,
    env: {
      // The server reads every COPAINS_* variable as configuration: pass none of the test
      // runner's own (COPAINS_BIN, COPAINS_TEST_DATABASE_URL…).
      ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('COPAINS_'))),
      COPAINS_WEB__DIR: dist,
      COPAINS_LOG_FORMAT: 'text',
      // The SFU on a free loopback port (a platform already running here may hold the default).
      COPAINS_GATEWAY__VOICE__UDP_BIND: '127.0.0.1:0',
      // Many sign-ups and logins from one address in a few minutes: lift the per-address budget.
      COPAINS_API__RATE_LIMITS__AUTH_BURST: '1000',
      COPAINS_API__RATE_LIMITS__AUTH_PER_MINUTE: '6000',
      COPAINS_API__RATE_LIMITS__IDENTIFY_PER_IP_BURST: '1000',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout?.pipe(log);
  child.stderr?.pipe(log);
  await waitReady(base, child, 30_000);
  process.env.COPAINS_E2E_BASE_URL = base;
  // A platform admin, made as an operator makes one: the command line, the password on
  // standard input. It signs in from a browser like anyone (its first device).
  const cleanEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('COPAINS_')));
  for (const name of [E2E_ADMIN, E2E_ADMIN_2]) {
    execFileSync(binary, ['admin', 'create-admin', name], {
      cwd: data,
      env: { ...cleanEnv, COPAINS_DATA_DIR: data },
      input: `${E2E_ADMIN_PASSWORD}\n`,
      stdio: ['pipe', 'ignore', 'inherit'],
    });
  }

  return async () => {
    if (child.exitCode === null) {
      child.kill('SIGTERM');
      await new Promise<void>((r) => {
        const timer = setTimeout(() => {
          child.kill('SIGKILL');
          r();
        }, 15_000);
        child.once('exit', () => {
          clearTimeout(timer);
          r();
        });
      });
    }
    log.end();
    rmSync(data, { recursive: true, force: true });
  };
}
