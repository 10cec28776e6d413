// DLP through renlayer-api against a real PostgreSQL: custom rules checked
// with the engine's pattern validation, built-in overrides, POST /v1/dlp/scan
// with the tenant's engine, RBAC, tenant isolation, the audit log, and the
// scanned text never reaching the log or the database.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { startApiStack } from '../lib/api_stack.mjs';

let s; // the stack
let A; // tenant A (seeded)
let B; // tenant B (seeded)
let adminA; // JWT of an admin of A
let viewerA; // JWT of a viewer of A

/** A Luhn-valid 16-digit Visa number (not one of the published test cards). */
function luhnCard(prefix15) {
  const digits = prefix15.split('').map(Number);
  let sum = 0;
  for (let i = 0; i < 15; i++) {
    let d = digits[14 - i];
    if (i % 2 === 0) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
  }
  const full = prefix15 + String((10 - (sum % 10)) % 10);
  return full.match(/.{4}/g).join(' ');
}

const AWS_KEY = 'AKIAZ7Q4M2XK9T3VBN6W'; // synthetic, random-looking
const CARD = luhnCard('455673758689985');

before(async () => {
  s = await startApiStack();
  [A, B] = [await s.seedTenant('owner@da.test'), await s.seedTenant('owner@db.test')];
  for (const [email, role] of [['admin@da.test', 'admin'], ['viewer@da.test', 'viewer']]) {
    const c = await s.call('POST', '/v1/operators', { token: A.ownerToken, body: { email, role, name: role } });
    assert.equal(c.status, 201, JSON.stringify(c.body));
  }
  adminA = await s.login('admin@da.test');
  viewerA = await s.login('viewer@da.test');
});

after(async () => {
  await s?.close();
});

const audits = async (action, target) => (await s.db.query(
  'SELECT diff FROM renlayer.audit_log WHERE tenant_id = $1 AND action = $2 AND target_id = $3 ORDER BY at',
  [A.tenantId, action, target])).rows;

const scan = (text, where, token = adminA) => s.call('POST', '/v1/dlp/scan', { token, body: where ? { text, where } : { text } });

describe('built-in detectors', () => {
  test('listed with their defaults', async () => {
    const r = await s.call('GET', '/v1/dlp/rules', { token: viewerA });
    assert.equal(r.status, 200);
    assert.deepEqual(r.body.data, []);
    assert.equal(r.body.builtins.length, 18);
    const card = r.body.builtins.find((b) => b.detector === 'CREDIT_CARD');
    assert.deepEqual(card, {
      detector: 'CREDIT_CARD', enabled: true, severity: 'high', action: 'redact',
      default_severity: 'high', default_action: 'redact', overridden: false,
    });
  });

  test('override (stored lower-case), reset, 404 for unknown names, audit', async () => {
    const put = await s.call('PUT', '/v1/dlp/builtins/credit_card', { token: adminA, body: { severity: 'critical', action: 'block' } });
    assert.equal(put.status, 200, JSON.stringify(put.body));
    assert.equal(put.body.severity, 'critical');
    assert.equal(put.body.action, 'block');
    assert.equal(put.body.overridden, true);
    const row = await s.db.query('SELECT detector, severity, action, disabled FROM renlayer.dlp_builtin_overrides WHERE tenant_id = $1', [A.tenantId]);
    assert.deepEqual(row.rows, [{ detector: 'credit_card', severity: 'critical', action: 'block', disabled: false }]);
    const off = await s.call('PUT', '/v1/dlp/builtins/IP_ADDRESS', { token: adminA, body: { enabled: false } });
    assert.equal(off.status, 200);
    assert.equal(off.body.enabled, false);
    assert.equal(off.body.severity, 'low', 'a default stays a default');
    const list = await s.call('GET', '/v1/dlp/rules', { token: viewerA });
    assert.equal(list.body.builtins.find((b) => b.detector === 'IP_ADDRESS').enabled, false);
    assert.equal(list.body.builtins.find((b) => b.detector === 'CREDIT_CARD').action, 'block');
    assert.equal((await s.call('PUT', '/v1/dlp/builtins/not_a_detector', { token: adminA, body: {} })).status, 404);
    assert.equal((await s.call('DELETE', '/v1/dlp/builtins/nope', { token: adminA })).status, 404);
    const bad = await s.call('PUT', '/v1/dlp/builtins/email', { token: adminA, body: { severity: 'huge', action: 'shred', colour: 1 } });
    assert.equal(bad.status, 400);
    for (const f of ['severity', 'action', 'colour']) assert.ok(bad.body.error.fields[f], f);
    // B is not affected
    const b = await s.call('GET', '/v1/dlp/rules', { token: B.ownerToken });
    assert.equal(b.body.builtins.find((x) => x.detector === 'CREDIT_CARD').overridden, false);
    const reset = await s.call('DELETE', '/v1/dlp/builtins/CREDIT_CARD', { token: adminA });
    assert.equal(reset.status, 204);
    const after = await s.call('GET', '/v1/dlp/rules', { token: viewerA });
    assert.equal(after.body.builtins.find((x) => x.detector === 'CREDIT_CARD').overridden, false);
    const [set] = await audits('dlp_builtin.set', 'credit_card');
    assert.equal(set.diff.before.severity, 'high');
    assert.equal(set.diff.after.severity, 'critical');
    const [rs] = await audits('dlp_builtin.reset', 'credit_card');
    assert.equal(rs.diff.after.action, 'redact');
    assert.equal((await s.call('PUT', '/v1/dlp/builtins/ip_address', { token: adminA, body: {} })).body.enabled, true);
  });
});

describe('custom rules', () => {
  test('create, get, patch, delete with audit', async () => {
    const c = await s.call('POST', '/v1/dlp/rules', {
      token: adminA, body: { name: 'ticket ids', pattern: 'TCK-[0-9]{6}', severity: 'low', action: 'warn' },
    });
    assert.equal(c.status, 201, JSON.stringify(c.body));
    assert.equal(c.body.scope, 'both');
    assert.equal(c.body.enabled, true);
    const g = await s.call('GET', `/v1/dlp/rules/${c.body.id}`, { token: viewerA });
    assert.equal(g.body.pattern, 'TCK-[0-9]{6}');
    const p = await s.call('PATCH', `/v1/dlp/rules/${c.body.id}`, { token: adminA, body: { scope: 'response', enabled: false } });
    assert.equal(p.status, 200, JSON.stringify(p.body));
    assert.equal(p.body.scope, 'response');
    assert.equal(p.body.name, 'ticket ids');
    const badp = await s.call('PATCH', `/v1/dlp/rules/${c.body.id}`, { token: adminA, body: { pattern: 'a(b' } });
    assert.equal(badp.status, 400);
    assert.match(badp.body.error.fields.pattern, /offset \d+/);
    const [u] = await audits('dlp_rule.update', c.body.id);
    assert.equal(u.diff.before.scope, 'both');
    assert.equal(u.diff.after.scope, 'response');
    const dup = await s.call('POST', '/v1/dlp/rules', { token: adminA, body: { name: 'ticket ids', pattern: 'x+', severity: 'low', action: 'warn' } });
    assert.equal(dup.status, 409);
    assert.equal((await s.call('DELETE', `/v1/dlp/rules/${c.body.id}`, { token: adminA })).status, 204);
    assert.equal((await s.call('GET', `/v1/dlp/rules/${c.body.id}`, { token: adminA })).status, 404);
    assert.equal((await audits('dlp_rule.create', c.body.id)).length, 1);
    assert.equal((await audits('dlp_rule.delete', c.body.id)).length, 1);
  });

  test('validation: the pattern error with its offset, an empty-matching pattern, every bad field', async () => {
    const r = await s.call('POST', '/v1/dlp/rules', {
      token: adminA, body: { name: 'bad', pattern: 'abc(def', severity: 'severe', action: 'shred', scope: 'sideways', enabled: 'yes', colour: 1 },
    });
    assert.equal(r.status, 400);
    assert.match(r.body.error.fields.pattern, /^pattern error at offset \d+: /);
    for (const f of ['severity', 'action', 'scope', 'enabled', 'colour']) assert.ok(r.body.error.fields[f], f);
    const empty = await s.call('POST', '/v1/dlp/rules', { token: adminA, body: { name: 'empty', pattern: 'a*', severity: 'low', action: 'warn' } });
    assert.equal(empty.status, 400);
    assert.match(empty.body.error.fields.pattern, /empty string/);
    const missing = await s.call('POST', '/v1/dlp/rules', { token: adminA, body: {} });
    assert.equal(missing.status, 400);
    for (const f of ['name', 'pattern', 'severity', 'action']) assert.ok(missing.body.error.fields[f], f);
    const n = await s.db.query('SELECT count(*)::int AS n FROM renlayer.dlp_rules WHERE tenant_id = $1', [A.tenantId]);
    assert.equal(n.rows[0].n, 0);
  });

  test('a tenant has at most 256 rules (the engine\'s bound)', async () => {
    const t = await s.seedTenant('owner@many.test');
    await s.db.query(
      `INSERT INTO renlayer.dlp_rules (id, tenant_id, name, pattern, severity, action)
       SELECT gen_random_uuid(), $1, 'r' || i, 'x' || i || 'y', 'low', 'warn' FROM generate_series(1, 256) i`, [t.tenantId]);
    const r = await s.call('POST', '/v1/dlp/rules', { token: t.ownerToken, body: { name: 'one more', pattern: 'zz', severity: 'low', action: 'warn' } });
    assert.equal(r.status, 409);
    assert.match(r.body.error.message, /256/);
  });
});

describe('scan', () => {
  test('an AWS key and a Luhn-valid card: findings with offsets, redaction, verdict', async () => {
    const text = `deploy with ${AWS_KEY} and charge ${CARD} today`;
    const r = await scan(text);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const aws = r.body.findings.find((f) => f.detector === 'AWS_ACCESS_KEY');
    const card = r.body.findings.find((f) => f.detector === 'CREDIT_CARD');
    assert.ok(aws && card, JSON.stringify(r.body.findings));
    assert.deepEqual(aws, { detector: 'AWS_ACCESS_KEY', severity: 'critical', start: text.indexOf(AWS_KEY), end: text.indexOf(AWS_KEY) + AWS_KEY.length, action: 'block', builtin: true });
    assert.equal(card.start, text.indexOf(CARD));
    assert.equal(card.end, text.indexOf(CARD) + CARD.length);
    assert.equal(card.action, 'redact');
    assert.equal(r.body.verdict, 'blocked');
    assert.equal(r.body.redacted, `deploy with ${AWS_KEY} and charge [REDACTED:CREDIT_CARD] today`, 'block findings stay, redact ones go');
    const warned = await scan(`card ${CARD}`);
    assert.equal(warned.body.verdict, 'warned');
    assert.equal(warned.body.redacted, 'card [REDACTED:CREDIT_CARD]');
    const clean = await scan('nothing to see here');
    assert.deepEqual(clean.body, { findings: [], redacted: 'nothing to see here', verdict: 'clean', dropped: 0 });
  });

  test("a custom redact rule, the tenant's overrides and the rule's scope apply", async () => {
    const rule = await s.call('POST', '/v1/dlp/rules', {
      token: adminA, body: { name: 'project codes', pattern: 'PRJ-[0-9]{4}', severity: 'medium', action: 'redact', scope: 'request' },
    });
    assert.equal(rule.status, 201, JSON.stringify(rule.body));
    const text = 'see PRJ-1234 now';
    const r = await scan(text);
    assert.deepEqual(r.body.findings, [{ detector: rule.body.id, severity: 'medium', start: 4, end: 12, action: 'redact', builtin: false }]);
    assert.equal(r.body.redacted, `see [REDACTED:${rule.body.id}] now`);
    assert.equal(r.body.verdict, 'warned');
    const resp = await scan(text, 'response');
    assert.equal(resp.body.verdict, 'clean', 'a request-scoped rule does not scan responses');
    const other = await s.call('POST', '/v1/dlp/scan', { token: B.ownerToken, body: { text } });
    assert.equal(other.body.verdict, 'clean', "tenant A's rule does not apply to B");
    await s.call('PATCH', `/v1/dlp/rules/${rule.body.id}`, { token: adminA, body: { enabled: false } });
    assert.equal((await scan(text)).body.verdict, 'clean', 'a disabled rule is out of the engine');
    assert.equal((await s.call('PUT', '/v1/dlp/builtins/credit_card', { token: adminA, body: { enabled: false } })).status, 200);
    assert.equal((await scan(`card ${CARD}`)).body.verdict, 'clean', 'a disabled built-in finds nothing');
    assert.equal((await s.call('PUT', '/v1/dlp/builtins/credit_card', { token: adminA, body: { action: 'block' } })).status, 200);
    assert.equal((await scan(`card ${CARD}`)).body.verdict, 'blocked', 'an overridden action applies');
    assert.equal((await s.call('DELETE', '/v1/dlp/builtins/credit_card', { token: adminA })).status, 204);
  });

  test('bad requests name the field; the scanned text is neither logged nor stored', async () => {
    const r = await s.call('POST', '/v1/dlp/scan', { token: adminA, body: { where: 'sideways', colour: 1 } });
    assert.equal(r.status, 400);
    for (const f of ['text', 'where', 'colour']) assert.ok(r.body.error.fields[f], f);
    const marker = 'AKIAQ3M7Z9W2X5V8T4R6';
    await scan(`secret ${marker}`);
    assert.ok(!s.api.lines.some((l) => JSON.stringify(l).includes(marker)), 'not in the log');
    const dump = await s.db.query("SELECT string_agg(l::text, ' ') AS all FROM renlayer.audit_log l");
    assert.ok(!dump.rows[0].all.includes(marker), 'not in the audit log');
  });
});

describe('RBAC and tenant isolation', () => {
  test('viewers read but get 403 on every mutation and on scan', async () => {
    const rule = await s.call('POST', '/v1/dlp/rules', { token: adminA, body: { name: 'rbac', pattern: 'zz[0-9]+', severity: 'low', action: 'warn' } });
    assert.equal(rule.status, 201);
    assert.equal((await s.call('GET', `/v1/dlp/rules/${rule.body.id}`, { token: viewerA })).status, 200);
    for (const [m, u, body] of [
      ['POST', '/v1/dlp/rules', { name: 'v', pattern: 'v+', severity: 'low', action: 'warn' }],
      ['PATCH', `/v1/dlp/rules/${rule.body.id}`, { name: 'v' }],
      ['DELETE', `/v1/dlp/rules/${rule.body.id}`],
      ['PUT', '/v1/dlp/builtins/email', { enabled: false }],
      ['PUT', '/v1/dlp/builtins/{detector}', {}],
      ['DELETE', '/v1/dlp/builtins/email'],
      ['POST', '/v1/dlp/scan', { text: 'x' }],
    ]) {
      const r = await s.call(m, u, { token: viewerA, body: body ?? {} });
      assert.equal(r.status, 403, `${m} ${u}`);
      assert.equal(r.body.error.code, 'forbidden');
    }
  });

  test("another tenant's rules are 404 on reads and writes, and invisible in lists", async () => {
    const rb = await s.call('POST', '/v1/dlp/rules', { token: B.ownerToken, body: { name: 'b-rule', pattern: 'bb[0-9]+', severity: 'low', action: 'warn' } });
    assert.equal(rb.status, 201);
    for (const [m, body] of [['GET'], ['PATCH', { name: 'stolen' }], ['PATCH', {}], ['DELETE']]) {
      const r = await s.call(m, `/v1/dlp/rules/${rb.body.id}`, { token: A.ownerToken, body: body ?? {} });
      assert.equal(r.status, 404, `${m} -> ${r.status}`);
    }
    const list = await s.call('GET', '/v1/dlp/rules', { token: A.ownerToken });
    assert.ok(!JSON.stringify(list.body).includes(rb.body.id));
    const still = await s.call('GET', `/v1/dlp/rules/${rb.body.id}`, { token: B.ownerToken });
    assert.equal(still.body.name, 'b-rule');
    assert.equal((await s.call('PUT', '/v1/dlp/builtins/{detector}', { token: A.ownerToken, body: {} })).status, 404);
  });
});
