// Every service answers /healthz, /readyz and /metrics; /readyz turns 503
// while PostgreSQL or NATS is down and 200 again once it is back, without a
// restart; SIGTERM stops a service cleanly.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import pg from 'pg';
import { startPostgres, startNats, startService, runBinary, statusOf, getJson, waitFor, sourceDir, metric } from '../lib/harness.mjs';

let pgServer;
let nats;
const services = {};

before(async () => {
  [pgServer, nats] = await Promise.all([startPostgres(), startNats()]);
  const migrated = await runBinary('api', ['migrate'], {
    RENLAYER_DATABASE_URL: pgServer.url,
    RENLAYER_MIGRATIONS_DIR: path.join(sourceDir, 'migrations'),
  });
  assert.equal(migrated.code, 0, migrated.stderr);
  const env = {
    RENLAYER_DATABASE_URL: pgServer.url,
    RENLAYER_NATS_URL: nats.url,
    RENLAYER_HEALTH_INTERVAL_MS: '100',
  };
  for (const name of ['api', 'proxy', 'trace-writer', 'session-tracker', 'insights']) {
    services[name] = await startService(name, name === 'proxy' ? { ...env, RENLAYER_SPOOL_DIR: path.join(pgServer.dir, 'spool') } : env);
  }
});

after(async () => {
  await Promise.all(Object.values(services).map((s) => s.kill()));
  await Promise.all([pgServer?.close(), nats?.close()]);
});

const ready = (svc) => statusOf(`${svc.url}/readyz`);

test('every service is alive, ready and exposes metrics', async () => {
  for (const svc of Object.values(services)) {
    assert.equal(await statusOf(`${svc.url}/healthz`), 200, svc.name);
    await waitFor(async () => (await ready(svc)) === 200, { what: `${svc.name} ready` });
    const r = await getJson(`${svc.url}/readyz`);
    assert.equal(r.body.checks.database, 'up', svc.name);
    assert.equal(r.body.checks.bus, 'up', svc.name);
    const m = await fetch(`${svc.url}/metrics`);
    const text = await m.text();
    assert.equal(m.status, 200);
    assert.match(text, /^renlayer_dependency_up\{dependency="database"\} 1$/m);
    assert.match(text, /^# TYPE (http_requests_total|renlayer_proxy_requests_total) counter$/m);
  }
});

test('the bus streams and the session-state bucket exist once services are ready', async () => {
  const { connect } = await import('nats');
  const nc = await connect({ servers: nats.url });
  try {
    const jsm = await nc.jetstreamManager();
    const names = [];
    for await (const s of jsm.streams.list()) names.push(s.config.name);
    for (const n of ['RENLAYER_DECISIONS', 'RENLAYER_TRACES', 'RENLAYER_SESSIONS', 'RENLAYER_INSIGHTS', 'KV_RENLAYER_SESSION_STATE']) {
      assert.ok(names.includes(n), `${n} in ${names}`);
    }
  } finally {
    await nc.close();
  }
});

test('PostgreSQL down turns /readyz to 503, back up turns it to 200 without a restart', async () => {
  const api = services.api;
  await waitFor(async () => (await ready(api)) === 200, { what: 'api ready' });
  await pgServer.stop();
  await waitFor(async () => (await ready(api)) === 503, { what: 'api 503 with the database down' });
  const r = await getJson(`${api.url}/readyz`);
  assert.equal(r.body.checks.database, 'down');
  assert.equal(await statusOf(`${api.url}/healthz`), 200, 'alive while not ready');
  await pgServer.start();
  await waitFor(async () => (await ready(api)) === 200, { timeout: 30000, what: 'api ready again' });
  assert.ok(api.alive());
  assert.ok(api.lines.some((l) => l.msg === 'dependency down' && l.dependency === 'database'));
});

test('nats-server down turns /readyz to 503, back up turns it to 200 without a restart', async () => {
  const tw = services['trace-writer'];
  await waitFor(async () => (await ready(tw)) === 200, { what: 'trace-writer ready' });
  await nats.stop();
  await waitFor(async () => (await ready(tw)) === 503, { what: 'trace-writer 503 with NATS down' });
  const r = await getJson(`${tw.url}/readyz`);
  assert.equal(r.body.checks.bus, 'down');
  await nats.start();
  await waitFor(async () => (await ready(tw)) === 200, { timeout: 30000, what: 'trace-writer ready again' });
  assert.ok(tw.alive());
});

// The proxy's configuration cache counts every notification and load into
// the service's metrics from its own threads: a storm of notifications runs
// across its SIGTERM so that, sanitized, a count after the registry is freed
// would show (it did, when the registry went before the cache's threads).
async function notifyStorm(url) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  let running = true;
  const loop = (async () => {
    while (running) await client.query(`SELECT pg_notify('renlayer_config', '{"table":"agents"}')`);
  })();
  return async () => {
    running = false;
    await loop;
    await client.end();
  };
}

test('SIGTERM stops every service with exit code 0 (and, sanitized, without leaks)', async () => {
  for (const svc of Object.values(services)) {
    let stopStorm = null;
    if (svc.name === 'proxy') {
      const series = 'renlayer_proxy_config_notifications_total';
      const before = await metric(svc, series);
      stopStorm = await notifyStorm(pgServer.url);
      await waitFor(async () => (await metric(svc, series)) > before + 20, { what: 'the proxy counting notifications' });
    }
    const code = await svc.stop('SIGTERM');
    await stopStorm?.();
    assert.equal(code, 0, `${svc.name} exit code\n${svc.logText().slice(-2000)}`);
    assert.ok(svc.lines.some((l) => l.msg === 'shutting down'), svc.name);
  }
});

test('a service starts while its dependencies are down and becomes ready when they come up', async () => {
  const { startPostgres: sp, startNats: sn } = await import('../lib/harness.mjs');
  const [p2, n2] = await Promise.all([sp(), sn()]);
  await Promise.all([p2.stop(), n2.stop()]);
  const svc = await startService('session-tracker', {
    RENLAYER_DATABASE_URL: p2.url,
    RENLAYER_NATS_URL: n2.url,
    RENLAYER_HEALTH_INTERVAL_MS: '100',
  });
  try {
    assert.equal(await ready(svc), 503);
    await Promise.all([p2.start(), n2.start()]);
    await waitFor(async () => (await ready(svc)) === 200, { timeout: 30000, what: 'ready after dependencies came up' });
  } finally {
    await svc.kill();
    await Promise.all([p2.close(), n2.close()]);
  }
});

test('bad configuration exits with every problem named', async () => {
  const r = await runBinary('trace-writer', [], {
    RENLAYER_DATABASE_URL: 'mysql://nope',
    RENLAYER_LOG_LEVEL: 'loud',
    RENLAYER_HEALTH_INTERVAL_MS: '-5',
  });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /RENLAYER_DATABASE_URL: must be a URL with scheme postgres,postgresql/);
  assert.match(r.stderr, /RENLAYER_LOG_LEVEL: must be one of/);
  assert.match(r.stderr, /RENLAYER_HEALTH_INTERVAL_MS: must be between 50 and 60000/);
});

test('the README configuration table names every setting of every service', async () => {
  const readme = await (await import('node:fs/promises')).readFile(path.join(sourceDir, 'README.md'), 'utf8');
  for (const name of ['api', 'proxy', 'trace-writer', 'session-tracker', 'insights']) {
    const r = await runBinary(name, ['--help-config'], {});
    assert.equal(r.code, 0, name);
    const vars = [...r.stdout.matchAll(/^\| `(RENLAYER_[A-Z_]+)` \|/gm)].map((m) => m[1]);
    assert.ok(vars.length >= 5, name);
    for (const v of vars) assert.ok(readme.includes(`\`${v}\``), `${v} (${name}) is missing from the README`);
  }
});

test('--help-config prints the settings table', async () => {
  const r = await runBinary('api', ['--help-config'], {});
  assert.equal(r.code, 0);
  assert.match(r.stdout, /\| `RENLAYER_DATABASE_URL` \|/);
  assert.match(r.stdout, /\| `RENLAYER_SECRET_KEY` \|/);
});
