// renlayer-trace-writer against real PostgreSQL and nats-server: messages
// published to JetStream in the v1 shape of docs/bus.md land in the
// partitioned tables exactly once, whatever happens to the writer and the
// database meanwhile; poison messages go to renlayer.dead_letters; partitions
// are created on demand and dropped past retention.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { connect } from 'nats';
import { startPostgres, startNats, startService, runBinary, waitFor, statusOf, getJson, sourceDir, metric } from '../lib/harness.mjs';
import { uuidv7, isoMicros, makeTrace, makeDecision, traceSubject, decisionSubject, publishAll } from '../bench/writer_messages.mjs';

const DAY_MS = 86400000;
let pgServer;
let nats;
let db;
let nc;
let js;
let tenant;
const agent = '0191c9a4-7b1e-7c3a-9f1e-2b6c8d4e5f61';
const writers = [];

const writerEnv = (extra = {}) => ({
  RENLAYER_DATABASE_URL: pgServer.url,
  RENLAYER_NATS_URL: nats.url,
  RENLAYER_HEALTH_INTERVAL_MS: '100',
  RENLAYER_TRACE_ACK_WAIT_MS: '4000',
  RENLAYER_TRACE_UPKEEP_INTERVAL_S: '1',
  RENLAYER_LOG_LEVEL: 'info',
  ...extra,
});

async function startWriter(extra = {}) {
  const w = await startService('trace-writer', writerEnv(extra));
  writers.push(w);
  await waitFor(async () => (await statusOf(`${w.url}/readyz`)) === 200, { timeout: 20000, what: 'trace-writer ready' });
  return w;
}

async function count(sql, params = []) {
  const r = await db.query(sql, params);
  return Number(r.rows[0].n);
}

const traceItem = (t) => ({ subject: traceSubject(t), data: t, msgID: t.trace_id });
const decisionItem = (d) => ({ subject: decisionSubject(d), data: d, msgID: `${d.trace_id}:d` });

before(async () => {
  [pgServer, nats] = await Promise.all([startPostgres(), startNats()]);
  const migrated = await runBinary('api', ['migrate'], {
    RENLAYER_DATABASE_URL: pgServer.url,
    RENLAYER_MIGRATIONS_DIR: path.join(sourceDir, 'migrations'),
  });
  assert.equal(migrated.code, 0, migrated.stderr);
  db = new pg.Client({ connectionString: pgServer.url });
  db.on('error', () => {}); // the database restarts in some tests
  await db.connect();
  tenant = uuidv7();
  await db.query("INSERT INTO renlayer.tenants (id, name) VALUES ($1, 'trace-writer test')", [tenant]);
  await startWriter();
  nc = await connect({ servers: nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
  js = nc.jetstream();
});

after(async () => {
  await nc?.close().catch(() => {});
  await Promise.all(writers.map((w) => w.kill()));
  await db?.end().catch(() => {});
  await Promise.all([pgServer?.close(), nats?.close()]);
});

/** Reconnects the test's client after PostgreSQL restarted. */
async function reconnectDb() {
  await db.end().catch(() => {});
  db = new pg.Client({ connectionString: pgServer.url });
  db.on('error', () => {});
  await waitFor(async () => {
    try {
      await db.connect();
      return true;
    } catch {
      db = new pg.Client({ connectionString: pgServer.url });
      db.on('error', () => {});
      return false;
    }
  }, { timeout: 30000, what: 'database back' });
}

test('the documented trace and decision land in their tables, fields mapped as docs/schema.md says', async () => {
  const t = makeTrace({ tenant, agent });
  const d = makeDecision(t, { http_status: 403, status: 'DENIED' });
  await publishAll(js, [traceItem(t), decisionItem(d)]);
  const row = await waitFor(async () => (await db.query('SELECT * FROM renlayer.traces WHERE trace_id = $1', [t.trace_id])).rows[0],
    { timeout: 15000, what: 'trace row' });
  assert.equal(row.tenant_id, tenant);
  assert.equal(row.end_user, 'alice@example.com');
  assert.equal(row.session_key, 'run-2024-10-20-001');
  assert.equal(row.status, 'FLAGGED');
  assert.equal(row.http_status, 200);
  assert.deepEqual(row.policy_ids, ['0191c9a4-7b1e-7c3a-9f1e-2b6c8d4e5f64']);
  assert.equal(row.input_tokens, 1200);
  assert.equal(row.cached_input_tokens, 1024);
  assert.equal(row.total_tokens, 1285);
  assert.equal(row.cost_usd, '0.00011000');
  assert.equal(row.latency_ms, 812);
  assert.equal(row.upstream_ms, 790);
  assert.equal(row.overhead_us, 412);
  assert.equal(row.stream, false);
  assert.equal(row.truncated, false);
  assert.equal(row.started_at.toISOString(), t.started_at.replace(/\d{3}Z$/, 'Z'));
  assert.deepEqual(row.attempts, t.attempts);
  assert.equal(row.request_body, t.request_body);
  assert.equal(row.response_body, t.response_body, 'newlines, tabs and backslashes survive COPY');
  const us = await db.query("SELECT to_char(started_at AT TIME ZONE 'UTC', 'US') AS us FROM renlayer.traces WHERE trace_id = $1", [t.trace_id]);
  assert.equal(us.rows[0].us, t.started_at.slice(20, 26), 'microseconds kept');

  const f = (await db.query('SELECT * FROM renlayer.dlp_findings WHERE trace_id = $1', [t.trace_id])).rows;
  assert.equal(f.length, 1);
  assert.deepEqual([f[0].ordinal, f[0].detector, f[0].severity, f[0].location, f[0].action], [0, 'EMAIL', 'medium', 'request', 'redact']);
  const tc = (await db.query("SELECT *, encode(args_sha256, 'hex') AS sha FROM renlayer.tool_calls WHERE trace_id = $1", [t.trace_id])).rows;
  assert.equal(tc.length, 1);
  assert.deepEqual([tc[0].name, tc[0].call_id, tc[0].phase, tc[0].sha, tc[0].session_key],
    ['get_weather', 'call_Xk2fQ9', 'requested', t.tool_calls[0].args_sha256, 'run-2024-10-20-001']);

  const dr = await waitFor(async () => (await db.query('SELECT * FROM renlayer.decisions WHERE trace_id = $1', [t.trace_id])).rows[0],
    { timeout: 15000, what: 'decision row' });
  assert.equal(dr.status, 'DENIED');
  assert.equal(dr.http_status, 403);
  assert.equal(dr.policy_id, '0191c9a4-7b1e-7c3a-9f1e-2b6c8d4e5f64');
  assert.equal(dr.reason, d.reason);
  assert.equal(dr.started_at.getTime(), row.started_at.getTime());
});

test('a redelivered message changes nothing', async () => {
  const w = writers[0];
  const t = makeTrace({ tenant, agent, usage: null, cost_usd: null, tool_calls: [], dlp_findings: [] });
  const written0 = await metric(w, 'renlayer_trace_writer_messages_written_total{stream="traces"}');
  await publishAll(js, [traceItem(t)]);
  const first = await waitFor(async () => (await db.query('SELECT written_at FROM renlayer.traces WHERE trace_id = $1', [t.trace_id])).rows[0],
    { what: 'first write' });
  // the row is visible once committed, the counters move just after: wait for them
  // (rows_inserted is counted before messages_written)
  await waitFor(async () => (await metric(w, 'renlayer_trace_writer_messages_written_total{stream="traces"}')) >= written0 + 1,
    { what: 'the first write counted' });
  const inserted = await metric(w, 'renlayer_trace_writer_rows_inserted_total{table="traces"}');
  const written = await metric(w, 'renlayer_trace_writer_messages_written_total{stream="traces"}');
  // the same bytes again, under another message id so the stream stores them twice
  await publishAll(js, [{ subject: traceSubject(t), data: t, msgID: `${t.trace_id}-again` }]);
  await waitFor(async () => (await metric(w, 'renlayer_trace_writer_messages_written_total{stream="traces"}')) >= written + 1,
    { what: 'the second copy processed' });
  assert.equal(await metric(w, 'renlayer_trace_writer_rows_inserted_total{table="traces"}'), inserted, 'no row inserted');
  const rows = (await db.query('SELECT written_at, input_tokens FROM renlayer.traces WHERE trace_id = $1', [t.trace_id])).rows;
  assert.equal(rows.length, 1);
  assert.equal(rows[0].written_at.getTime(), first.written_at.getTime(), 'row untouched');
  assert.equal(rows[0].input_tokens, 0, 'usage null is 0');
});

test('poison messages go to dead_letters with a reason and the stream keeps flowing', async () => {
  const w = writers[0];
  const ms = Date.now();
  const good = makeTrace({ tenant, agent });
  const wrongType = makeTrace({ tenant, agent, http_status: '200' });
  const missing = makeTrace({ tenant, agent });
  delete missing.started_at;
  const mismatch = makeTrace({ tenant, agent, trace_id: uuidv7(ms - 3 * 3600000) });
  const unknownTenant = makeTrace({ tenant: uuidv7(), agent });
  const v2 = { ...makeTrace({ tenant, agent }), v: 2 };
  const items = [
    { subject: `renlayer.traces.${tenant}.${agent}`, data: '{"v":1, "trace_id": ', msgID: 'bad-json' },
    traceItem(v2),
    traceItem(wrongType),
    traceItem(missing),
    traceItem(mismatch),
    traceItem(unknownTenant),
    traceItem(good),
  ];
  const before = await count('SELECT count(*) AS n FROM renlayer.dead_letters');
  await publishAll(js, items, { window: 1 }); // in order
  await waitFor(async () => (await count('SELECT count(*) AS n FROM renlayer.traces WHERE trace_id = $1', [good.trace_id])) === 1,
    { what: 'the good trace after the poison ones' });
  await waitFor(async () => (await count('SELECT count(*) AS n FROM renlayer.dead_letters')) === before + 6, { what: 'six dead letters' });
  const dl = (await db.query('SELECT * FROM renlayer.dead_letters ORDER BY stream_seq DESC LIMIT 6')).rows.reverse();
  const reasons = dl.map((r) => r.reason.split(':')[0]);
  assert.deepEqual(reasons, ['invalid_json', 'unsupported_version', 'invalid_field', 'invalid_field', 'trace_id_mismatch', 'unknown_tenant']);
  assert.match(dl[2].reason, /http_status: must be an integer/);
  assert.match(dl[3].reason, /started_at: missing/);
  assert.equal(dl[0].payload.toString(), '{"v":1, "trace_id": ', 'payload verbatim');
  assert.equal(dl[0].msg_id, 'bad-json');
  assert.equal(dl[0].consumer, 'trace-writer');
  assert.equal(dl[0].stream, 'RENLAYER_TRACES');
  assert.equal(dl[0].subject, `renlayer.traces.${tenant}.${agent}`);
  assert.equal(dl[0].tenant_id, null);
  assert.equal(dl[2].tenant_id, tenant);
  for (const t of [v2, wrongType, missing, mismatch, unknownTenant]) {
    assert.equal(await count('SELECT count(*) AS n FROM renlayer.traces WHERE trace_id = $1', [t.trace_id]), 0);
  }
  assert.equal(await metric(w, 'renlayer_trace_writer_dead_letters_total{reason="invalid_field"}'), 2);
  assert.equal(await metric(w, 'renlayer_trace_writer_dead_letters_total{reason="invalid_json"}'), 1);
  assert.equal(await metric(w, 'renlayer_trace_writer_dead_letters_total{reason="unsupported_version"}'), 1);
  assert.equal(await metric(w, 'renlayer_trace_writer_dead_letters_total{reason="unknown_tenant"}'), 1);
  // a poison decision too
  await publishAll(js, [{ subject: decisionSubject(good), data: { ...makeDecision(good), decided_at: 'yesterday' }, msgID: 'bad-decision' }]);
  await waitFor(async () => (await count("SELECT count(*) AS n FROM renlayer.dead_letters WHERE stream = 'RENLAYER_DECISIONS'")) === 1,
    { what: 'dead decision' });
});

test('a bus message of several lines: a row per line, a bad line dead-lettered alone, the message acked', async () => {
  const w = writers[0];
  const a = makeTrace({ tenant, agent });
  const b = makeTrace({ tenant, agent });
  const v2 = { ...makeTrace({ tenant, agent }), v: 2 };
  const written = await metric(w, 'renlayer_trace_writer_messages_written_total{stream="traces"}');
  const data = [a, v2, b].map((t) => JSON.stringify(t)).join('\n') + '\n';
  await publishAll(js, [{ subject: traceSubject(a), data, msgID: a.trace_id }]);
  await waitFor(async () => (await count('SELECT count(*) AS n FROM renlayer.traces WHERE trace_id = ANY($1)', [[a.trace_id, b.trace_id]])) === 2,
    { what: 'both good lines written' });
  const dl = await waitFor(async () => (await db.query('SELECT * FROM renlayer.dead_letters WHERE payload = $1', [Buffer.from(JSON.stringify(v2))])).rows[0],
    { what: 'the bad line dead-lettered' });
  assert.match(dl.reason, /^unsupported_version/);
  assert.equal(dl.msg_id, a.trace_id, 'the message it came in');
  assert.equal(await count('SELECT count(*) AS n FROM renlayer.traces WHERE trace_id = $1', [v2.trace_id]), 0);
  await waitFor(async () => (await metric(w, 'renlayer_trace_writer_messages_written_total{stream="traces"}')) === written + 2,
    { what: 'two lines counted' });
  // acked once and for all: nothing pending on the durable consumer
  const jsm = await nc.jetstreamManager();
  await waitFor(async () => {
    const ci = await jsm.consumers.info('RENLAYER_TRACES', 'trace-writer-traces');
    return ci.num_ack_pending === 0 && ci.num_pending === 0;
  }, { what: 'the message acked' });
  // decisions come batched the same way
  const d1 = makeDecision(a);
  const d2 = makeDecision(b);
  await publishAll(js, [{ subject: decisionSubject(a), data: `${JSON.stringify(d1)}\n${JSON.stringify(d2)}`, msgID: `${a.trace_id}:d` }]);
  await waitFor(async () => (await count('SELECT count(*) AS n FROM renlayer.decisions WHERE trace_id = ANY($1)', [[a.trace_id, b.trace_id]])) === 2,
    { what: 'both decisions written' });
});

test('a row the database refuses is isolated from its batch and dead-lettered alone', async () => {
  // a session id too long for the btree index on session_key (SQLSTATE 54000):
  // the writer cannot know in advance, the batch is split until it stands alone
  const long = randomBytes(6000).toString('base64');
  const batch = Array.from({ length: 40 }, () => makeTrace({ tenant, agent }));
  const bad = makeTrace({ tenant, agent, session_id: long });
  batch.splice(17, 0, bad);
  await publishAll(js, batch.map(traceItem));
  await waitFor(async () => (await count('SELECT count(*) AS n FROM renlayer.traces WHERE trace_id = ANY($1)', [batch.map((t) => t.trace_id)])) === 40,
    { what: 'the 40 good traces' });
  const dl = await waitFor(async () => (await db.query('SELECT reason FROM renlayer.dead_letters WHERE msg_id = $1', [bad.trace_id])).rows[0],
    { what: 'the refused trace dead-lettered' });
  assert.match(dl.reason, /^db_rejected: SQLSTATE 54000/);
});

test('a trace for a day without a partition is written once its day is created', async () => {
  const ms = Date.now() - 20 * DAY_MS; // within retention (30 days), before the migration's days
  const day = new Date(ms).toISOString().slice(0, 10).replaceAll('-', '');
  assert.equal((await db.query('SELECT to_regclass($1) AS r', [`renlayer.traces_p${day}`])).rows[0].r, null);
  const t = makeTrace({ tenant, agent, ms });
  await publishAll(js, [traceItem(t), decisionItem(makeDecision(t))]);
  await waitFor(async () => (await count('SELECT count(*) AS n FROM renlayer.traces WHERE trace_id = $1', [t.trace_id])) === 1,
    { what: 'old trace written' });
  await waitFor(async () => (await count('SELECT count(*) AS n FROM renlayer.decisions WHERE trace_id = $1', [t.trace_id])) === 1,
    { what: 'old decision written' });
  assert.equal(await count(`SELECT count(*) AS n FROM renlayer.traces_p${day}`), 1);
  assert.equal(await count(`SELECT count(*) AS n FROM renlayer.tool_calls_p${day}`), 1);
});

test('retention drops old partitions, and a trace past retention is acked unwritten', async () => {
  const w = writers[0];
  const old = new Date(Date.now() - 40 * DAY_MS).toISOString().slice(0, 10);
  await db.query('SELECT renlayer.ensure_trace_partitions($1::date, 1)', [old]);
  const part = `renlayer.traces_p${old.replaceAll('-', '')}`;
  assert.notEqual((await db.query('SELECT to_regclass($1) AS r', [part])).rows[0].r, null);
  await waitFor(async () => (await db.query('SELECT to_regclass($1) AS r', [part])).rows[0].r === null,
    { timeout: 10000, what: 'old partition dropped by the upkeep' });
  const dropped = await metric(w, 'renlayer_trace_writer_messages_dropped_total{stream="traces"}');
  const t = makeTrace({ tenant, agent, ms: Date.now() - 40 * DAY_MS });
  await publishAll(js, [traceItem(t)]);
  await waitFor(async () => (await metric(w, 'renlayer_trace_writer_messages_dropped_total{stream="traces"}')) === dropped + 1,
    { what: 'dropped past retention' });
  assert.equal((await db.query('SELECT to_regclass($1) AS r', [part])).rows[0].r, null, 'the dropped day is not recreated');
  assert.ok(await metric(w, 'renlayer_trace_writer_partitions_dropped_total') >= 1);
});

test('two writer replicas share the durable consumers without writing a message twice', async () => {
  const [a] = writers;
  const b = await startWriter();
  const key = 'renlayer_trace_writer_messages_written_total{stream="traces"}';
  const before = [await metric(a, key), await metric(b, key)];
  const start = await count('SELECT count(*) AS n FROM renlayer.traces');
  const n = 6000;
  for (let wave = 0; wave < 6; wave++) {
    await publishAll(js, Array.from({ length: n / 6 }, () => traceItem(makeTrace({ tenant, agent }))));
  }
  await waitFor(async () => (await count('SELECT count(*) AS n FROM renlayer.traces')) === start + n, { timeout: 60000, what: `${n} rows` });
  const after = [await metric(a, key), await metric(b, key)];
  const did = [after[0] - before[0], after[1] - before[1]];
  assert.equal(did[0] + did[1], n, `each message written by exactly one replica (${did})`);
  assert.ok(did[0] > 0 && did[1] > 0, `both replicas worked (${did})`);
  assert.equal(await b.stop('SIGTERM'), 0);
  writers.splice(writers.indexOf(b), 1);
});

test('/readyz is 503 while PostgreSQL is down and 200 again after; traces published meanwhile are written', async () => {
  const w = writers[0];
  const start = await count('SELECT count(*) AS n FROM renlayer.traces');
  await pgServer.stop();
  await waitFor(async () => (await statusOf(`${w.url}/readyz`)) === 503, { what: '503 with the database down' });
  const r = await getJson(`${w.url}/readyz`);
  assert.equal(r.body.checks.database, 'down');
  assert.equal(r.body.checks.consumers, 'up');
  await publishAll(js, Array.from({ length: 300 }, () => traceItem(makeTrace({ tenant, agent }))));
  await new Promise((res) => setTimeout(res, 500));
  await pgServer.start();
  await reconnectDb();
  await waitFor(async () => (await statusOf(`${w.url}/readyz`)) === 200, { timeout: 30000, what: '200 again' });
  await waitFor(async () => (await count('SELECT count(*) AS n FROM renlayer.traces')) === start + 300, { timeout: 30000, what: 'the 300 traces' });
  assert.ok(w.alive());
});

test('50,000 traces while the writer is SIGKILLed and restarted twice and PostgreSQL restarts once: exactly 50,000 rows', async () => {
  const N = 50000;
  const start = await count('SELECT count(*) AS n FROM renlayer.traces');
  const startTools = await count('SELECT count(*) AS n FROM renlayer.tool_calls');
  const traces = Array.from({ length: N }, () => makeTrace({ tenant, agent, bodyBytes: 300 }));
  const ids = traces.map((t) => t.trace_id);
  const published = publishAll(js, traces.map(traceItem), { window: 1024 });

  const total = async () => (await count('SELECT count(*) AS n FROM renlayer.traces')) - start;
  const atLeast = (k, what) => waitFor(async () => (await total()) >= k, { timeout: 60000, interval: 100, what }).catch(async (e) => {
    const text = await (await fetch(`${writers[0].url}/metrics`)).text();
    console.log(writers[0].logText().slice(-4000), text.split('\n').filter((l) => l.startsWith('renlayer_trace_writer') && !l.includes('_bucket')).join('\n'));
    throw e;
  });

  await atLeast(5000, '5,000 rows before the first kill');
  await writers[0].kill();
  writers.shift();
  await startWriter();
  await atLeast(15000, '15,000 rows before the database restarts');
  await pgServer.stop();
  await new Promise((r) => setTimeout(r, 1000));
  await pgServer.start();
  await reconnectDb();
  await atLeast(25000, '25,000 rows before the second kill');
  await writers[0].kill();
  writers.shift();
  await startWriter();
  assert.equal(await published, N);

  await waitFor(async () => (await total()) === N, { timeout: 90000, interval: 250, what: `${N} rows` });
  await new Promise((r) => setTimeout(r, 1500)); // anything still redelivered would add rows now
  assert.equal(await total(), N);
  const r = await db.query('SELECT count(*) AS n, count(DISTINCT trace_id) AS d FROM renlayer.traces WHERE trace_id = ANY($1)', [ids]);
  assert.equal(Number(r.rows[0].n), N, 'every published trace');
  assert.equal(Number(r.rows[0].d), N, 'none twice');
  assert.equal(await count('SELECT count(*) AS n FROM renlayer.tool_calls') - startTools, N, 'one tool call each');
});

test('SIGTERM finishes the batch in hand and exits 0', async () => {
  const w = writers[0];
  const start = await count('SELECT count(*) AS n FROM renlayer.traces');
  await publishAll(js, Array.from({ length: 2000 }, () => traceItem(makeTrace({ tenant, agent }))));
  const code = await w.stop('SIGTERM');
  assert.equal(code, 0, w.logText().slice(-3000));
  assert.ok(w.lines.some((l) => l.msg === 'shutting down'));
  writers.shift();
  // what it had not taken is written by the next one; nothing twice
  await startWriter();
  await waitFor(async () => (await count('SELECT count(*) AS n FROM renlayer.traces')) === start + 2000, { timeout: 30000, what: '2,000 rows' });
  assert.equal(await writers[0].stop('SIGTERM'), 0);
  writers.shift();
});
