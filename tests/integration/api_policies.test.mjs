// Policy sets and policies through renlayer-api against a real PostgreSQL:
// CRUD, the engine's save-time validation, reorder, the tenant default,
// POST /v1/policies/evaluate, RBAC, tenant isolation and the audit log.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { startApiStack } from '../lib/api_stack.mjs';

let s; // the stack
let A; // tenant A (seeded)
let B; // tenant B (seeded)
let adminA; // JWT of an admin of A
let viewerA; // JWT of a viewer of A

before(async () => {
  s = await startApiStack();
  [A, B] = [await s.seedTenant('owner@pa.test'), await s.seedTenant('owner@pb.test')];
  for (const [email, role] of [['admin@pa.test', 'admin'], ['viewer@pa.test', 'viewer']]) {
    const c = await s.call('POST', '/v1/operators', { token: A.ownerToken, body: { email, role, name: role } });
    assert.equal(c.status, 201, JSON.stringify(c.body));
  }
  adminA = await s.login('admin@pa.test');
  viewerA = await s.login('viewer@pa.test');
});

after(async () => {
  await s?.close();
});

const audits = async (action, target) => (await s.db.query(
  'SELECT diff, operator_email FROM renlayer.audit_log WHERE tenant_id = $1 AND action = $2 AND target_id = $3 ORDER BY at',
  [A.tenantId, action, target])).rows;

async function newSet(body, token = adminA) {
  const r = await s.call('POST', '/v1/policy-sets', { token, body });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  return r.body;
}

async function newPolicy(body, token = adminA) {
  const r = await s.call('POST', '/v1/policies', { token, body });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  return r.body;
}

describe('policy sets', () => {
  test('create, get, list; one tenant default at a time; audit', async () => {
    const first = await newSet({ name: 'baseline', description: 'everyone', is_tenant_default: true });
    assert.equal(first.is_tenant_default, true);
    assert.equal(first.policy_count, 0);
    const second = await newSet({ name: 'strict', is_tenant_default: true });
    const again = await s.call('GET', `/v1/policy-sets/${first.id}`, { token: viewerA });
    assert.equal(again.status, 200);
    assert.equal(again.body.is_tenant_default, false, 'the previous default was unset');
    const list = await s.call('GET', '/v1/policy-sets', { token: viewerA });
    assert.equal(list.status, 200);
    assert.deepEqual(list.body.data.filter((x) => x.is_tenant_default).map((x) => x.id), [second.id]);
    const p = await s.call('PATCH', `/v1/policy-sets/${first.id}`, { token: adminA, body: { is_tenant_default: true, description: null } });
    assert.equal(p.status, 200, JSON.stringify(p.body));
    assert.equal(p.body.is_tenant_default, true);
    assert.equal(p.body.description, '');
    assert.equal(p.body.name, 'baseline', 'fields not sent are kept');
    assert.equal((await s.call('GET', `/v1/policy-sets/${second.id}`, { token: adminA })).body.is_tenant_default, false);
    const [c] = await audits('policy_set.create', first.id);
    assert.equal(c.operator_email, 'admin@pa.test');
    assert.equal(c.diff.after.name, 'baseline');
    const [u] = await audits('policy_set.update', first.id);
    assert.equal(u.diff.before.description, 'everyone');
    assert.equal(u.diff.after.description, '');
    const d = await s.call('DELETE', `/v1/policy-sets/${second.id}`, { token: adminA });
    assert.equal(d.status, 204);
    assert.equal((await s.call('GET', `/v1/policy-sets/${second.id}`, { token: adminA })).status, 404);
    assert.equal((await audits('policy_set.delete', second.id)).length, 1);
  });

  test('validation names the fields; duplicate names conflict', async () => {
    const r = await s.call('POST', '/v1/policy-sets', { token: adminA, body: { name: '', is_tenant_default: 'yes', colour: 1 } });
    assert.equal(r.status, 400);
    for (const f of ['name', 'is_tenant_default', 'colour']) assert.ok(r.body.error.fields[f], f);
    const dup = await s.call('POST', '/v1/policy-sets', { token: adminA, body: { name: 'baseline' } });
    assert.equal(dup.status, 409);
  });
});

describe('policies', () => {
  let set;
  before(async () => {
    set = await newSet({ name: 'crud' });
  });

  test('create with defaults, get, list by set', async () => {
    const p = await newPolicy({ policy_set_id: set.id, name: 'no admin paths', action: 'DENY', conditions: { path: '/admin/*' } });
    assert.equal(p.priority, 10, 'the first policy of a set gets 10');
    assert.deepEqual(p.scope, { agents: [], gates: [] });
    assert.equal(p.enabled, true);
    assert.equal(p.message, '');
    const q = await newPolicy({ policy_set_id: set.id, name: 'second', action: 'FLAG' });
    assert.equal(q.priority, 20, 'then 10 above the largest');
    const g = await s.call('GET', `/v1/policies/${p.id}`, { token: viewerA });
    assert.equal(g.status, 200);
    assert.deepEqual(g.body.conditions, { path: '/admin/*' });
    const list = await s.call('GET', `/v1/policies?policy_set=${set.id}`, { token: viewerA });
    assert.equal(list.status, 200);
    assert.deepEqual(list.body.data.map((x) => x.id).sort(), [p.id, q.id].sort());
    const bad = await s.call('GET', '/v1/policies?policy_set=nope', { token: viewerA });
    assert.equal(bad.status, 400);
    assert.ok(bad.body.error.fields.policy_set);
  });

  test('the engine checks a policy when it is saved: 400 naming the field with its message', async () => {
    const regex = await s.call('POST', '/v1/policies', {
      token: adminA, body: { policy_set_id: set.id, name: 'bad regex', action: 'DENY', conditions: { tool: ['ok_*', { regex: '[z-a]' }] } },
    });
    assert.equal(regex.status, 400, JSON.stringify(regex.body));
    const [field, msg] = Object.entries(regex.body.error.fields)[0];
    assert.equal(field, 'conditions.tool[1].regex');
    assert.match(msg, /invalid regular expression at offset \d+/);
    const cond = await s.call('POST', '/v1/policies', {
      token: adminA, body: { policy_set_id: set.id, name: 'bad condition', action: 'DENY', conditions: { colour: 'red' } },
    });
    assert.equal(cond.status, 400);
    assert.match(cond.body.error.fields['conditions.colour'], /unknown condition/);
    const time = await s.call('POST', '/v1/policies', {
      token: adminA, body: { policy_set_id: set.id, name: 'bad time', action: 'DENY', conditions: { time: { start: '25:00', end: '06:00' } } },
    });
    assert.equal(time.status, 400);
    assert.match(time.body.error.fields['conditions.time.start'], /not a time of day/);
    const shape = await s.call('POST', '/v1/policies', {
      token: adminA, body: { name: '', action: 'MAYBE', priority: 1.5, conditions: 'x', enabled: 1, extra: true },
    });
    assert.equal(shape.status, 400);
    for (const f of ['policy_set_id', 'name', 'action', 'priority', 'conditions', 'enabled', 'extra']) {
      assert.ok(shape.body.error.fields[f], f);
    }
    const nowhere = await s.call('POST', '/v1/policies', {
      token: adminA, body: { policy_set_id: '01900000-0000-7000-8000-000000000000', name: 'x', action: 'DENY' },
    });
    assert.equal(nowhere.status, 400);
    assert.ok(nowhere.body.error.fields.policy_set_id);
    const n = await s.db.query("SELECT count(*)::int AS n FROM renlayer.policies WHERE name LIKE 'bad %'");
    assert.equal(n.rows[0].n, 0, 'nothing invalid was stored');
  });

  test('patch is checked as the merged policy, audited with before and after; delete', async () => {
    const p = await newPolicy({ policy_set_id: set.id, name: 'patched', action: 'DENY', message: 'no', conditions: { method: 'DELETE' } });
    const bad = await s.call('PATCH', `/v1/policies/${p.id}`, { token: adminA, body: { conditions: { method: 'DELETE', not: { nope: 1 } } } });
    assert.equal(bad.status, 400);
    assert.ok(bad.body.error.fields['conditions.not.nope'], JSON.stringify(bad.body));
    const ok = await s.call('PATCH', `/v1/policies/${p.id}`, { token: adminA, body: { enabled: false, message: null, action: 'FLAG' } });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    assert.equal(ok.body.enabled, false);
    assert.equal(ok.body.message, '');
    assert.equal(ok.body.action, 'FLAG');
    assert.equal(ok.body.priority, p.priority, 'priority kept');
    assert.deepEqual(ok.body.conditions, { method: 'DELETE' });
    const [u] = await audits('policy.update', p.id);
    assert.equal(u.diff.before.enabled, true);
    assert.equal(u.diff.after.enabled, false);
    assert.equal(u.diff.before.action, 'DENY');
    const dup = await s.call('PATCH', `/v1/policies/${p.id}`, { token: adminA, body: { name: 'second' } });
    assert.equal(dup.status, 409);
    assert.equal((await s.call('DELETE', `/v1/policies/${p.id}`, { token: adminA })).status, 204);
    assert.equal((await s.call('GET', `/v1/policies/${p.id}`, { token: adminA })).status, 404);
    assert.equal((await audits('policy.create', p.id)).length, 1);
    assert.equal((await audits('policy.delete', p.id)).length, 1);
  });

  test('reorder assigns 10, 20, 30 in the given order; ids must be the set\'s', async () => {
    const r = await newSet({ name: 'reorder' });
    const [a, b, c] = [await newPolicy({ policy_set_id: r.id, name: 'a', action: 'ALLOW' }),
      await newPolicy({ policy_set_id: r.id, name: 'b', action: 'ALLOW' }),
      await newPolicy({ policy_set_id: r.id, name: 'c', action: 'ALLOW' })];
    const res = await s.call('POST', `/v1/policy-sets/${r.id}/reorder`, { token: adminA, body: { policy_ids: [c.id, a.id, b.id] } });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(res.body.data.map((p) => [p.name, p.priority]), [['c', 10], ['a', 20], ['b', 30]]);
    const partial = await s.call('POST', `/v1/policy-sets/${r.id}/reorder`, { token: adminA, body: { policy_ids: [b.id] } });
    assert.equal(partial.status, 200);
    assert.deepEqual(partial.body.data.map((p) => [p.name, p.priority]), [['b', 10], ['c', 20], ['a', 30]],
      'unlisted policies follow in their current order');
    const other = await newPolicy({ policy_set_id: set.id, name: 'elsewhere', action: 'ALLOW' });
    for (const body of [{ policy_ids: [a.id, other.id] }, { policy_ids: [a.id, a.id] }, { policy_ids: [] }, { policy_ids: ['x'] }, {}]) {
      const e = await s.call('POST', `/v1/policy-sets/${r.id}/reorder`, { token: adminA, body });
      assert.equal(e.status, 400, JSON.stringify(body));
      assert.ok(e.body.error.fields.policy_ids, JSON.stringify(e.body));
    }
    const rows = await audits('policy_set.reorder', r.id);
    assert.equal(rows.length, 2);
    assert.deepEqual(rows[0].diff.after.map((x) => x.id), [c.id, a.id, b.id]);
    assert.deepEqual(rows[0].diff.before.map((x) => x.id), [a.id, b.id, c.id]);
  });
});

describe('evaluate', () => {
  let set;
  let deny;
  let flag;
  let dlp;
  before(async () => {
    set = await newSet({ name: 'live', is_tenant_default: true });
    deny = await newPolicy({
      policy_set_id: set.id, name: 'no deletes over MCP', priority: 10, action: 'DENY',
      message: 'Destructive tools are not allowed.', conditions: { action: 'mcp', tool: ['delete_*'] },
    });
    dlp = await newPolicy({ policy_set_id: set.id, name: 'no cloud keys', priority: 20, action: 'DENY', message: 'keys', conditions: { dlp: 'AWS_ACCESS_KEY' } });
    flag = await newPolicy({ policy_set_id: set.id, name: 'big models', priority: 30, action: 'FLAG', message: 'review', conditions: { model: 'gpt-4*' } });
    await newPolicy({ policy_set_id: set.id, name: 'disabled', priority: 1, action: 'DENY', enabled: false });
  });

  test('DENY by a matching policy, with its id, name, reason and message', async () => {
    const r = await s.call('POST', '/v1/policies/evaluate', {
      token: adminA, body: { agent_id: A.agentId, action: 'mcp', method: 'POST', path: '/mcp', tool_names: ['delete_repo'] },
    });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.decision, 'DENIED');
    assert.equal(r.body.action, 'DENY');
    assert.equal(r.body.matched, true);
    assert.deepEqual(r.body.policy, { id: deny.id, name: 'no deletes over MCP' });
    assert.deepEqual(r.body.policy_set, { id: set.id, name: 'live' });
    assert.match(r.body.reason, /no deletes over MCP/);
    assert.equal(r.body.message, 'Destructive tools are not allowed.');
  });

  test('ALLOW when nothing matches; disabled policies are not evaluated', async () => {
    const r = await s.call('POST', '/v1/policies/evaluate', {
      token: adminA, body: { agent_id: A.agentId, gate_id: A.gateId, method: 'POST', path: '/v1/chat/completions', headers: { 'x-env': 'dev' } },
    });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.decision, 'ALLOWED');
    assert.equal(r.body.policy, null);
    assert.equal(r.body.matched, false);
    assert.equal(r.body.message, null);
    assert.match(r.body.reason, /no policy matched/);
  });

  test('FLAG from the model of a sample body; DENY from the DLP findings in it', async () => {
    const f = await s.call('POST', '/v1/policies/evaluate', {
      token: adminA,
      body: { agent_id: A.agentId, action: 'chat', method: 'POST', path: '/v1/chat/completions', body: { model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] } },
    });
    assert.equal(f.status, 200, JSON.stringify(f.body));
    assert.equal(f.body.decision, 'FLAGGED');
    assert.equal(f.body.policy.id, flag.id);
    assert.equal(f.body.message, 'review');
    const d = await s.call('POST', '/v1/policies/evaluate', {
      token: adminA,
      body: { agent_id: A.agentId, path: '/v1/chat/completions', body: { model: 'gpt-4o', messages: [{ role: 'user', content: 'my key is AKIAZ7Q4M2XK9T3VBN6W' }] } },
    });
    assert.equal(d.body.decision, 'DENIED', JSON.stringify(d.body));
    assert.equal(d.body.policy.id, dlp.id, 'the DLP policy comes before the FLAG one');
    // a body given as JSON text is read as the proxy reads it: escapes of plain ASCII decoded
    const t = await s.call('POST', '/v1/policies/evaluate', {
      token: adminA,
      body: { agent_id: A.agentId, path: '/v1/chat/completions', body: '{"messages":[{"role":"user","content":"my key is \\u0041KIAZ7Q4M2XK9T3VBN6W"}]}' },
    });
    assert.equal(t.body.decision, 'DENIED', JSON.stringify(t.body));
    assert.equal(t.body.policy.id, dlp.id, 'the key, written \\u0041KIA in JSON text, is found');
  });

  test('a query string in the path is scanned decoded, as the proxy scans it, and left out of the path condition', async () => {
    const pathOnly = await newPolicy({ policy_set_id: set.id, name: 'exact path', priority: 15, action: 'FLAG', message: 'path', conditions: { path: '/v1/embeddings' } });
    const q = await s.call('POST', '/v1/policies/evaluate', {
      token: adminA, body: { agent_id: A.agentId, method: 'GET', path: '/v1/files?note=x&key=%41KIAZ7Q4M2XK9T3VBN6W' },
    });
    assert.equal(q.status, 200, JSON.stringify(q.body));
    assert.equal(q.body.decision, 'DENIED', JSON.stringify(q.body));
    assert.equal(q.body.policy.id, dlp.id, 'the key, written %41KIA, is found in the decoded query');
    const p = await s.call('POST', '/v1/policies/evaluate', {
      token: adminA, body: { agent_id: A.agentId, method: 'POST', path: '/v1/embeddings?api-version=2024-10-21' },
    });
    assert.equal(p.body.decision, 'FLAGGED', JSON.stringify(p.body));
    assert.equal(p.body.policy.id, pathOnly.id, 'the path without its query matches');
    // a form body on an http call is read decoded, as the proxy reads it
    const formBody = (headers) => s.call('POST', '/v1/policies/evaluate', {
      token: adminA, body: { agent_id: A.agentId, action: 'http', method: 'POST', path: '/v2/charges', headers, body: 'key=%41KIAZ7Q4M2XK9T3VBN6W&amount=1' },
    });
    const f = await formBody({ 'Content-Type': 'application/x-www-form-urlencoded' });
    assert.equal(f.body.decision, 'DENIED', JSON.stringify(f.body));
    assert.equal(f.body.policy.id, dlp.id);
    const raw = await formBody({ 'content-type': 'text/plain' });
    assert.equal(raw.body.decision, 'ALLOWED', `a text body is read as sent: ${JSON.stringify(raw.body)}`);
    const del = await s.call('DELETE', `/v1/policies/${pathOnly.id}`, { token: adminA });
    assert.ok(del.status === 200 || del.status === 204, JSON.stringify(del.body));
  });

  test("the agent's own policy set wins over the tenant default", async () => {
    const own = await newSet({ name: 'agent own' });
    await newPolicy({ policy_set_id: own.id, name: 'deny all', action: 'DENY', message: 'closed' });
    const ag = await s.call('POST', '/v1/agents', { token: adminA, body: { name: 'own-set-agent', default_policy_set_id: own.id } });
    assert.equal(ag.status, 201, JSON.stringify(ag.body));
    const r = await s.call('POST', '/v1/policies/evaluate', { token: adminA, body: { agent_id: ag.body.agent.id, path: '/x' } });
    assert.equal(r.body.decision, 'DENIED');
    assert.equal(r.body.policy_set.id, own.id);
    const direct = await s.call('POST', '/v1/policies/evaluate', { token: adminA, body: { policy_set_id: set.id, path: '/x' } });
    assert.equal(direct.body.decision, 'ALLOWED');
  });

  test('a stored set that does not compile denies, as in the proxy', async () => {
    const broken = await newSet({ name: 'broken' });
    const ok = await newPolicy({ policy_set_id: broken.id, name: 'fine', action: 'ALLOW', priority: 5 });
    // a row written behind the API's back (or by an older version)
    await s.db.query(
      `INSERT INTO renlayer.policies (id, tenant_id, policy_set_id, name, action, conditions)
       VALUES ('01900000-0000-7000-8000-0000000000bb', $1, $2, 'unreadable', 'DENY', '{"colour": "red"}')`,
      [A.tenantId, broken.id]);
    const r = await s.call('POST', '/v1/policies/evaluate', { token: adminA, body: { policy_set_id: broken.id, path: '/x' } });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.decision, 'DENIED');
    assert.equal(r.body.error, true);
    assert.equal(r.body.policy.id, '01900000-0000-7000-8000-0000000000bb');
    assert.match(r.body.reason, /conditions\.colour/);
    assert.notEqual(r.body.policy.id, ok.id);
  });

  test('bad inputs name the field', async () => {
    const r = await s.call('POST', '/v1/policies/evaluate', { token: adminA, body: { agent_id: A.agentId, action: 'teleport' } });
    assert.equal(r.status, 400);
    assert.ok(r.body.error.fields.action, JSON.stringify(r.body));
    const u = await s.call('POST', '/v1/policies/evaluate', { token: adminA, body: { agent_id: A.agentId, colour: 'red' } });
    assert.equal(u.status, 400);
    assert.ok(u.body.error.fields.colour, JSON.stringify(u.body));
    const b = await s.call('POST', '/v1/policies/evaluate', { token: adminA, body: { agent_id: B.agentId } });
    assert.equal(b.status, 400);
    assert.ok(b.body.error.fields.agent_id, 'another tenant\'s agent is unknown');
  });
});

describe('RBAC and tenant isolation', () => {
  test('viewers read but get 403 on every mutation and dry run', async () => {
    const set = await newSet({ name: 'rbac' });
    const p = await newPolicy({ policy_set_id: set.id, name: 'r', action: 'ALLOW' });
    assert.equal((await s.call('GET', `/v1/policy-sets/${set.id}`, { token: viewerA })).status, 200);
    assert.equal((await s.call('GET', '/v1/policies', { token: viewerA })).status, 200);
    for (const [m, u, body] of [
      ['POST', '/v1/policy-sets', { name: 'v' }],
      ['PATCH', `/v1/policy-sets/${set.id}`, { name: 'v' }],
      ['DELETE', `/v1/policy-sets/${set.id}`],
      ['POST', `/v1/policy-sets/${set.id}/reorder`, { policy_ids: [p.id] }],
      ['POST', '/v1/policies', { policy_set_id: set.id, name: 'v', action: 'DENY' }],
      ['PATCH', `/v1/policies/${p.id}`, { name: 'v' }],
      ['DELETE', `/v1/policies/${p.id}`],
      ['POST', '/v1/policies/evaluate', { agent_id: A.agentId }],
    ]) {
      const r = await s.call(m, u, { token: viewerA, body: body ?? {} });
      assert.equal(r.status, 403, `${m} ${u}`);
      assert.equal(r.body.error.code, 'forbidden');
    }
    assert.equal((await s.call('GET', `/v1/policies/${p.id}`, { token: viewerA })).body.name, 'r', 'unchanged');
  });

  test("another tenant's sets and policies are 404 on reads and writes, and invisible in lists", async () => {
    const setB = await newSet({ name: 'b-set' }, B.ownerToken);
    const pB = await newPolicy({ policy_set_id: setB.id, name: 'b-policy', action: 'DENY' }, B.ownerToken);
    for (const [m, u, body] of [
      ['GET', `/v1/policy-sets/${setB.id}`],
      ['PATCH', `/v1/policy-sets/${setB.id}`, { name: 'stolen' }],
      ['DELETE', `/v1/policy-sets/${setB.id}`],
      ['POST', `/v1/policy-sets/${setB.id}/reorder`, { policy_ids: [pB.id] }],
      ['POST', `/v1/policy-sets/${setB.id}/reorder`, {}],
      ['GET', `/v1/policies/${pB.id}`],
      ['PATCH', `/v1/policies/${pB.id}`, { name: 'stolen' }],
      ['DELETE', `/v1/policies/${pB.id}`],
    ]) {
      const r = await s.call(m, u, { token: A.ownerToken, body: body ?? {} });
      assert.equal(r.status, 404, `${m} ${u} -> ${r.status}`);
    }
    const into = await s.call('POST', '/v1/policies', { token: A.ownerToken, body: { policy_set_id: setB.id, name: 'x', action: 'DENY' } });
    assert.equal(into.status, 400);
    assert.ok(into.body.error.fields.policy_set_id);
    const move = await s.call('POST', '/v1/policies/evaluate', { token: A.ownerToken, body: { policy_set_id: setB.id } });
    assert.equal(move.status, 400);
    const lists = [await s.call('GET', '/v1/policy-sets', { token: A.ownerToken }),
      await s.call('GET', `/v1/policies?policy_set=${setB.id}`, { token: A.ownerToken }),
      await s.call('GET', '/v1/policies', { token: A.ownerToken })];
    for (const l of lists) {
      assert.equal(l.status, 200);
      assert.ok(!JSON.stringify(l.body).includes(setB.id) && !JSON.stringify(l.body).includes(pB.id));
    }
    const still = await s.call('GET', `/v1/policies/${pB.id}`, { token: B.ownerToken });
    assert.equal(still.body.name, 'b-policy');
  });
});
