// Login and authentication of renlayer-api against real PostgreSQL and NATS:
// e-mail codes (dev-mode log, SMTP to a fake server, neither), their limits,
// single use and hashing; session JWTs in the cookie and the Authorization
// header, CSRF, tampering, expiry and logout; operator tokens.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomUUID } from 'node:crypto';
import { createServer } from 'node:net';
import { runBinary, startService, waitFor, testSecretKey } from '../lib/harness.mjs';
import { startApiStack } from '../lib/api_stack.mjs';

const jwtSecret = 'a5'.repeat(32); // RENLAYER_JWT_SECRET: lets the test sign tokens
let s; // the stack: pg, nats, the dev-mode api, a pg client
const extra = []; // further api instances, stopped in after()
let smtp; // the fake SMTP server
let tenantA; // {tenant, owner} from create-tenant

before(async () => {
  s = await startApiStack({ RENLAYER_JWT_SECRET: jwtSecret });
  const r = await runBinary('api', ['create-tenant', '--name', 'A', '--owner-email', 'owner@a.test'], {
    RENLAYER_DATABASE_URL: s.env.RENLAYER_DATABASE_URL,
    RENLAYER_SECRET_KEY: testSecretKey,
  });
  assert.equal(r.code, 0, r.stderr);
  tenantA = JSON.parse(r.stdout);
});

after(async () => {
  // Every api instance stops cleanly (and, in a sanitizer build, without a report).
  const codes = await Promise.all([...extra, s?.api].filter(Boolean).map((svc) => svc.stop()));
  await new Promise((resolve) => (smtp ? smtp.server.close(resolve) : resolve()));
  await s?.close();
  for (const [i, svc] of [...extra, s?.api].filter(Boolean).entries()) {
    assert.equal(codes[i], 0, `api exit code\n${svc.logText().slice(-4000)}`);
    assert.doesNotMatch(svc.logText(), /Sanitizer/);
  }
});

// ---- helpers --------------------------------------------------------------------------

async function call(method, urlPath, { body, headers = {}, base = s.url } = {}) {
  const h = { ...headers };
  if (body !== undefined) h['content-type'] = 'application/json';
  const res = await fetch(`${base}${urlPath}`, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let parsed = text;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    /* not JSON */
  }
  return { status: res.status, headers: res.headers, body: parsed };
}

const bearer = (t) => ({ authorization: `Bearer ${t}` });
const cookie = (t) => ({ cookie: `other=1; renlayer_session=${t}` });

/** Forgets past code requests so each test starts below the rate limits. */
const resetLimits = () => s.db.query('DELETE FROM renlayer.otp_requests');

/** Requests a code and reads it from the dev-mode log. */
async function requestCode(email, svc = s.api) {
  const from = svc.lines.length;
  const r = await call('POST', '/v1/auth/otp/request', { body: { email }, base: svc.url });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  assert.deepEqual(r.body, { status: 'sent' });
  const line = await waitFor(() => svc.lines.slice(from).find((l) => l.msg === 'login code' && l.email === email.toLowerCase()), {
    what: `login code for ${email}`,
  });
  return line.code;
}

const verify = (email, code, extraBody = {}, base = s.url) => call('POST', '/v1/auth/otp/verify', { body: { email, code, ...extraBody }, base });

function sessionOf(res) {
  const c = res.headers.get('set-cookie') || '';
  const m = /renlayer_session=([^;]*)/.exec(c);
  return m ? m[1] : null;
}

/** Logs email in; resolves to {jwt, body, setCookie}. */
async function login(email, extraBody = {}) {
  await resetLimits();
  const code = await requestCode(email);
  const r = await verify(email, code, extraBody);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return { jwt: sessionOf(r), body: r.body, setCookie: r.headers.get('set-cookie') };
}

const b64u = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');
const claimsOf = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString());

function sign(header, claims, key = Buffer.from(jwtSecret, 'hex')) {
  const head = `${b64u(header)}.${b64u(claims)}`;
  return `${head}.${createHmac('sha256', key).update(head).digest('base64url')}`;
}

const otherDigits = (code) => String((Number(code) + 1) % 1000000).padStart(6, '0');

// ---- login ------------------------------------------------------------------------------

test('a full login sets the session cookie, which works on /v1/me, and so does the JWT as Bearer', async () => {
  const { jwt, body, setCookie } = await login('Owner@A.test');
  assert.equal(body.operator.email, 'owner@a.test');
  assert.equal(body.operator.role, 'owner');
  assert.equal(body.operator.tenant_id, tenantA.tenant.id);
  assert.equal(body.operator.id, tenantA.owner.id);
  assert.equal(typeof body.operator.name, 'string');
  assert.ok(Date.parse(body.expires_at) > Date.now() + 11 * 3600 * 1000, body.expires_at);
  assert.equal(body.token, undefined, 'the JWT travels only in the httpOnly cookie');
  assert.match(setCookie, /^renlayer_session=[\w-]+\.[\w-]+\.[\w-]+; Path=\/; HttpOnly; SameSite=Strict; Max-Age=43200$/);
  assert.doesNotMatch(setCookie, /Secure/, 'dev mode: no Secure attribute');

  const me = await call('GET', '/v1/me', { headers: cookie(jwt) });
  assert.equal(me.status, 200, JSON.stringify(me.body));
  assert.deepEqual(me.body.tenant, { id: tenantA.tenant.id, name: 'A' });
  assert.equal(me.body.operator.id, tenantA.owner.id);
  assert.equal(me.body.auth, 'session');
  const viaBearer = await call('GET', '/v1/me', { headers: bearer(jwt) });
  assert.equal(viaBearer.status, 200);
  assert.equal(viaBearer.body.operator.email, 'owner@a.test');

  const c = claimsOf(jwt);
  assert.equal(c.sub, tenantA.owner.id);
  assert.equal(c.tid, tenantA.tenant.id);
  assert.equal(c.role, 'owner');
  assert.equal(c.exp - c.iat, 43200);
  const sess = await s.db.query(
    'SELECT tenant_id, operator_id, revoked_at, extract(epoch FROM expires_at)::bigint AS exp, client_addr::text FROM renlayer.operator_sessions WHERE id = $1',
    [c.jti],
  );
  assert.equal(sess.rows.length, 1, 'the jti is the session row');
  assert.equal(sess.rows[0].operator_id, tenantA.owner.id);
  assert.equal(Number(sess.rows[0].exp), c.exp);
  assert.equal(sess.rows[0].revoked_at, null);
  const op = await s.db.query('SELECT last_login_at FROM renlayer.operators WHERE id = $1', [tenantA.owner.id]);
  assert.ok(op.rows[0].last_login_at, 'last_login_at is set');
  const audit = await s.db.query("SELECT operator_id, target_id, client_addr FROM renlayer.audit_log WHERE action = 'auth.login' AND target_id = $1", [c.jti]);
  assert.equal(audit.rows.length, 1);
  assert.equal(audit.rows[0].operator_id, tenantA.owner.id);
});

test('codes are stored only as keyed hashes', async () => {
  await resetLimits();
  const code = await requestCode('owner@a.test');
  const { rows } = await s.db.query(
    "SELECT c::text AS row_text, encode(code_hash, 'hex') AS hex, octet_length(code_hash) AS n, extract(epoch FROM expires_at - created_at)::int AS ttl FROM renlayer.otp_codes c WHERE lower(email) = 'owner@a.test' ORDER BY created_at DESC LIMIT 1",
  );
  assert.equal(rows[0].n, 32);
  assert.equal(rows[0].ttl, 600, 'a code lives 10 minutes');
  assert.ok(!rows[0].row_text.includes(code), 'the plain code appears nowhere in the row');
  assert.ok(!rows[0].hex.includes(Buffer.from(code).toString('hex')));
  // An unkeyed hash of the code would be testable from a database copy alone.
  const { createHash } = await import('node:crypto');
  for (const guess of [code, `owner@a.test${code}`, `owner@a.test\0${code}`]) {
    assert.notEqual(rows[0].hex, createHash('sha256').update(guess).digest('hex'));
  }
});

test('an unknown address gets the same 202 and no code row', async () => {
  await resetLimits();
  const from = s.api.lines.length;
  const r = await call('POST', '/v1/auth/otp/request', { body: { email: 'nobody@nowhere.test' } });
  assert.equal(r.status, 202);
  assert.deepEqual(r.body, { status: 'sent' });
  const { rows } = await s.db.query("SELECT count(*)::int AS n FROM renlayer.otp_codes WHERE lower(email) = 'nobody@nowhere.test'");
  assert.equal(rows[0].n, 0);
  // Let a known address's code reach the log, then check none was written for the unknown one.
  await requestCode('owner@a.test');
  assert.ok(!s.api.lines.slice(from).some((l) => l.email === 'nobody@nowhere.test' && l.code));
  const v = await verify('nobody@nowhere.test', '123456');
  assert.equal(v.status, 401);
  assert.equal(v.body.error.code, 'invalid_code');
});

test('bad input names each bad field', async () => {
  let r = await call('POST', '/v1/auth/otp/request', { body: { email: 'not-an-address' } });
  assert.equal(r.status, 400);
  assert.ok(r.body.error.fields.email);
  r = await call('POST', '/v1/auth/otp/request', { body: {} });
  assert.equal(r.status, 400);
  assert.ok(r.body.error.fields.email);
  r = await call('POST', '/v1/auth/otp/verify', { body: { email: 'x', code: '12ab56', tenant_id: 'nope' } });
  assert.equal(r.status, 400);
  assert.deepEqual(Object.keys(r.body.error.fields).sort(), ['code', 'email', 'tenant_id']);
  assert.ok(r.body.error.request_id);
});

test('five wrong guesses kill a code', async () => {
  await resetLimits();
  const code = await requestCode('owner@a.test');
  for (let i = 0; i < 5; i++) {
    const r = await verify('owner@a.test', otherDigits(code));
    assert.equal(r.status, 401);
    assert.equal(r.body.error.code, 'invalid_code');
  }
  const r = await verify('owner@a.test', code);
  assert.equal(r.status, 401, 'the right code no longer works');
  assert.equal(sessionOf(r), null);
  const { rows } = await s.db.query("SELECT attempts, used_at FROM renlayer.otp_codes WHERE lower(email) = 'owner@a.test' ORDER BY created_at DESC LIMIT 1");
  assert.equal(rows[0].attempts, 5);
  assert.equal(rows[0].used_at, null);
});

test('an expired code is refused', async () => {
  await resetLimits();
  const code = await requestCode('owner@a.test');
  await s.db.query(
    "UPDATE renlayer.otp_codes SET created_at = now() - interval '20 minutes', expires_at = now() - interval '10 minutes' WHERE id = (SELECT id FROM renlayer.otp_codes WHERE lower(email) = 'owner@a.test' ORDER BY created_at DESC LIMIT 1)",
  );
  const r = await verify('owner@a.test', code);
  assert.equal(r.status, 401);
  assert.equal(r.body.error.code, 'invalid_code');
});

test('a code works once, also when two verifies race', async () => {
  await resetLimits();
  let code = await requestCode('owner@a.test');
  assert.equal((await verify('owner@a.test', code)).status, 200);
  const again = await verify('owner@a.test', code);
  assert.equal(again.status, 401);
  assert.equal(again.body.error.code, 'invalid_code');

  code = await requestCode('owner@a.test');
  const results = await Promise.all(Array.from({ length: 6 }, () => verify('owner@a.test', code)));
  const statuses = results.map((r) => r.status).sort();
  assert.deepEqual(statuses, [200, 401, 401, 401, 401, 401]);
});

test('only the latest code of an address counts', async () => {
  await resetLimits();
  const first = await requestCode('owner@a.test');
  const second = await requestCode('owner@a.test');
  if (first !== second) assert.equal((await verify('owner@a.test', first)).status, 401);
  assert.equal((await verify('owner@a.test', second)).status, 200);
});

// ---- rate limits -------------------------------------------------------------------------

test('code requests are limited per address, alike for known and unknown addresses', async () => {
  for (const email of ['owner@a.test', 'ghost@a.test']) {
    await resetLimits();
    for (let i = 0; i < 5; i++) {
      const r = await call('POST', '/v1/auth/otp/request', { body: { email } });
      assert.equal(r.status, 202, `${email} request ${i + 1}`);
    }
    const r = await call('POST', '/v1/auth/otp/request', { body: { email: email.toUpperCase() } });
    assert.equal(r.status, 429, email);
    assert.equal(r.body.error.code, 'rate_limited');
    const after = Number(r.headers.get('retry-after'));
    assert.ok(Number.isInteger(after) && after >= 1 && after <= 900, `Retry-After ${after}`);
  }
  // Another address from the same client is not affected.
  assert.equal((await call('POST', '/v1/auth/otp/request', { body: { email: 'other@a.test' } })).status, 202);
  await resetLimits();
});

test('code requests are limited per client address', async () => {
  await resetLimits();
  for (let i = 0; i < 20; i++) {
    const r = await call('POST', '/v1/auth/otp/request', { body: { email: `user${i}@many.test` } });
    assert.equal(r.status, 202, `request ${i + 1}`);
  }
  const r = await call('POST', '/v1/auth/otp/request', { body: { email: 'fresh@many.test' } });
  assert.equal(r.status, 429);
  assert.equal(r.body.error.code, 'rate_limited');
  const after = Number(r.headers.get('retry-after'));
  assert.ok(Number.isInteger(after) && after >= 1 && after <= 900, `Retry-After ${after}`);
  const { rows } = await s.db.query('SELECT count(*)::int AS n, count(DISTINCT email_hash)::int AS d FROM renlayer.otp_requests');
  assert.deepEqual(rows[0], { n: 20, d: 20 }, 'refused requests are not counted; addresses stored hashed');
  const leak = await s.db.query("SELECT count(*)::int AS n FROM renlayer.otp_requests r WHERE r::text LIKE '%many.test%'");
  assert.equal(leak.rows[0].n, 0);
  await resetLimits();
});

// ---- sessions, CSRF, tampering ------------------------------------------------------------

test('a cookie-authenticated change needs the CSRF header; a Bearer one does not', async () => {
  const { jwt } = await login('owner@a.test');
  let r = await call('POST', '/v1/auth/logout', { headers: cookie(jwt) });
  assert.equal(r.status, 403);
  assert.equal(r.body.error.code, 'csrf_required');
  r = await call('POST', '/v1/auth/logout', { headers: { ...cookie(jwt), 'x-renlayer-csrf': '0' } });
  assert.equal(r.status, 403);
  assert.equal((await call('GET', '/v1/me', { headers: cookie(jwt) })).status, 200, 'still logged in; GET needs no header');

  r = await call('POST', '/v1/auth/logout', { headers: { ...cookie(jwt), 'X-RenLayer-CSRF': '1' } });
  assert.equal(r.status, 204);
  assert.match(r.headers.get('set-cookie'), /^renlayer_session=; Path=\/; HttpOnly; SameSite=Strict; Max-Age=0/);
  assert.equal((await call('GET', '/v1/me', { headers: cookie(jwt) })).status, 401, 'the cookie stopped working');
  assert.equal((await call('GET', '/v1/me', { headers: bearer(jwt) })).status, 401, 'so did the JWT');
  const { rows } = await s.db.query('SELECT revoked_at FROM renlayer.operator_sessions WHERE id = $1', [claimsOf(jwt).jti]);
  assert.ok(rows[0].revoked_at);
  const audit = await s.db.query("SELECT count(*)::int AS n FROM renlayer.audit_log WHERE action = 'auth.logout' AND target_id = $1", [claimsOf(jwt).jti]);
  assert.equal(audit.rows[0].n, 1);

  const second = await login('owner@a.test');
  r = await call('POST', '/v1/auth/logout', { headers: bearer(second.jwt) });
  assert.equal(r.status, 204, 'Bearer needs no CSRF header');
  assert.equal((await call('GET', '/v1/me', { headers: bearer(second.jwt) })).status, 401);
});

test('missing or malformed credentials get 401', async () => {
  let r = await call('GET', '/v1/me');
  assert.equal(r.status, 401);
  assert.equal(r.body.error.code, 'unauthenticated');
  assert.match(r.headers.get('www-authenticate') || '', /^Bearer/);
  for (const h of [{ authorization: 'Basic b3duZXI6eA==' }, { authorization: 'Bearer' }, { authorization: 'Bearer ' }, { cookie: 'renlayer_session=' }, bearer('x'.repeat(5000))]) {
    r = await call('GET', '/v1/me', { headers: h });
    assert.equal(r.status, 401, JSON.stringify(h).slice(0, 80));
  }
});

test('a tampered, unsigned, foreign or expired JWT gets 401', async () => {
  const { jwt } = await login('owner@a.test');
  assert.equal((await call('GET', '/v1/me', { headers: bearer(jwt) })).status, 200);
  const segs = jwt.split('.');
  for (let k = 0; k < 3; k++) {
    for (const i of [0, Math.floor(segs[k].length / 2), segs[k].length - 2]) {
      const t = [...segs];
      t[k] = t[k].slice(0, i) + (t[k][i] === 'A' ? 'B' : 'A') + t[k].slice(i + 1);
      const r = await call('GET', '/v1/me', { headers: bearer(t.join('.')) });
      assert.equal(r.status, 401, `segment ${k} char ${i}`);
      assert.equal((await call('GET', '/v1/me', { headers: cookie(t.join('.')) })).status, 401);
    }
  }
  const claims = claimsOf(jwt);
  const none = `${b64u({ alg: 'none', typ: 'JWT' })}.${b64u(claims)}.`;
  assert.equal((await call('GET', '/v1/me', { headers: bearer(none) })).status, 401, 'alg none');
  const hs512 = sign({ alg: 'HS512', typ: 'JWT' }, claims);
  assert.equal((await call('GET', '/v1/me', { headers: bearer(hs512) })).status, 401, 'another alg');
  const foreign = sign({ alg: 'HS256', typ: 'JWT' }, claims, Buffer.from(testSecretKey, 'hex'));
  assert.equal((await call('GET', '/v1/me', { headers: bearer(foreign) })).status, 401, 'another key');

  // The test's own signature is right (control), so the next 401s are about time and the session row.
  const now = Math.floor(Date.now() / 1000);
  const resigned = sign({ alg: 'HS256', typ: 'JWT' }, { ...claims, iat: now - 60 });
  assert.equal((await call('GET', '/v1/me', { headers: bearer(resigned) })).status, 200, 'control');
  const expired = sign({ alg: 'HS256', typ: 'JWT' }, { ...claims, iat: now - 7200, exp: now - 60 });
  let r = await call('GET', '/v1/me', { headers: bearer(expired) });
  assert.equal(r.status, 401, 'exp in the past');
  const early = sign({ alg: 'HS256', typ: 'JWT' }, { ...claims, nbf: now + 3600 });
  assert.equal((await call('GET', '/v1/me', { headers: bearer(early) })).status, 401, 'nbf in the future');
  const noSession = sign({ alg: 'HS256', typ: 'JWT' }, { ...claims, jti: '0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b' });
  assert.equal((await call('GET', '/v1/me', { headers: bearer(noSession) })).status, 401, 'no such session');
  const otherTenant = sign({ alg: 'HS256', typ: 'JWT' }, { ...claims, tid: randomUUID() });
  assert.equal((await call('GET', '/v1/me', { headers: bearer(otherTenant) })).status, 401, 'session of another tenant');

  // The session row expiring ends the session whatever the token says.
  await s.db.query(
    "UPDATE renlayer.operator_sessions SET created_at = now() - interval '2 hours', expires_at = now() - interval '1 minute' WHERE id = $1",
    [claims.jti],
  );
  r = await call('GET', '/v1/me', { headers: bearer(jwt) });
  assert.equal(r.status, 401);
  assert.equal(r.body.error.code, 'unauthenticated');
});

test('an operator in several tenants picks one, else gets the oldest membership', async () => {
  const env = { RENLAYER_DATABASE_URL: s.env.RENLAYER_DATABASE_URL, RENLAYER_SECRET_KEY: testSecretKey };
  const t1 = JSON.parse((await runBinary('api', ['create-tenant', '--name', 'M1', '--owner-email', 'multi@x.test'], env)).stdout);
  const t2 = JSON.parse((await runBinary('api', ['create-tenant', '--name', 'M2', '--owner-email', 'multi@x.test'], env)).stdout);
  let l = await login('multi@x.test');
  assert.equal(l.body.operator.tenant_id, t1.tenant.id, 'the oldest membership');
  l = await login('multi@x.test', { tenant_id: t2.tenant.id });
  assert.equal(l.body.operator.tenant_id, t2.tenant.id);
  const me = await call('GET', '/v1/me', { headers: bearer(l.jwt) });
  assert.deepEqual(me.body.tenant, { id: t2.tenant.id, name: 'M2' });

  await resetLimits();
  const code = await requestCode('multi@x.test');
  const r = await verify('multi@x.test', code, { tenant_id: tenantA.tenant.id });
  assert.equal(r.status, 403, 'not an operator of that tenant');
  assert.equal((await verify('multi@x.test', code)).status, 200, 'the code was not spent');
});

// ---- operator tokens, disabled operators ----------------------------------------------------

test('operator tokens authenticate; revoked, malformed and unknown ones do not', async () => {
  const demo = await s.seedTenant('demo@x.test');
  const me = await call('GET', '/v1/me', { headers: bearer(demo.ownerToken) });
  assert.equal(me.status, 200, JSON.stringify(me.body));
  assert.equal(me.body.auth, 'token');
  assert.equal(me.body.tenant.id, demo.tenantId);
  const used = await s.db.query("SELECT id, last_used_at FROM renlayer.operator_tokens WHERE tenant_id = $1", [demo.tenantId]);
  assert.ok(used.rows[0].last_used_at, 'last_used_at stamped');
  // Stamped at most once a minute.
  const stamp = used.rows[0].last_used_at.getTime();
  await call('GET', '/v1/me', { headers: bearer(demo.ownerToken) });
  const again = await s.db.query('SELECT last_used_at FROM renlayer.operator_tokens WHERE id = $1', [used.rows[0].id]);
  assert.equal(again.rows[0].last_used_at.getTime(), stamp);

  const out = await call('POST', '/v1/auth/logout', { headers: bearer(demo.ownerToken) });
  assert.equal(out.status, 400, 'a token has no session to log out');

  const malformed = await call('GET', '/v1/me', { headers: bearer('rlop_tooShort') });
  assert.equal(malformed.status, 401);
  const unknown = await call('GET', '/v1/me', { headers: bearer(`rlop_${'0'.repeat(demo.ownerToken.length - 5)}`) });
  assert.equal(unknown.status, 401);

  await s.db.query('UPDATE renlayer.operator_tokens SET revoked_at = now() WHERE id = $1', [used.rows[0].id]);
  const revoked = await call('GET', '/v1/me', { headers: bearer(demo.ownerToken) });
  assert.equal(revoked.status, 401);
  assert.equal(revoked.body.error.code, 'unauthenticated');
});

test('disabling an operator stops its sessions and tokens at once', async () => {
  const demo = await s.seedTenant('disabled@x.test');
  const { jwt } = await login('disabled@x.test');
  assert.equal((await call('GET', '/v1/me', { headers: bearer(jwt) })).status, 200);
  assert.equal((await call('GET', '/v1/me', { headers: bearer(demo.ownerToken) })).status, 200);
  await s.db.query("UPDATE renlayer.operators SET disabled_at = now() WHERE lower(email) = 'disabled@x.test'");
  assert.equal((await call('GET', '/v1/me', { headers: bearer(jwt) })).status, 401);
  assert.equal((await call('GET', '/v1/me', { headers: bearer(demo.ownerToken) })).status, 401);
  await resetLimits();
  const from = s.api.lines.length;
  assert.equal((await call('POST', '/v1/auth/otp/request', { body: { email: 'disabled@x.test' } })).status, 202);
  await requestCode('owner@a.test'); // a later line, so the disabled one had its chance to be logged
  assert.ok(!s.api.lines.slice(from).some((l) => l.msg === 'login code' && l.email === 'disabled@x.test'), 'no code for a disabled operator');
});

// ---- delivery without dev mode ------------------------------------------------------------

/** A minimal SMTP server on 127.0.0.1 collecting messages. With `greeting`
 * (a promise), each session's 220 waits for it; `connections` counts them. */
function startSmtp({ greeting = Promise.resolve() } = {}) {
  return new Promise((resolve) => {
    const mails = [];
    let connections = 0;
    const server = createServer((sock) => {
      connections++;
      sock.setEncoding('latin1');
      let buf = '';
      let inData = false;
      let mail = { from: null, rcpt: [], data: '' };
      greeting.then(() => sock.write('220 fake ESMTP\r\n'));
      sock.on('data', (chunk) => {
        buf += chunk;
        for (;;) {
          if (inData) {
            const end = buf.indexOf('\r\n.\r\n');
            if (end < 0) return;
            mail.data = buf.slice(0, end + 2);
            buf = buf.slice(end + 5);
            inData = false;
            mails.push(mail);
            mail = { from: null, rcpt: [], data: '' };
            sock.write('250 queued\r\n');
            continue;
          }
          const i = buf.indexOf('\r\n');
          if (i < 0) return;
          const line = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const verb = line.slice(0, 4).toUpperCase();
          if (verb === 'EHLO' || verb === 'HELO') sock.write('250 fake\r\n');
          else if (verb === 'MAIL') (mail.from = line.slice(10)), sock.write('250 ok\r\n');
          else if (verb === 'RCPT') mail.rcpt.push(line.slice(8)), sock.write('250 ok\r\n');
          else if (verb === 'DATA') (inData = true), sock.write('354 go ahead\r\n');
          else if (verb === 'QUIT') sock.end('221 bye\r\n');
          else sock.write('250 ok\r\n');
        }
      });
      sock.on('error', () => {});
    });
    server.listen(0, '127.0.0.1', () =>
      resolve({ server, mails, port: server.address().port, connections: () => connections }));
  });
}

test('without SMTP and outside dev mode a code request still answers 202 and logs a warning', async () => {
  const svc = await startService('api', { ...s.env, RENLAYER_DEV_MODE: 'false' });
  extra.push(svc);
  await resetLimits();
  const from = svc.lines.length;
  const r = await call('POST', '/v1/auth/otp/request', { body: { email: 'owner@a.test' }, base: svc.url });
  assert.equal(r.status, 202);
  const warn = await waitFor(() => svc.lines.slice(from).find((l) => l.level === 'warn' && /mail is not configured/.test(l.msg)), {
    what: 'the not-configured warning',
  });
  assert.equal(warn.code, undefined, 'the code is never logged outside dev mode');
  assert.ok(!svc.lines.some((l) => l.msg === 'login code'));
});

test('with SMTP the code arrives by mail and the cookie is Secure outside dev mode', async () => {
  smtp = await startSmtp();
  const svc = await startService('api', {
    ...s.env,
    RENLAYER_DEV_MODE: 'false',
    RENLAYER_JWT_SECRET: jwtSecret,
    RENLAYER_SMTP_URL: `smtp://127.0.0.1:${smtp.port}`,
    RENLAYER_SMTP_FROM: 'RenLayer Test <login@renlayer.test>',
  });
  extra.push(svc);
  await resetLimits();
  const r = await call('POST', '/v1/auth/otp/request', { body: { email: 'Owner@A.test' }, base: svc.url });
  assert.equal(r.status, 202);
  const mail = await waitFor(() => smtp.mails[0], { what: 'the mail' });
  assert.equal(mail.from, '<login@renlayer.test>');
  assert.deepEqual(mail.rcpt, ['<owner@a.test>']);
  const blank = mail.data.indexOf('\r\n\r\n');
  const head = mail.data.slice(0, blank);
  const body = mail.data.slice(blank + 4);
  assert.match(head, /^Date: \w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} \+0000$/m);
  assert.match(head, /^From: RenLayer Test <login@renlayer\.test>$/m);
  assert.match(head, /^To: <owner@a\.test>$/m);
  assert.match(head, /^Subject: Your RenLayer login code$/m);
  assert.match(head, /^Message-ID: <[0-9a-f-]{36}@renlayer\.test>$/m);
  assert.match(head, /^Content-Type: text\/plain; charset=utf-8$/m);
  assert.ok(!/[^\r]\n/.test(mail.data), 'every line ends in CRLF');
  const code = /\b(\d{6})\b/.exec(body)[1];
  assert.ok(!svc.lines.some((l) => JSON.stringify(l).includes(code)), 'the code is not in the log');

  const v = await verify('owner@a.test', code, {}, svc.url);
  assert.equal(v.status, 200, JSON.stringify(v.body));
  assert.match(v.headers.get('set-cookie'), /; Secure$/);
  const me = await call('GET', '/v1/me', { headers: bearer(sessionOf(v)), base: svc.url });
  assert.equal(me.status, 200);
});

test('a login mail still being sent when SIGTERM arrives goes out, and the api exits 0', async () => {
  let greet;
  const slow = await startSmtp({ greeting: new Promise((resolve) => (greet = resolve)) });
  try {
    const svc = await startService('api', {
      ...s.env,
      RENLAYER_DEV_MODE: 'false',
      RENLAYER_SMTP_URL: `smtp://127.0.0.1:${slow.port}`,
      RENLAYER_SMTP_FROM: 'login@renlayer.test',
    });
    await resetLimits();
    const r = await call('POST', '/v1/auth/otp/request', { body: { email: 'owner@a.test' }, base: svc.url });
    assert.equal(r.status, 202);
    await waitFor(() => slow.connections() > 0, { what: 'the mailer connecting' });
    const exit = svc.stop('SIGTERM');
    await waitFor(() => svc.lines.some((l) => l.msg === 'shutting down'), { what: 'the api shutting down' });
    greet(); // the mail completes while the api stops: its counters still exist
    const code = await exit;
    assert.equal(code, 0, `api exit code\n${svc.logText().slice(-4000)}`);
    assert.doesNotMatch(svc.logText(), /Sanitizer/);
    assert.equal(slow.mails.length, 1, 'the queued mail went out');
    assert.deepEqual(slow.mails[0].rcpt, ['<owner@a.test>']);
  } finally {
    greet();
    await new Promise((resolve) => slow.server.close(resolve));
  }
});
