// renlayer-api's read side of traces against a real PostgreSQL: GET
// /v1/traces (every filter, the default window, keyset pagination, bad
// filters), GET /v1/traces/{id} (children, tenant isolation) and GET
// /v1/stats/overview checked against known data and PostgreSQL's own
// percentile_cont. Traces are inserted with SQL, as the trace-writer would.
// Every answer is validated against its schema in services/api/openapi.json.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { sourceDir } from '../lib/harness.mjs';
import { startApiStack } from '../lib/api_stack.mjs';

const HOUR = 3600e3;
const MIN = 60e3;
const DAY = 24 * HOUR;

let s; // the stack
let A; // tenant A (seeded)
let B; // tenant B (seeded)
let viewerA; // JWT of a viewer of A
let ajv; // compiled against openapi.json
let D0; // 00:00 UTC three days ago: the known data lies in [D0+21h, D0+26h)
const known = { A: [], B: [] }; // the traces inserted in the known window, as specs
let agentX; // two more agents of A (ids only: telemetry has no foreign keys)
let agentY;
let gate2;
let detailed; // A's trace with every child

/** A UUIDv7 whose timestamp is ms, as the proxy mints them. */
function uuidv7(ms) {
  const b = randomBytes(16);
  b.writeUIntBE(ms, 0, 6);
  b[6] = (b[6] & 0x0f) | 0x70;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** ms as the API writes times: RFC 3339 UTC with microseconds. */
const iso6 = (ms) => new Date(ms).toISOString().replace('Z', '000Z');

const byIdDesc = (a, b) => (a < b ? 1 : a > b ? -1 : 0);

async function insertTrace(t) {
  await s.db.query(
    `INSERT INTO renlayer.traces (trace_id, started_at, ended_at, tenant_id, agent_id, gate_id, api_key_id,
       end_user, session_key, action, method, path, model, upstream, status, http_status, policy_ids,
       input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, reasoning_tokens, total_tokens,
       cost_usd, latency_ms, upstream_ms, overhead_us, stream, error, attempts, request_body, response_body, truncated)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23,
       $24, $25, $26, $27, $28, $29, $30, $31, $32, $33)`,
    [t.id, new Date(t.at), t.endedAt ? new Date(t.endedAt) : null, t.tenant, t.agent, t.gate, t.key ?? null,
      t.user, t.session, t.action, t.method ?? 'POST', t.path ?? '/v1/chat/completions', t.model, t.upstream ?? null,
      t.status, t.http, t.policyIds ?? [], t.input, t.output, t.cached ?? 0, t.cacheWrite ?? 0, t.reasoning ?? 0,
      t.input + t.output, t.costUnits === null ? null : (t.costUnits / 1e8).toFixed(8), t.latency,
      t.upstreamMs ?? null, t.overheadUs ?? null, t.stream, t.error,
      t.attempts ? JSON.stringify(t.attempts) : null, t.requestBody ?? null, t.responseBody ?? null, t.truncated ?? false],
  );
}

const STATUSES = ['ALLOWED', 'ALLOWED', 'FLAGGED', 'DENIED', 'DLP_BLOCKED', 'DLP_WARNED', 'ALLOWED'];
const ACTIONS = ['chat', 'embedding', 'mcp', 'tool_call', 'http'];
const HOURS = [21, 22, 24, 25]; // D0+23h stays empty

/** The i-th known trace of tenant A: every field varies with i. */
function specA(i) {
  const status = STATUSES[i % 7];
  const blocked = status === 'DENIED' || status === 'DLP_BLOCKED';
  const http = blocked ? 403 : i % 9 === 4 ? 502 : 200;
  const at = D0 + HOURS[i % 4] * HOUR + ((i * 7) % 60) * MIN + i * 1000 + 123;
  return {
    id: uuidv7(at),
    at,
    endedAt: at + 500,
    tenant: A.tenantId,
    agent: [A.agentId, agentX, agentY][i % 3],
    gate: i % 5 === 0 ? null : i % 2 ? A.gateId : gate2,
    user: ['alice', 'bob', 'carol', null][(i >> 1) % 4],
    session: i % 3 === 0 ? null : `run-${i % 2}`,
    action: ACTIONS[i % 5],
    model: ['gpt-4o-mini', 'claude-sonnet-4-5', null][(i >> 2) % 3],
    status,
    http,
    input: 100 + 13 * i,
    output: 7 * i + 1,
    costUnits: i % 8 === 7 ? null : 1000 + 37 * i, // cost in 1e-8 USD; null: no price known
    latency: i % 13 === 12 ? null : ((i * 37) % 101) * 10 + 5,
    stream: i % 2 === 1,
    error: http === 502 ? 'upstream_error' : i % 11 === 10 ? 'client_disconnected' : null,
  };
}

function specB(i) {
  const at = D0 + HOURS[i % 4] * HOUR + 5 * MIN + i * 1000;
  return {
    id: uuidv7(at), at, tenant: B.tenantId, agent: B.agentId, gate: B.gateId, user: 'alice', session: 'run-1',
    action: 'chat', model: 'gpt-4o-mini', status: 'ALLOWED', http: 200, input: 1000, output: 1000,
    costUnits: 1e8, latency: 99999, stream: false, error: null,
  };
}

before(async () => {
  s = await startApiStack();
  [A, B] = [await s.seedTenant('owner@a.test'), await s.seedTenant('owner@b.test')];
  const c = await s.call('POST', '/v1/operators', { token: A.ownerToken, body: { email: 'viewer@a.test', role: 'viewer', name: 'v' } });
  assert.equal(c.status, 201, JSON.stringify(c.body));
  viewerA = await s.login('viewer@a.test');

  const doc = JSON.parse(await readFile(path.join(sourceDir, 'services/api/openapi.json'), 'utf8'));
  ajv = new Ajv2020({ strict: false, allErrors: true });
  addFormats(ajv);
  ajv.addSchema(doc, 'openapi');

  // days from three days ago (the migration creates yesterday .. +7)
  await s.db.query("SELECT renlayer.ensure_trace_partitions((now() AT TIME ZONE 'UTC')::date - 3, 4)");
  const today = new Date();
  D0 = Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate()) - 3 * DAY;
  [agentX, agentY, gate2] = [randomUUID(), randomUUID(), randomUUID()];

  for (let i = 0; i < 30; i++) known.A.push(specA(i));
  for (let i = 0; i < 6; i++) known.B.push(specB(i));
  // trace 0 of A carries every kind of child
  detailed = Object.assign(known.A[0], {
    key: randomUUID(),
    upstream: 'http://upstream.test',
    policyIds: [randomUUID(), randomUUID()],
    cached: 50, cacheWrite: 10, reasoning: 0,
    upstreamMs: 400, overheadUs: 321,
    attempts: [
      { gate_id: gate2, upstream: 'http://first.test', http_status: null, error: 'connect_failed', ms: 1.5 },
      { gate_id: gate2, upstream: 'http://upstream.test', http_status: 200, error: null, ms: 398.25 },
    ],
    requestBody: '{"messages":[{"role":"user","content":"mail [EMAIL]"}]}',
    responseBody: '{"choices":[]}',
    truncated: true,
  });
  for (const t of [...known.A, ...known.B]) await insertTrace(t);
  const d = detailed;
  const sha = 'ab'.repeat(32);
  await s.db.query(
    `INSERT INTO renlayer.tool_calls (trace_id, started_at, ordinal, tenant_id, agent_id, session_key, name, call_id, phase, args_sha256)
     VALUES ($1, $2, 0, $3, $4, $5, 'get_weather', 'call_1', 'requested', decode($6, 'hex')),
            ($1, $2, 1, $3, $4, $5, 'lookup', NULL, 'result', NULL)`,
    [d.id, new Date(d.at), d.tenant, d.agent, d.session, sha]);
  await s.db.query(
    `INSERT INTO renlayer.dlp_findings (trace_id, started_at, ordinal, tenant_id, agent_id, detector, severity, location, action)
     VALUES ($1, $2, 1, $3, $4, 'CREDIT_CARD', 'critical', 'response', 'block'),
            ($1, $2, 0, $3, $4, 'EMAIL', 'medium', 'request', 'redact')`,
    [d.id, new Date(d.at), d.tenant, d.agent]);
  await s.db.query(
    `INSERT INTO renlayer.decisions (trace_id, started_at, decided_at, tenant_id, agent_id, gate_id, end_user, session_key,
       action, status, http_status, policy_id, policy_ids, reason)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL, $11, $12, 'flag personal data')`,
    [d.id, new Date(d.at), new Date(d.at + 2), d.tenant, d.agent, d.gate, d.user, d.session, d.action, d.status,
      d.policyIds[0], d.policyIds]);
  // B's trace with a child: never visible to A
  await s.db.query(
    `INSERT INTO renlayer.dlp_findings (trace_id, started_at, ordinal, tenant_id, agent_id, detector, severity, location, action)
     VALUES ($1, $2, 0, $3, $4, 'EMAIL', 'low', 'request', 'warn')`,
    [known.B[0].id, new Date(known.B[0].at), B.tenantId, B.agentId]);
});

after(async () => {
  // the api stops cleanly (and, in a sanitizer build, without a report)
  const code = await s?.api.stop();
  const log = s?.api.logText() ?? '';
  await s?.close();
  assert.equal(code, 0, `api exit code\n${log.slice(-4000)}`);
  assert.doesNotMatch(log, /Sanitizer/);
});

/** Asserts that body validates against components/schemas/<name> of openapi.json. */
function assertSchema(name, body) {
  const validate = ajv.getSchema(`openapi#/components/schemas/${name}`);
  assert.ok(validate, `schema ${name}`);
  assert.ok(validate(body), `${name}: ${ajv.errorsText(validate.errors)}\n${JSON.stringify(body).slice(0, 2000)}`);
}

/** The window of the known data. */
const windowQuery = () => ({ from: iso6(D0 + 21 * HOUR), to: iso6(D0 + 26 * HOUR) });

async function list(query, token = A.ownerToken) {
  const q = new URLSearchParams(query).toString();
  const r = await s.call('GET', `/v1/traces${q ? `?${q}` : ''}`, { token });
  return r;
}

/** Every id of a filtered list, following cursors. */
async function listAll(query, token = A.ownerToken) {
  const ids = [];
  let cursor;
  for (let pages = 0; pages < 100; pages++) {
    const r = await list({ ...query, ...(cursor ? { cursor } : {}) }, token);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assertSchema('TracePage', r.body);
    ids.push(...r.body.data.map((t) => t.id));
    if (!r.body.next_cursor) return ids;
    cursor = r.body.next_cursor;
  }
  throw new Error('too many pages');
}

describe('GET /v1/traces', () => {
  test('a summary per trace, newest id first, without bodies', async () => {
    const r = await list({ ...windowQuery(), limit: '200' });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assertSchema('TracePage', r.body);
    assert.deepEqual(r.body.data.map((t) => t.id), known.A.map((t) => t.id).sort(byIdDesc));
    assert.equal(r.body.next_cursor, null);
    const got = r.body.data.find((t) => t.id === known.A[4].id);
    const w = known.A[4];
    assert.deepEqual(got, {
      id: w.id, started_at: iso6(w.at), agent_id: w.agent, gate_id: w.gate, user: w.user, session_id: w.session,
      action: w.action, method: 'POST', path: '/v1/chat/completions', model: w.model, status: w.status,
      http_status: w.http, usage: { input_tokens: w.input, output_tokens: w.output, total_tokens: w.input + w.output },
      cost_usd: w.costUnits / 1e8, latency_ms: w.latency, stream: w.stream, error: w.error,
    });
    for (const t of r.body.data) {
      for (const k of ['request_body', 'response_body', 'tool_calls', 'dlp_findings', 'attempts']) assert.equal(t[k], undefined, k);
    }
  });

  test('every filter, alone and combined, matches exactly the expected traces', async () => {
    const cases = [
      [{ agent: agentX }, (t) => t.agent === agentX],
      [{ agent: A.agentId }, (t) => t.agent === A.agentId],
      [{ gate: gate2 }, (t) => t.gate === gate2],
      [{ gate: A.gateId }, (t) => t.gate === A.gateId],
      ...['ALLOWED', 'FLAGGED', 'DENIED', 'DLP_BLOCKED', 'DLP_WARNED'].map((st) => [{ status: st }, (t) => t.status === st]),
      ...ACTIONS.map((a) => [{ action: a }, (t) => t.action === a]),
      [{ user: 'alice' }, (t) => t.user === 'alice'],
      [{ user: 'carol' }, (t) => t.user === 'carol'],
      [{ session: 'run-1' }, (t) => t.session === 'run-1'],
      [{ model: 'claude-sonnet-4-5' }, (t) => t.model === 'claude-sonnet-4-5'],
      [{ user: 'nobody' }, () => false],
      [{ agent: agentY, status: 'ALLOWED' }, (t) => t.agent === agentY && t.status === 'ALLOWED'],
      [{ session: 'run-0', action: 'chat', model: 'gpt-4o-mini' }, (t) => t.session === 'run-0' && t.action === 'chat' && t.model === 'gpt-4o-mini'],
      [{ from: iso6(D0 + 24 * HOUR) }, (t) => t.at >= D0 + 24 * HOUR],
      [{ to: iso6(D0 + 22 * HOUR) }, (t) => t.at < D0 + 22 * HOUR],
    ];
    for (const [filter, pred] of cases) {
      const ids = await listAll({ ...windowQuery(), ...filter, limit: '200' });
      const expected = known.A.filter(pred).map((t) => t.id).sort(byIdDesc);
      assert.deepEqual(ids, expected, JSON.stringify(filter));
      if (Object.keys(filter).length === 1 && !filter.from && !filter.to && filter.user !== 'nobody') {
        assert.ok(expected.length > 0, `${JSON.stringify(filter)} selects something`);
      }
    }
  });

  test('from is inclusive, to exclusive, to the microsecond; a time without offset is UTC', async () => {
    const t = known.A[9];
    const incl = await listAll({ from: iso6(t.at), to: iso6(t.at + 1) });
    assert.deepEqual(incl, [t.id]);
    assert.deepEqual(await listAll({ from: iso6(t.at - 1000), to: iso6(t.at) }), []);
    const local = new Date(t.at).toISOString().slice(0, 23); // no offset
    assert.deepEqual(await listAll({ from: local, to: iso6(t.at + 1) }), [t.id]);
    // the same instant with an offset
    const shifted = new Date(t.at + 2 * HOUR).toISOString().slice(0, 23) + '+02:00';
    assert.deepEqual(await listAll({ from: shifted, to: iso6(t.at + 1) }), [t.id]);
  });

  test('without from, the last 24 hours (before to, or now)', async () => {
    const now = Date.now();
    const recent = { ...specA(3), id: undefined, at: now - HOUR, endedAt: null };
    recent.id = uuidv7(recent.at);
    const old = { ...specA(3), at: now - 30 * HOUR, endedAt: null };
    old.id = uuidv7(old.at);
    await insertTrace(recent);
    await insertTrace(old);
    const ids = await listAll({});
    assert.ok(ids.includes(recent.id));
    assert.ok(!ids.includes(old.id));
    assert.ok(!ids.some((id) => known.A.some((t) => t.id === id)), 'older data is outside the default window');
    const before = await listAll({ to: iso6(now - 10 * HOUR) });
    assert.ok(before.includes(old.id) && !before.includes(recent.id), 'to - 24 h');
    await s.db.query('DELETE FROM renlayer.traces WHERE trace_id = ANY($1)', [[recent.id, old.id]]);
  });

  test('keyset pagination visits every trace once, in order', async () => {
    for (const limit of [1, 7, 30]) {
      const ids = await listAll({ ...windowQuery(), limit: String(limit) });
      assert.deepEqual(ids, known.A.map((t) => t.id).sort(byIdDesc), `limit ${limit}`);
    }
    const first = await list({ ...windowQuery(), limit: '7' });
    assert.equal(first.body.data.length, 7);
    assert.ok(first.body.next_cursor);
    const filtered = await listAll({ ...windowQuery(), status: 'ALLOWED', limit: '2' });
    assert.deepEqual(filtered, known.A.filter((t) => t.status === 'ALLOWED').map((t) => t.id).sort(byIdDesc));
  });

  test('bad filters answer 400 naming the field', async () => {
    const cases = [
      [{ agent: 'nope' }, 'agent'],
      [{ gate: '1234' }, 'gate'],
      [{ status: 'allowed' }, 'status'],
      [{ status: 'OK' }, 'status'],
      [{ action: 'chat2' }, 'action'],
      [{ from: 'yesterday' }, 'from'],
      [{ from: '2030-02-30T00:00:00Z' }, 'from'],
      [{ to: '2030-01-01T24:00:00Z' }, 'to'],
      [{ to: '2030-01-01T10:00:00+16:00' }, 'to'],
      [{ from: '0000-01-01' }, 'from'],
      [{ user: 'u'.repeat(4097) }, 'user'],
      [{ session: 's'.repeat(4097) }, 'session'],
      [{ model: 'm'.repeat(4097) }, 'model'],
      [{ limit: '0' }, 'limit'],
      [{ limit: '201' }, 'limit'],
      [{ cursor: 'not-a-cursor' }, 'cursor'],
    ];
    for (const [q, field] of cases) {
      const r = await list(q);
      assert.equal(r.status, 400, `${JSON.stringify(q)} -> ${r.status} ${JSON.stringify(r.body)}`);
      assert.equal(r.body.error.code, 'validation_failed');
      assert.ok(r.body.error.fields[field], `${JSON.stringify(q)} names ${field}: ${JSON.stringify(r.body)}`);
      assertSchema('Error', r.body);
    }
    const two = await list({ agent: 'x', status: 'y' });
    assert.deepEqual(Object.keys(two.body.error.fields).sort(), ['agent', 'status'], 'every bad field at once');
  });

  test("another tenant's traces never appear, whatever the filter", async () => {
    const wide = { from: iso6(D0), to: iso6(D0 + 3 * DAY) };
    for (const q of [{}, { user: 'alice' }, { session: 'run-1' }, { agent: B.agentId }, { gate: B.gateId }, { model: 'gpt-4o-mini' }]) {
      const ids = await listAll({ ...wide, ...q, limit: '200' });
      assert.ok(!ids.some((id) => known.B.some((t) => t.id === id)), JSON.stringify(q));
    }
    const asB = await listAll({ ...windowQuery(), limit: '200' }, B.ownerToken);
    assert.deepEqual(asB, known.B.map((t) => t.id).sort(byIdDesc));
  });

  test('credentials: a viewer may read, nobody else', async () => {
    assert.equal((await list(windowQuery(), viewerA)).status, 200);
    assert.equal((await s.call('GET', '/v1/traces')).status, 401);
    assert.equal((await s.call('GET', `/v1/traces/${detailed.id}`)).status, 401);
    assert.equal((await s.call('GET', '/v1/stats/overview')).status, 401);
  });
});

describe('GET /v1/traces/{id}', () => {
  test('the whole trace with its findings, tool calls, attempts and decision', async () => {
    const r = await s.call('GET', `/v1/traces/${detailed.id}`, { token: viewerA });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assertSchema('Trace', r.body);
    const d = detailed;
    assert.deepEqual(r.body, {
      id: d.id, started_at: iso6(d.at), ended_at: iso6(d.endedAt), agent_id: d.agent, gate_id: d.gate, api_key_id: d.key,
      user: d.user, session_id: d.session, action: d.action, method: 'POST', path: '/v1/chat/completions', model: d.model,
      upstream: 'http://upstream.test', status: d.status, http_status: d.http, policy_ids: d.policyIds,
      usage: { input_tokens: d.input, output_tokens: d.output, total_tokens: d.input + d.output, cached_input_tokens: 50, cache_write_tokens: 10, reasoning_tokens: 0 },
      cost_usd: d.costUnits / 1e8, latency_ms: d.latency, upstream_ms: 400, overhead_us: 321, stream: d.stream, error: d.error,
      attempts: d.attempts, request_body: d.requestBody, response_body: d.responseBody, truncated: true,
      dlp_findings: [
        { detector: 'EMAIL', severity: 'medium', where: 'request', action: 'redact' },
        { detector: 'CREDIT_CARD', severity: 'critical', where: 'response', action: 'block' },
      ],
      tool_calls: [
        { name: 'get_weather', id: 'call_1', phase: 'requested', args_sha256: 'ab'.repeat(32) },
        { name: 'lookup', id: null, phase: 'result', args_sha256: null },
      ],
      decision: { decided_at: iso6(d.at + 2), status: d.status, http_status: null, policy_id: d.policyIds[0], policy_ids: d.policyIds, reason: 'flag personal data' },
    });
  });

  test('a trace without children has empty arrays and a null decision', async () => {
    const t = known.A[5];
    const r = await s.call('GET', `/v1/traces/${t.id}`, { token: A.ownerToken });
    assert.equal(r.status, 200);
    assertSchema('Trace', r.body);
    assert.deepEqual([r.body.dlp_findings, r.body.tool_calls, r.body.attempts, r.body.policy_ids, r.body.decision], [[], [], [], [], null]);
    assert.equal(r.body.ended_at, iso6(t.endedAt));
    assert.equal(r.body.request_body, null);
    assert.equal(r.body.truncated, false);
  });

  test("unknown ids and another tenant's trace answer 404", async () => {
    const other = known.B[0];
    const r = await s.call('GET', `/v1/traces/${other.id}`, { token: A.ownerToken });
    assert.equal(r.status, 404, JSON.stringify(r.body));
    assert.equal(r.body.error.code, 'not_found');
    assert.ok(!JSON.stringify(r.body).includes(B.agentId));
    const own = await s.call('GET', `/v1/traces/${other.id}`, { token: B.ownerToken });
    assert.equal(own.status, 200, 'the owner sees it');
    assert.equal(own.body.dlp_findings.length, 1);
    for (const id of [uuidv7(Date.now()), uuidv7(detailed.at), randomUUID(), 'not-a-uuid', detailed.id.toUpperCase().replace(/-/g, '')]) {
      const x = await s.call('GET', `/v1/traces/${id}`, { token: A.ownerToken });
      assert.equal(x.status, 404, `${id} -> ${x.status}`);
    }
  });
});

// ---- stats ---------------------------------------------------------------------------------

/** percentile_cont as PostgreSQL computes it (linear interpolation, nulls ignored). */
function percentileCont(values, p) {
  const a = values.filter((v) => v !== null).sort((x, y) => x - y);
  if (a.length === 0) return null;
  const pos = p * (a.length - 1);
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return a[lo] + (pos - lo) * (a[hi] - a[lo]);
}

/** What the API must report for a set of specs (cost exact from integer units). */
function expectedStats(ts) {
  const by = Object.fromEntries(['ALLOWED', 'FLAGGED', 'DENIED', 'DLP_BLOCKED', 'DLP_WARNED'].map((st) => [st, ts.filter((t) => t.status === st).length]));
  const input = ts.reduce((n, t) => n + t.input, 0);
  const output = ts.reduce((n, t) => n + t.output, 0);
  return {
    requests: ts.length,
    by_status: by,
    errors: ts.filter((t) => t.http >= 400 || t.error !== null).length,
    tokens: { input, output, total: input + output },
    cost_usd: ts.reduce((n, t) => n + (t.costUnits ?? 0), 0) / 1e8,
    latency: ts.map((t) => t.latency),
  };
}

function assertStats(got, ts, sqlPercentiles, what) {
  const e = expectedStats(ts);
  assert.equal(got.requests, e.requests, `${what} requests`);
  assert.deepEqual(got.by_status, e.by_status, `${what} by_status`);
  assert.equal(got.errors, e.errors, `${what} errors`);
  assert.deepEqual(got.tokens, e.tokens, `${what} tokens`);
  assert.equal(got.cost_usd, e.cost_usd, `${what} cost`);
  for (const [k, p] of [['p50', 0.5], ['p95', 0.95]]) {
    const mine = percentileCont(e.latency, p);
    if (mine === null) assert.equal(got.latency_ms[k], null, `${what} ${k}`);
    else assert.ok(Math.abs(got.latency_ms[k] - mine) < 1e-9, `${what} ${k}: ${got.latency_ms[k]} vs ${mine}`);
    if (sqlPercentiles) assert.equal(got.latency_ms[k], sqlPercentiles[k], `${what} ${k} = PostgreSQL's percentile_cont`);
  }
}

async function stats(query, token = A.ownerToken) {
  const r = await s.call('GET', `/v1/stats/overview?${new URLSearchParams(query)}`, { token });
  return r;
}

/** PostgreSQL's own percentiles per bucket, computed independently of the API. */
async function sqlPercentiles(tenant, bucket, from, to) {
  const { rows } = await s.db.query(
    `SELECT to_char(date_trunc($2, started_at AT TIME ZONE 'UTC'), 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS b,
            percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50,
            percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS p95
       FROM renlayer.traces WHERE tenant_id = $1 AND started_at >= $3 AND started_at < $4
      GROUP BY 1 UNION ALL
     SELECT 'total', percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms), percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms)
       FROM renlayer.traces WHERE tenant_id = $1 AND started_at >= $3 AND started_at < $4`,
    [tenant, bucket, new Date(from), new Date(to)]);
  return Object.fromEntries(rows.map((r) => [r.b, { p50: r.p50, p95: r.p95 }]));
}

const truncTo = (ms, bucket) => ms - (ms % { minute: MIN, hour: HOUR, day: DAY }[bucket]);

describe('GET /v1/stats/overview', () => {
  for (const [bucket, from, to, partial] of [
    ['hour', () => D0 + 21 * HOUR, () => D0 + 26 * HOUR],
    ['hour', () => D0 + 21 * HOUR + 30 * MIN, () => D0 + 25 * HOUR + 10 * MIN, true],
    ['day', () => D0, () => D0 + 3 * DAY],
    ['minute', () => D0 + 21 * HOUR, () => D0 + 21 * HOUR + 45 * MIN],
  ]) {
    test(`per ${bucket}${partial ? ', partial buckets at both ends' : ''}: exact counts, sums and percentiles`, async () => {
      const f = from();
      const t = to();
      const r = await stats({ from: iso6(f), to: iso6(t), bucket }, viewerA);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assertSchema('StatsOverview', r.body);
      assert.equal(r.body.from, iso6(f));
      assert.equal(r.body.to, iso6(t));
      assert.equal(r.body.bucket, bucket);
      const step = { minute: MIN, hour: HOUR, day: DAY }[bucket];
      const starts = [];
      for (let b = truncTo(f, bucket); b < t; b += step) starts.push(b);
      assert.deepEqual(r.body.buckets.map((x) => x.start), starts.map(iso6), 'dense, UTC-aligned buckets');
      const inWindow = known.A.filter((x) => x.at >= f && x.at < t);
      const pct = await sqlPercentiles(A.tenantId, bucket, f, t);
      let nonEmpty = 0;
      for (const [i, b] of r.body.buckets.entries()) {
        const ts = inWindow.filter((x) => x.at >= starts[i] && x.at < starts[i] + step);
        if (ts.length) nonEmpty++;
        assertStats(b, ts, pct[b.start] ?? { p50: null, p95: null }, `bucket ${b.start}`);
      }
      assert.ok(nonEmpty >= 2 || bucket === 'minute', 'the data spans several buckets');
      assert.ok(r.body.buckets.some((b) => b.requests === 0), 'an empty bucket is listed with zeros');
      assertStats(r.body.totals, inWindow, pct.total, 'totals');
      // top agents: by cost, then requests, each with its own stats
      const agents = [...new Set(inWindow.map((x) => x.agent))].map((id) => ({ id, ts: inWindow.filter((x) => x.agent === id) }));
      for (const a of agents) a.cost = a.ts.reduce((n, x) => n + (x.costUnits ?? 0), 0);
      agents.sort((x, y) => y.cost - x.cost || y.ts.length - x.ts.length || (x.id < y.id ? -1 : 1));
      assert.deepEqual(r.body.top_agents.map((a) => a.agent_id), agents.map((a) => a.id));
      for (const [i, a] of r.body.top_agents.entries()) assertStats(a, agents[i].ts, null, `agent ${a.agent_id}`);
      const named = r.body.top_agents.find((a) => a.agent_id === A.agentId);
      if (named) assert.equal(typeof named.name, 'string');
      assert.ok(r.body.top_agents.filter((a) => a.agent_id !== A.agentId).every((a) => a.name === null), 'unknown agents have no name');
    });
  }

  test('known values: percentiles exactly as chosen', async () => {
    // hour 1: latencies 10, 20, ..., 210 (21 values: p50 = the 11th, p95 = the 20th, no rounding);
    // hour 2: 10, 20, 30, 40 (p50 interpolated halfway: 25)
    const base = D0 + 2 * DAY + 3 * HOUR; // a day with no other data of A
    const agent = randomUUID();
    const rows = [...Array.from({ length: 21 }, (_, k) => [base + (k + 1) * MIN, (k + 1) * 10]),
      ...Array.from({ length: 4 }, (_, k) => [base + HOUR + (k + 1) * MIN, (k + 1) * 10])];
    for (const [at, latency] of rows) {
      await insertTrace({ ...specA(0), id: uuidv7(at), at, endedAt: null, agent, latency, costUnits: 1, status: 'ALLOWED', http: 200, error: null });
    }
    const r = await stats({ from: iso6(base), to: iso6(base + 2 * HOUR), bucket: 'hour' });
    assert.equal(r.status, 200);
    assert.deepEqual(r.body.buckets[0].latency_ms, { p50: 110, p95: 200 });
    assert.equal(r.body.buckets[1].latency_ms.p50, 25);
    assert.deepEqual(r.body.buckets.map((b) => b.requests), [21, 4]);
    assert.equal(r.body.totals.cost_usd, 25e-8);
    assert.deepEqual(r.body.top_agents.map((a) => [a.agent_id, a.requests]), [[agent, 25]]);
    await s.db.query('DELETE FROM renlayer.traces WHERE tenant_id = $1 AND agent_id = $2', [A.tenantId, agent]);
  });

  test('at most 10 agents, highest cost first', async () => {
    const base = D0 + 2 * DAY + 6 * HOUR;
    const agents = Array.from({ length: 12 }, () => randomUUID());
    for (const [k, agent] of agents.entries()) {
      const at = base + k * MIN;
      await insertTrace({ ...specA(0), id: uuidv7(at), at, endedAt: null, agent, costUnits: (k + 1) * 100 });
    }
    const r = await stats({ from: iso6(base), to: iso6(base + HOUR) });
    assert.equal(r.status, 200);
    assert.deepEqual(r.body.top_agents.map((a) => a.agent_id), agents.slice(2).reverse());
    assert.equal(r.body.totals.requests, 12);
    await s.db.query('DELETE FROM renlayer.traces WHERE tenant_id = $1 AND agent_id = ANY($2)', [A.tenantId, agents]);
  });

  test("tenant-scoped: B's stats hold only B's traces", async () => {
    const r = await stats({ ...windowQuery(), bucket: 'hour' }, B.ownerToken);
    assert.equal(r.status, 200);
    assertStats(r.body.totals, known.B, null, 'B totals');
    assert.deepEqual(r.body.top_agents.map((a) => a.agent_id), [B.agentId]);
    const a = await stats({ ...windowQuery(), bucket: 'hour' });
    assert.ok(!JSON.stringify(a.body).includes(B.agentId));
  });

  test('defaults: the last 24 hours, per hour', async () => {
    const r = await stats({});
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assertSchema('StatsOverview', r.body);
    assert.equal(r.body.bucket, 'hour');
    const span = Date.parse(r.body.to) - Date.parse(r.body.from);
    assert.equal(span, DAY);
    assert.ok(Math.abs(Date.parse(r.body.to) - Date.now()) < 60e3);
    assert.ok(r.body.buckets.length === 24 || r.body.buckets.length === 25);
    const onlyTo = await stats({ to: iso6(D0 + 26 * HOUR) });
    assert.equal(onlyTo.body.from, iso6(D0 + 2 * HOUR));
  });

  test('bad parameters answer 400 naming the field', async () => {
    const cases = [
      [{ bucket: 'week' }, 'bucket'],
      [{ bucket: 'HOUR' }, 'bucket'],
      [{ from: iso6(D0), to: iso6(D0 + 2 * DAY), bucket: 'minute' }, 'bucket'], // 2880 buckets
      [{ from: iso6(D0 + HOUR), to: iso6(D0) }, 'to'],
      [{ from: iso6(D0), to: iso6(D0) }, 'to'],
      [{ from: iso6(Date.now() + DAY) }, 'from'],
      [{ from: 'last week' }, 'from'],
      [{ to: '2030-13-01' }, 'to'],
    ];
    for (const [q, field] of cases) {
      const r = await stats(q);
      assert.equal(r.status, 400, `${JSON.stringify(q)} -> ${r.status} ${JSON.stringify(r.body)}`);
      assert.ok(r.body.error.fields[field], `${JSON.stringify(q)} names ${field}: ${JSON.stringify(r.body)}`);
    }
    // the extremes of the calendar: from is raised to 1970 (UUIDv7's epoch), the year 10000 is fine
    const early = await stats({ from: '0001-01-01', to: '1970-01-03', bucket: 'day' });
    assert.equal(early.status, 200, JSON.stringify(early.body));
    assert.equal(early.body.from, '1970-01-01T00:00:00.000000Z');
    assert.equal(early.body.buckets.length, 2);
    const late = await stats({ from: '9999-12-31T23:00:00Z', to: '9999-12-31T23:59:59-15:59', bucket: 'hour' });
    assert.equal(late.status, 200, JSON.stringify(late.body));
    assert.equal(late.body.to, '10000-01-01T15:58:59.000000Z');
    assert.equal(late.body.buckets.length, 17);
    const lateList = await list({ from: '9999-12-31T23:00:00Z', to: '9999-12-31T23:59:59-15:59' });
    assert.equal(lateList.status, 200);
    // exactly 1000 buckets is fine
    const ok = await stats({ from: iso6(D0), to: iso6(D0 + 1000 * MIN), bucket: 'minute' });
    assert.equal(ok.status, 200);
    assert.equal(ok.body.buckets.length, 1000);
  });
});
