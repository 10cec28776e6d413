// renlayer-api against a real PostgreSQL: every route's success and
// validation errors, RBAC and tenant isolation generated over the route
// table, secrets never stored in clear, the audit log, and the OpenAPI doc.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { runBinary, sourceDir, testSecretKey } from '../lib/harness.mjs';
import { startApiStack } from '../lib/api_stack.mjs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';

let s; // the stack
let A; // tenant A (seeded): owner token, agent, key, gate
let B; // tenant B (seeded)
let adminA; // JWT of an admin of A
let viewerA; // JWT of a viewer of A
let routes; // [{method, path}] from `renlayer-api routes`

const mutation = (m) => ['POST', 'PUT', 'PATCH', 'DELETE'].includes(m);

before(async () => {
  s = await startApiStack();
  [A, B] = [await s.seedTenant('owner@a.test'), await s.seedTenant('owner@b.test')];
  const r = await runBinary('api', ['routes'], {});
  routes = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
  for (const [email, role] of [['admin@a.test', 'admin'], ['viewer@a.test', 'viewer']]) {
    const c = await s.call('POST', '/v1/operators', { token: A.ownerToken, body: { email, role, name: role } });
    assert.equal(c.status, 201, JSON.stringify(c.body));
  }
  adminA = await s.login('admin@a.test');
  viewerA = await s.login('viewer@a.test');
});

after(async () => {
  await s?.close();
});

describe('openapi', () => {
  test('the document is served and names every route of the route table', async () => {
    const r = await s.call('GET', '/v1/openapi.json');
    assert.equal(r.status, 200);
    assert.equal(r.body.openapi.slice(0, 3), '3.1');
    const onDisk = JSON.parse(await readFile(path.join(sourceDir, 'services/api/openapi.json'), 'utf8'));
    assert.deepEqual(r.body, onDisk, 'the binary serves the file in the repo');
    const missing = routes.filter((rt) => !r.body.paths[rt.path]?.[rt.method.toLowerCase()]);
    assert.deepEqual(missing, [], 'routes missing from openapi.json');
    for (const p of ['/healthz', '/readyz', '/metrics']) assert.ok(r.body.paths[p], p);
  });
});

describe('agents', () => {
  let agent;
  test('create returns the agent and its first key once', async () => {
    const r = await s.call('POST', '/v1/agents', {
      token: A.ownerToken,
      body: { name: 'support-bot', description: 'answers tickets', session: { soft_limit_usd: 2, idle_timeout_s: 600 } },
    });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    agent = r.body.agent;
    assert.equal(agent.name, 'support-bot');
    assert.equal(agent.session.soft_limit_usd, 2);
    assert.equal(agent.session.idle_timeout_s, 600);
    assert.match(r.body.key.secret, /^rl_live_[0-9A-Za-z]{33}$/);
    assert.equal(r.body.key.prefix, r.body.key.secret.slice(0, 12));
    const list = await s.call('GET', `/v1/agents/${agent.id}/keys`, { token: A.ownerToken });
    assert.equal(list.status, 200);
    assert.equal(list.body.data.length, 1);
    assert.equal(list.body.data[0].secret, undefined, 'a key is never shown again');
  });

  test('validation errors name every bad field', async () => {
    const r = await s.call('POST', '/v1/agents', {
      token: A.ownerToken,
      body: { name: '', description: 5, session: { soft_limit_usd: -1, idle_timeout_s: 0 }, colour: 'red' },
    });
    assert.equal(r.status, 400);
    assert.equal(r.body.error.code, 'validation_failed');
    assert.ok(r.body.error.fields.name);
    assert.ok(r.body.error.fields.description);
    assert.ok(r.body.error.fields['session.soft_limit_usd']);
    assert.ok(r.body.error.fields['session.idle_timeout_s']);
    const hard = await s.call('POST', '/v1/agents', {
      token: A.ownerToken, body: { name: 'x', session: { soft_limit_usd: 5, hard_limit_usd: 1 } },
    });
    assert.equal(hard.status, 400);
    assert.ok(hard.body.error.fields['session.hard_limit_usd']);
  });

  test('a duplicate name is a conflict', async () => {
    const r = await s.call('POST', '/v1/agents', { token: A.ownerToken, body: { name: 'support-bot' } });
    assert.equal(r.status, 409);
    assert.equal(r.body.error.code, 'conflict');
  });

  test('get, patch with a correct audit diff, delete', async () => {
    const g = await s.call('GET', `/v1/agents/${agent.id}`, { token: viewerA });
    assert.equal(g.status, 200);
    assert.equal(g.body.id, agent.id);
    const p = await s.call('PATCH', `/v1/agents/${agent.id}`, {
      token: adminA, body: { description: 'answers tickets politely', session: { soft_limit_usd: null } },
    });
    assert.equal(p.status, 200, JSON.stringify(p.body));
    assert.equal(p.body.description, 'answers tickets politely');
    assert.equal(p.body.session.soft_limit_usd, null);
    assert.equal(p.body.name, 'support-bot', 'fields not sent are kept');
    const audit = await s.db.query(
      "SELECT diff, operator_email FROM renlayer.audit_log WHERE action = 'agent.update' AND target_id = $1", [agent.id]);
    assert.equal(audit.rows.length, 1);
    assert.equal(audit.rows[0].operator_email, 'admin@a.test');
    assert.equal(audit.rows[0].diff.before.description, 'answers tickets');
    assert.equal(audit.rows[0].diff.after.description, 'answers tickets politely');
    assert.equal(audit.rows[0].diff.before.session.soft_limit_usd, 2);
    const bad = await s.call('PATCH', `/v1/agents/${agent.id}`, { token: adminA, body: { nme: 'typo' } });
    assert.equal(bad.status, 400);
    assert.ok(bad.body.error.fields.nme);
    const d = await s.call('DELETE', `/v1/agents/${agent.id}`, { token: adminA });
    assert.equal(d.status, 204);
    assert.equal((await s.call('GET', `/v1/agents/${agent.id}`, { token: adminA })).status, 404);
    const keys = await s.db.query('SELECT revoked_at FROM renlayer.api_keys WHERE agent_id = $1', [agent.id]);
    assert.ok(keys.rows.every((k) => k.revoked_at !== null), 'a deleted agent\'s keys are revoked');
  });

  test('keyset pagination visits every agent once', async () => {
    for (let i = 0; i < 5; i++) {
      assert.equal((await s.call('POST', '/v1/agents', { token: A.ownerToken, body: { name: `page-${i}` } })).status, 201);
    }
    const seen = [];
    let cursor = '';
    for (let pages = 0; pages < 10; pages++) {
      const r = await s.call('GET', `/v1/agents?limit=2${cursor ? `&cursor=${cursor}` : ''}`, { token: A.ownerToken });
      assert.equal(r.status, 200);
      assert.ok(r.body.data.length <= 2);
      seen.push(...r.body.data.map((a) => a.id));
      if (!r.body.next_cursor) break;
      cursor = r.body.next_cursor;
    }
    const all = await s.db.query('SELECT id FROM renlayer.agents WHERE tenant_id = $1 AND deleted_at IS NULL', [A.tenantId]);
    assert.equal(seen.length, all.rows.length);
    assert.equal(new Set(seen).size, seen.length);
    for (const q of ['limit=0', 'limit=201', 'limit=x', 'cursor=nope']) {
      const r = await s.call('GET', `/v1/agents?${q}`, { token: A.ownerToken });
      assert.equal(r.status, 400, q);
    }
  });
});

describe('keys', () => {
  test('rotation: a second key, the old one expired, revocation', async () => {
    const k = await s.call('POST', `/v1/agents/${A.agentId}/keys`, { token: adminA, body: { name: 'rotated' } });
    assert.equal(k.status, 201);
    assert.match(k.body.secret, /^rl_live_/);
    const list = await s.call('GET', `/v1/agents/${A.agentId}/keys`, { token: viewerA });
    assert.equal(list.body.data.length, 2);
    const old = list.body.data.find((x) => x.id !== k.body.id);
    const at = new Date(Date.now() + 86400e3).toISOString();
    const e = await s.call('POST', `/v1/agents/${A.agentId}/keys/${old.id}/expire`, { token: adminA, body: { at } });
    assert.equal(e.status, 200, JSON.stringify(e.body));
    assert.equal(new Date(e.body.expires_at).getTime(), new Date(at).getTime());
    const bad = await s.call('POST', `/v1/agents/${A.agentId}/keys/${old.id}/expire`, { token: adminA, body: { at: 'tomorrow' } });
    assert.equal(bad.status, 400);
    assert.ok(bad.body.error.fields.at);
    const missing = await s.call('POST', `/v1/agents/${A.agentId}/keys/${old.id}/expire`, { token: adminA, body: {} });
    assert.equal(missing.status, 400);
    const d = await s.call('DELETE', `/v1/agents/${A.agentId}/keys/${k.body.id}`, { token: adminA });
    assert.equal(d.status, 204);
    const row = await s.db.query('SELECT revoked_at FROM renlayer.api_keys WHERE id = $1', [k.body.id]);
    assert.notEqual(row.rows[0].revoked_at, null);
    const again = await s.call('POST', `/v1/agents/${A.agentId}/keys/${k.body.id}/expire`, { token: adminA, body: { at } });
    assert.equal(again.status, 409);
  });
});

describe('gates', () => {
  let gate;
  test('create with injected headers: values are write-only and sealed at rest', async () => {
    const r = await s.call('POST', `/v1/agents/${A.agentId}/gates`, {
      token: adminA,
      body: {
        name: 'anthropic', kind: 'anthropic', upstream_url: 'https://api.anthropic.com',
        pinned_model: 'claude-sonnet-4', strategy: 'fallback', fallback_gate_ids: [A.gateId],
        request_defaults: { temperature: 0.2, max_tokens: 512 },
        headers: { 'x-api-key': 'sk-ant-secret-value-1234', 'anthropic-beta': 'tools-2024' },
      },
    });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    gate = r.body;
    assert.deepEqual(gate.fallback_gate_ids, [A.gateId]);
    const hk = gate.headers.find((h) => h.name === 'x-api-key');
    assert.deepEqual(hk, { name: 'x-api-key', set: true, last4: '1234' });
    assert.ok(!JSON.stringify(gate).includes('sk-ant-secret'));
    const rows = await s.db.query("SELECT encode(value_ciphertext, 'escape') AS c, value_ciphertext FROM renlayer.gate_headers WHERE gate_id = $1", [gate.id]);
    assert.equal(rows.rows.length, 2);
    for (const row of rows.rows) {
      assert.ok(!row.c.includes('sk-ant-secret'), 'stored encrypted');
      assert.ok(row.value_ciphertext.length >= 28 + 10);
    }
  });

  test('validation: kind, url, headers, fallback chain of another agent', async () => {
    const r = await s.call('POST', `/v1/agents/${A.agentId}/gates`, {
      token: adminA, body: { name: 'x', kind: 'grpc', upstream_url: 'ftp://x', headers: { 'bad header': 'v' }, strategy: 'random' },
    });
    assert.equal(r.status, 400);
    for (const f of ['kind', 'upstream_url', 'headers.bad header', 'strategy']) assert.ok(r.body.error.fields[f], f);
    const other = await s.call('POST', '/v1/agents', { token: adminA, body: { name: 'other-agent' } });
    const og = await s.call('POST', `/v1/agents/${other.body.agent.id}/gates`, { token: adminA, body: { name: 'g', kind: 'openai' } });
    assert.equal(og.status, 201);
    const cross = await s.call('PATCH', `/v1/agents/${A.agentId}/gates/${gate.id}`, {
      token: adminA, body: { fallback_gate_ids: [og.body.id] },
    });
    assert.equal(cross.status, 400);
    assert.ok(cross.body.error.fields.fallback_gate_ids);
  });

  test('patch: header removed by null, default switches, audit without secrets', async () => {
    const p = await s.call('PATCH', `/v1/agents/${A.agentId}/gates/${gate.id}`, {
      token: adminA, body: { headers: { 'anthropic-beta': null, 'x-api-key': 'sk-ant-rotated-9876' }, is_default: true, pinned_model: null },
    });
    assert.equal(p.status, 200, JSON.stringify(p.body));
    assert.deepEqual(p.body.headers, [{ name: 'x-api-key', set: true, last4: '9876' }]);
    assert.equal(p.body.is_default, true);
    assert.equal(p.body.pinned_model, null);
    const old = await s.call('GET', `/v1/agents/${A.agentId}/gates/${A.gateId}`, { token: viewerA });
    assert.equal(old.body.is_default, false, 'one default gate per agent');
    const audit = await s.db.query("SELECT diff::text AS d FROM renlayer.audit_log WHERE target_id = $1", [gate.id]);
    assert.ok(audit.rows.length >= 2);
    assert.ok(audit.rows.every((r) => !r.d.includes('sk-ant')), 'no secret in the audit log');
    const list = await s.call('GET', `/v1/agents/${A.agentId}/gates`, { token: viewerA });
    assert.equal(list.status, 200);
    assert.ok(list.body.data.some((g) => g.id === gate.id));
    const d = await s.call('DELETE', `/v1/agents/${A.agentId}/gates/${gate.id}`, { token: adminA });
    assert.equal(d.status, 204);
    const gone = await s.db.query('SELECT count(*)::int AS n FROM renlayer.gate_headers WHERE gate_id = $1', [gate.id]);
    assert.equal(gone.rows[0].n, 0);
  });
});

describe('operators and operator tokens', () => {
  test('only owners manage operators; the last owner stays', async () => {
    const denied = await s.call('POST', '/v1/operators', { token: adminA, body: { email: 'x@a.test', role: 'viewer' } });
    assert.equal(denied.status, 403);
    const dup = await s.call('POST', '/v1/operators', { token: A.ownerToken, body: { email: 'ADMIN@a.test', role: 'viewer' } });
    assert.equal(dup.status, 409);
    const bad = await s.call('POST', '/v1/operators', { token: A.ownerToken, body: { email: 'nope', role: 'king' } });
    assert.equal(bad.status, 400);
    assert.ok(bad.body.error.fields.email && bad.body.error.fields.role);
    const me = await s.call('GET', '/v1/me', { token: A.ownerToken });
    const ownerId = me.body.operator.id;
    const demote = await s.call('PATCH', `/v1/operators/${ownerId}`, { token: A.ownerToken, body: { role: 'admin' } });
    assert.equal(demote.status, 409);
    const del = await s.call('DELETE', `/v1/operators/${ownerId}`, { token: A.ownerToken });
    assert.equal(del.status, 409);
    const temp = await s.call('POST', '/v1/operators', { token: A.ownerToken, body: { email: 'temp@a.test', role: 'viewer' } });
    const rename = await s.call('PATCH', `/v1/operators/${temp.body.id}`, { token: A.ownerToken, body: { name: 'Temp' } });
    assert.equal(rename.body.name, 'Temp');
    assert.equal((await s.call('DELETE', `/v1/operators/${temp.body.id}`, { token: A.ownerToken })).status, 204);
    const list = await s.call('GET', '/v1/operators', { token: viewerA });
    assert.equal(list.status, 200);
    assert.ok(!list.body.data.some((o) => o.id === temp.body.id));
  });

  test('operator tokens: shown once, stored hashed, revocation is immediate', async () => {
    const c = await s.call('POST', '/v1/operator-tokens', { token: adminA, body: { name: 'ci' } });
    assert.equal(c.status, 201, JSON.stringify(c.body));
    assert.match(c.body.secret, /^rlop_[0-9A-Za-z]{33}$/);
    assert.equal((await s.call('GET', '/v1/me', { token: c.body.secret })).status, 200);
    const list = await s.call('GET', '/v1/operator-tokens', { token: adminA });
    assert.ok(list.body.data.every((t) => t.secret === undefined));
    const d = await s.call('DELETE', `/v1/operator-tokens/${c.body.token.id}`, { token: adminA });
    assert.equal(d.status, 204);
    assert.equal((await s.call('GET', '/v1/me', { token: c.body.secret })).status, 401);
    const viewerList = await s.call('GET', '/v1/operator-tokens', { token: viewerA });
    assert.equal(viewerList.status, 200);
    assert.deepEqual(viewerList.body.data, [], 'viewers see only their own tokens');
  });
});

describe('prices', () => {
  test('list prices are seeded; a tenant price overrides only that tenant', async () => {
    const l = await s.call('GET', '/v1/prices', { token: viewerA });
    assert.equal(l.status, 200);
    const mini = l.body.data.find((p) => p.model === 'gpt-4o-mini');
    assert.ok(mini && mini.source === 'list' && mini.input_per_mtok > 0);
    const put = await s.call('PUT', '/v1/prices/gpt-4o-mini', {
      token: adminA, body: { input_per_mtok: 0.1, output_per_mtok: 0.4, cached_input_per_mtok: 0.05 },
    });
    assert.equal(put.status, 200, JSON.stringify(put.body));
    assert.equal(put.body.source, 'tenant');
    assert.equal(put.body.provider, 'openai');
    const a = (await s.call('GET', '/v1/prices', { token: adminA })).body.data.find((p) => p.model === 'gpt-4o-mini');
    const b = (await s.call('GET', '/v1/prices', { token: B.ownerToken })).body.data.find((p) => p.model === 'gpt-4o-mini');
    assert.equal(a.input_per_mtok, 0.1);
    assert.equal(b.source, 'list');
    assert.equal(b.input_per_mtok, mini.input_per_mtok, 'tenant B is not affected');
    const bad = await s.call('PUT', '/v1/prices/gpt-4o-mini', { token: adminA, body: { input_per_mtok: -1 } });
    assert.equal(bad.status, 400);
    assert.ok(bad.body.error.fields.input_per_mtok && bad.body.error.fields.output_per_mtok);
    assert.equal((await s.call('DELETE', '/v1/prices/gpt-4o-mini', { token: adminA })).status, 204);
    const again = (await s.call('GET', '/v1/prices', { token: adminA })).body.data.find((p) => p.model === 'gpt-4o-mini');
    assert.equal(again.source, 'list');
  });
});

describe('errors and limits', () => {
  test('malformed JSON, oversized bodies, unknown routes, no credentials', async () => {
    const j = await s.call('POST', '/v1/agents', { token: adminA, raw: '{"name":', headers: { 'content-type': 'application/json' } });
    assert.equal(j.status, 400);
    assert.equal(j.body.error.code, 'invalid_json');
    const big = await s.call('POST', '/v1/agents', { token: adminA, raw: JSON.stringify({ name: 'x'.repeat(300 * 1024) }) });
    assert.equal(big.status, 413);
    assert.equal(big.body.error.code, 'body_too_large');
    assert.equal((await s.call('GET', '/v1/nope', { token: adminA })).status, 404);
    const anon = await s.call('GET', '/v1/agents');
    assert.equal(anon.status, 401);
    assert.ok(anon.body.error.request_id);
    assert.equal((await s.call('GET', '/v1/agents', { token: 'rlop_garbage' })).status, 401);
  });

  test('open signup creates a tenant with its owner', async () => {
    const r = await s.call('POST', '/v1/tenants', { body: { name: 'Signup Co', owner_email: 'founder@signup.test' } });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    assert.equal(r.body.owner.role, 'owner');
    const bad = await s.call('POST', '/v1/tenants', { body: { name: '', owner_email: 'x' } });
    assert.equal(bad.status, 400);
  });
});

// Fills a route's path parameters with the ids of a tenant's resources.
function fill(pathPattern, ids) {
  const idFor = (p) => (p.startsWith('/v1/agents') ? ids.agentId : p.startsWith('/v1/operators') ? ids.operatorId
    : p.startsWith('/v1/traces') ? ids.traceId : p.startsWith('/v1/policy-sets') ? ids.policySetId
      : p.startsWith('/v1/policies') ? ids.policyId : p.startsWith('/v1/dlp/rules') ? ids.dlpRuleId : ids.tokenId);
  return pathPattern
    .replace('{id}', idFor(pathPattern))
    .replace('{key_id}', ids.keyId)
    .replace('{gate_id}', ids.gateId)
    .replace('{model}', 'gpt-4o')
    .replace('{detector}', 'email');
}

const bodies = {
  'POST /v1/agents': { name: 'rbac-agent' },
  'PATCH /v1/agents/{id}': { description: 'changed' },
  'POST /v1/agents/{id}/keys': { name: 'k' },
  'POST /v1/agents/{id}/keys/{key_id}/expire': { at: '2030-01-01T00:00:00Z' },
  'POST /v1/agents/{id}/gates': { name: 'rbac-gate', kind: 'openai' },
  'PATCH /v1/agents/{id}/gates/{gate_id}': { pinned_model: 'gpt-4o' },
  'POST /v1/operators': { email: 'rbac@a.test', role: 'viewer' },
  'PATCH /v1/operators/{id}': { name: 'changed' },
  'POST /v1/operator-tokens': { name: 't' },
  'PUT /v1/prices/{model}': { input_per_mtok: 1, output_per_mtok: 2 },
  'POST /v1/policy-sets': { name: 'rbac-set' },
  'PATCH /v1/policy-sets/{id}': { description: 'changed' },
  'POST /v1/policy-sets/{id}/reorder': { policy_ids: [] },
  'PATCH /v1/policies/{id}': { name: 'changed' },
  'PATCH /v1/dlp/rules/{id}': { name: 'changed' },
  'PUT /v1/dlp/builtins/{detector}': { severity: 'low' },
  'POST /v1/dlp/scan': { text: 'hello' },
};

// Routes that are not tenant resources: login, signup, the document.
const unscoped = new Set(['/v1/auth/otp/request', '/v1/auth/otp/verify', '/v1/tenants', '/v1/openapi.json']);

/** A UUIDv7 whose timestamp is ms, as the proxy mints trace ids. */
function uuidv7(ms) {
  const b = randomBytes(16);
  b.writeUIntBE(ms, 0, 6);
  b[6] = (b[6] & 0x0f) | 0x70;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Writes one trace of tenant t as the trace-writer would, and returns its id. */
async function seedTrace(t) {
  const at = Date.now() - 60000;
  const id = uuidv7(at);
  await s.db.query(
    `INSERT INTO renlayer.traces (trace_id, started_at, tenant_id, agent_id, gate_id, action, method, path, model,
       status, http_status, input_tokens, output_tokens, total_tokens, latency_ms, stream)
     VALUES ($1, $2, $3, $4, $5, 'chat', 'POST', '/v1/chat/completions', 'gpt-4o-mini', 'ALLOWED', 200, 1, 1, 2, 10, false)`,
    [id, new Date(at), t.tenantId, t.agentId, t.gateId]);
  return id;
}

/** A policy set with one policy and a custom DLP rule, through the API. */
async function seedPolicyAndRule(token) {
  const set = await s.call('POST', '/v1/policy-sets', { token, body: { name: `set-${Date.now()}-${Math.random()}` } });
  assert.equal(set.status, 201, JSON.stringify(set.body));
  const pol = await s.call('POST', '/v1/policies', { token, body: { policy_set_id: set.body.id, name: 'p', action: 'FLAG', conditions: { model: 'gpt-*' } } });
  assert.equal(pol.status, 201, JSON.stringify(pol.body));
  const rule = await s.call('POST', '/v1/dlp/rules', { token, body: { name: `r-${Math.random()}`, pattern: 'ticket-[0-9]{6}', severity: 'low', action: 'warn' } });
  assert.equal(rule.status, 201, JSON.stringify(rule.body));
  return { policySetId: set.body.id, policyId: pol.body.id, dlpRuleId: rule.body.id };
}

async function idsOf(t, token) {
  const keys = await s.call('GET', `/v1/agents/${t.agentId}/keys`, { token });
  const me = await s.call('GET', '/v1/me', { token });
  const tokens = await s.call('GET', '/v1/operator-tokens', { token });
  return {
    agentId: t.agentId,
    gateId: t.gateId,
    keyId: keys.body.data[0].id,
    operatorId: me.body.operator.id,
    tokenId: tokens.body.data[0].id,
    traceId: await seedTrace(t),
    ...(await seedPolicyAndRule(token)),
  };
}

describe('generated over the route table', () => {
  test('a viewer gets 403 on every mutation', async () => {
    const ids = await idsOf(A, A.ownerToken);
    const cases = routes.filter((r) => mutation(r.method) && !unscoped.has(r.path) && r.path !== '/v1/auth/logout');
    assert.ok(cases.length >= 15, `${cases.length} mutations`);
    for (const r of cases) {
      const res = await s.call(r.method, fill(r.path, ids), { token: viewerA, body: bodies[`${r.method} ${r.path}`] ?? {} });
      assert.equal(res.status, 403, `${r.method} ${r.path} -> ${res.status} ${JSON.stringify(res.body)}`);
      assert.equal(res.body.error.code, 'forbidden');
    }
    // and nothing changed
    const agent = await s.call('GET', `/v1/agents/${A.agentId}`, { token: viewerA });
    assert.equal(agent.status, 200);
  });

  test("an operator of tenant A gets 404 for every resource id of tenant B, on reads and writes", async () => {
    const idsB = await idsOf(B, B.ownerToken);
    // {model} and {detector} name shared things (a model, a built-in detector), not tenant rows
    const cases = routes.filter((r) => r.path.includes('{') && !r.path.includes('{model}') && !r.path.includes('{detector}'));
    assert.ok(cases.length >= 14, `${cases.length} routes with ids`);
    for (const r of cases) {
      const res = await s.call(r.method, fill(r.path, idsB), { token: A.ownerToken, body: bodies[`${r.method} ${r.path}`] ?? {} });
      assert.equal(res.status, 404, `${r.method} ${r.path} -> ${res.status} ${JSON.stringify(res.body)}`);
    }
    // tenant B's resources are untouched
    const agent = await s.call('GET', `/v1/agents/${B.agentId}`, { token: B.ownerToken });
    assert.equal(agent.status, 200);
    assert.equal(agent.body.description, 'Created by make run');
    const keys = await s.call('GET', `/v1/agents/${B.agentId}/keys`, { token: B.ownerToken });
    assert.ok(keys.body.data.every((k) => k.revoked_at === null && k.expires_at === null));
    const gate = await s.call('GET', `/v1/agents/${B.agentId}/gates/${B.gateId}`, { token: B.ownerToken });
    assert.equal(gate.status, 200);
    const own = await s.call('GET', `/v1/traces/${idsB.traceId}`, { token: B.ownerToken });
    assert.equal(own.status, 200, 'the trace is there for its own tenant');
    // lists never show another tenant's rows
    for (const list of ['/v1/agents', '/v1/operators', '/v1/operator-tokens', '/v1/audit', '/v1/traces']) {
      const res = await s.call('GET', list, { token: A.ownerToken });
      assert.ok(!JSON.stringify(res.body).includes(B.tenantId) && !JSON.stringify(res.body).includes(B.agentId), list);
    }
  });
});

describe('storage and audit', () => {
  test('keys and tokens are stored only as keyed hashes', async () => {
    const hashKey = createHmac('sha256', Buffer.from(testSecretKey, 'hex')).update('renlayer/apikey-hash/v1').digest();
    const expect = (secret) => createHmac('sha256', hashKey).update(secret).digest();
    const key = await s.db.query('SELECT key_hash FROM renlayer.api_keys WHERE key_hash = $1', [expect(A.agentKey)]);
    assert.equal(key.rows.length, 1, 'the agent key is found by its keyed hash');
    const tok = await s.db.query('SELECT token_hash FROM renlayer.operator_tokens WHERE token_hash = $1', [expect(A.ownerToken)]);
    assert.equal(tok.rows.length, 1);
    const dump = await s.db.query(`SELECT string_agg(t::text, ' ') AS all FROM (
        SELECT k::text AS t FROM renlayer.api_keys k UNION ALL SELECT o::text FROM renlayer.operator_tokens o
        UNION ALL SELECT c::text FROM renlayer.otp_codes c UNION ALL SELECT l::text FROM renlayer.audit_log l) x`);
    for (const secret of [A.agentKey, A.ownerToken, B.agentKey, B.ownerToken]) {
      assert.ok(!dump.rows[0].all.includes(secret.slice(8)), 'no secret in clear');
    }
  });

  test('every mutation of these tests left an audit row, and the log is append-only', async () => {
    const { rows } = await s.db.query('SELECT action, count(*)::int AS n FROM renlayer.audit_log WHERE tenant_id = $1 GROUP BY action', [A.tenantId]);
    const actions = Object.fromEntries(rows.map((r) => [r.action, r.n]));
    for (const a of ['tenant.create', 'operator.create', 'operator.update', 'operator.delete', 'agent.create', 'agent.update',
      'agent.delete', 'api_key.create', 'api_key.expire', 'api_key.revoke', 'gate.create', 'gate.update', 'gate.delete',
      'operator_token.create', 'operator_token.revoke', 'model_price.set', 'model_price.reset']) {
      assert.ok(actions[a] > 0, `audit has ${a}`);
    }
    const list = await s.call('GET', `/v1/audit?target=${A.agentId}`, { token: viewerA });
    assert.equal(list.status, 200);
    assert.ok(list.body.data.length > 0 && list.body.data.every((e) => e.target_id === A.agentId));
    const byOp = await s.call('GET', '/v1/audit?operator=not-a-uuid', { token: viewerA });
    assert.equal(byOp.status, 400);
    await assert.rejects(s.db.query("UPDATE renlayer.audit_log SET action = 'x.y' WHERE tenant_id = $1", [A.tenantId]), /append-only/);
    await assert.rejects(s.db.query('DELETE FROM renlayer.audit_log WHERE tenant_id = $1', [A.tenantId]), /append-only/);
  });
});
