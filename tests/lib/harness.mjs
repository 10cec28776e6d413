// Test harness: real PostgreSQL and nats-server instances in temp folders on
// free ports, the built service binaries, and polling helpers. Every test file
// starts what it needs and closes it in an `after` hook, so files run in
// parallel without sharing state.
import { spawn, execFile, execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));
export const sourceDir = process.env.RL_SOURCE_DIR || path.resolve(here, '../..');
export const buildDir = process.env.RL_BUILD_DIR || path.join(sourceDir, 'build');
const harnessDir = path.join(sourceDir, 'tests/harness');

/* Test servers listen below the kernel's ephemeral range (32768-60999 on
 * Debian): a port the kernel hands out for listen(0) is also what it hands
 * out as the source port of outgoing connections, and the parallel tests make
 * thousands, so such a port could be taken again before the server binds it
 * (CI saw PostgreSQL fail to start that way). */
const PORT_LOW = 20000;
const PORT_HIGH = 32767;

function tryListen(port) {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/** Resolves to a TCP port on 127.0.0.1, outside the ephemeral range, that nothing listens on now. */
export async function freePort() {
  for (let i = 0; i < 200; i++) {
    const port = PORT_LOW + Math.floor(Math.random() * (PORT_HIGH - PORT_LOW + 1));
    if (await tryListen(port)) return port;
  }
  throw new Error('freePort: no free port found');
}

/* A server's first start on a fresh port: another test may have picked the
 * same port in between (rare, two random picks), so a failed first start
 * gets two more ports before it is an error. */
async function firstStart(server, attempts = 3) {
  for (let i = 1; ; i++) {
    try {
      await server.start();
      return;
    } catch (e) {
      if (i >= attempts) throw e;
      server.setPort(await freePort());
    }
  }
}

/** Polls fn until it returns a truthy value (returned) or the deadline passes (throws). */
export async function waitFor(fn, { timeout = 15000, interval = 50, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let lastErr;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      lastErr = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}${lastErr ? `: ${lastErr.message}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}

// Servers still running when the test process exits (a failed assertion in a
// before hook, an uncaught error) are stopped synchronously on the way out.
const running = new Set();
process.on('exit', () => {
  for (const stopSync of running) {
    try {
      stopSync();
    } catch {
      /* best effort */
    }
  }
});

// A test runner's timeout sends SIGTERM: exit normally so the hook above runs.
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => process.exit(128 + (sig === 'SIGTERM' ? 15 : 2)));
}

async function tempDir(prefix) {
  return mkdtemp(path.join(tmpdir(), `renlayer-${prefix}-`));
}

/** A private PostgreSQL cluster. stop()/start() keep its data; close() removes it. */
export async function startPostgres() {
  const dir = await tempDir('pg');
  const port = await freePort();
  const data = path.join(dir, 'data');
  const stopSync = () => execFileSync('bash', [path.join(harnessDir, 'pg.sh'), 'stop', data]);
  await run('bash', [path.join(harnessDir, 'pg.sh'), 'init', data]);
  const pg = {
    dir,
    port,
    url: `postgresql://renlayer@127.0.0.1:${port}/postgres`,
    running: false,
    setPort(p) {
      pg.port = p;
      pg.url = `postgresql://renlayer@127.0.0.1:${p}/postgres`;
    },
    async start() {
      await run('bash', [path.join(harnessDir, 'pg.sh'), 'start', data, String(pg.port)], {
        env: { ...process.env, RL_PG_FSYNC: 'off' },
      });
      pg.running = true;
      running.add(stopSync);
    },
    async stop() {
      await run('bash', [path.join(harnessDir, 'pg.sh'), 'stop', data]);
      pg.running = false;
      running.delete(stopSync);
    },
    async close() {
      if (pg.running) await pg.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
  await firstStart(pg);
  return pg;
}

/** A private nats-server with JetStream. stop()/start() keep its store; close() removes it. */
export async function startNats() {
  const dir = await tempDir('nats');
  const port = await freePort();
  const stopSync = () => execFileSync('bash', [path.join(harnessDir, 'nats.sh'), 'stop', dir]);
  const signal = async (sig) => process.kill(Number(await readFile(path.join(dir, 'nats.pid'), 'utf8')), sig);
  const nats = {
    dir,
    port,
    url: `nats://127.0.0.1:${port}`,
    running: false,
    setPort(p) {
      nats.port = p;
      nats.url = `nats://127.0.0.1:${p}`;
    },
    async start() {
      await run('bash', [path.join(harnessDir, 'nats.sh'), 'start', dir, String(nats.port)]);
      nats.running = true;
      running.add(stopSync);
    },
    async stop() {
      await run('bash', [path.join(harnessDir, 'nats.sh'), 'stop', dir]);
      nats.running = false;
      running.delete(stopSync);
    },
    /** Freezes the server (SIGSTOP): connections stay open, nothing answers. */
    pause: () => signal('SIGSTOP'),
    resume: () => signal('SIGCONT'),
    async close() {
      if (nats.running) await nats.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
  await firstStart(nats);
  return nats;
}

const binaries = {
  proxy: 'services/proxy/renlayer-proxy',
  api: 'services/api/renlayer-api',
  'trace-writer': 'services/trace-writer/renlayer-trace-writer',
  'session-tracker': 'services/session-tracker/renlayer-session-tracker',
  insights: 'services/insights/renlayer-insights',
};

/** Path of a built service binary ("api", "proxy", ...). */
export function binary(name) {
  return path.join(buildDir, binaries[name]);
}

/** A fixed test secret (hex, 32 bytes) shared by the services of one test. */
export const testSecretKey = '7f'.repeat(32);

/**
 * Runs a binary to completion (e.g. `renlayer-api migrate`) and resolves to
 * {code, stdout, stderr}. Rejects when it does not exit within timeout.
 */
export function runBinary(name, args, env = {}, { timeout = 60000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(binary(name), args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${name} ${args.join(' ')} did not exit within ${timeout} ms\n${stderr}`));
    }, timeout);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? signal, stdout, stderr });
    });
  });
}

/**
 * Starts a long-running service with RENLAYER_LISTEN_ADDR on a free port and
 * resolves once it logs "listening". The result exposes url, its log lines
 * (parsed JSON), stop(signal) resolving to the exit code, and kill().
 */
export async function startService(name, env = {}, { readyTimeout = 20000 } = {}) {
  const port = env.RENLAYER_LISTEN_ADDR ? Number(env.RENLAYER_LISTEN_ADDR.split(':').pop()) : await freePort();
  const child = spawn(binary(name), [], {
    env: {
      ...process.env,
      RENLAYER_LOG_LEVEL: 'debug',
      RENLAYER_SECRET_KEY: testSecretKey,
      RENLAYER_LISTEN_ADDR: `127.0.0.1:${port}`,
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines = [];
  const raw = [];
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve(code ?? signal)));
  const onData = (buf) => {
    for (const text of buf.toString().split('\n')) {
      if (!text) continue;
      raw.push(text);
      try {
        lines.push(JSON.parse(text));
      } catch {
        lines.push({ msg: text, unparsed: true });
      }
    }
  };
  let pending = '';
  child.stderr.on('data', (d) => {
    pending += d;
    const i = pending.lastIndexOf('\n');
    if (i >= 0) {
      onData(pending.slice(0, i));
      pending = pending.slice(i + 1);
    }
  });
  child.stdout.on('data', (d) => raw.push(d.toString()));
  let alive = true;
  const killSync = () => child.kill('SIGKILL');
  running.add(killSync);
  let stopping = false;
  exited.then((code) => {
    alive = false;
    running.delete(killSync);
    if (!stopping) {
      process.stderr.write(`\n[harness] ${name} exited unexpectedly (${code}); last log lines:\n${raw.slice(-80).join('\n')}\n`);
    }
  });
  const svc = {
    name,
    port,
    url: `http://127.0.0.1:${port}`,
    child,
    lines,
    logText: () => raw.join('\n'),
    alive: () => alive,
    exited,
    async stop(signal = 'SIGTERM', timeout = 15000) {
      if (!alive) return exited;
      stopping = true;
      child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), timeout);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
    kill() {
      stopping = true;
      if (alive) child.kill('SIGKILL');
      return exited;
    },
  };
  try {
    await waitFor(() => {
      if (!alive) throw new Error(`${name} exited early:\n${svc.logText()}`);
      return lines.some((l) => l.msg === 'listening');
    }, { timeout: readyTimeout, what: `${name} to listen` });
  } catch (e) {
    await svc.kill();
    throw e;
  }
  return svc;
}

/** GET url and resolve to {status, body} (body parsed as JSON when possible). */
export async function getJson(url, options = {}) {
  const res = await fetch(url, options);
  const text = await res.text();
  let body = text;
  try {
    body = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: res.status, headers: res.headers, body };
}

/** Resolves to the HTTP status of GET url, or 0 when nothing answers. */
export async function statusOf(url) {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
    await res.arrayBuffer();
    return res.status;
  } catch {
    return 0;
  }
}

/** The value of one series (name and labels, as printed) of a service's /metrics; 0 when absent. */
export async function metric(service, series) {
  const text = await (await fetch(`${service.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}
