// Policies and DLP on renlayer-proxy's request path (docs/proxy.md, "Policies
// and DLP"): DENY / FLAG decisions with their traces and decisions, failing
// closed on a broken policy, hot reload, DLP blocking / warning / redacting
// requests, redacted trace bodies, and a streamed response cut by DLP.
// Policy sets, policies and DLP rules are written with SQL (the API's
// endpoints for them are tested elsewhere); the proxy picks them up through
// NOTIFY, so each test waits for the behaviour.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { gzipSync, deflateSync, deflateRawSync } from 'node:zlib';
import { startProxyStack, watchStream } from '../lib/proxy_stack.mjs';
import { waitFor, metric } from '../lib/harness.mjs';

let s;
let T;
let p;
let traces;
let decisions;
let setId;

// A synthetic AWS secret key (40 base64 characters, mixed case and digits,
// not the documentation example) and access key id.
const AWS_SECRET = 'q7Rz2LkP9vXw4NbT1mYc8HdJ3sFg6Qe0Ua5Vi+Ko';
const AWS_KEY_ID = 'AKIAZ7Q3M9X2K4P8W6RT';

const chat = (body = {}, headers = {}, path = '/v1/chat/completions') =>
  fetch(`${p.url}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${T.agentKey}`, 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }], ...body }),
  });

async function statusOf(promise) {
  const r = await promise;
  await r.arrayBuffer();
  return r.status;
}

async function addPolicy(name, action, conditions, message = '', priority = 0) {
  const r = await s.db.query(
    `INSERT INTO renlayer.policies (id, tenant_id, policy_set_id, name, priority, conditions, action, message)
     VALUES (gen_random_uuid(), $1, $2, $3, $4, $5, $6, $7) RETURNING id::text`,
    [T.tenantId, setId, name, priority, JSON.stringify(conditions), action, message]);
  return r.rows[0].id;
}

before(async () => {
  s = await startProxyStack();
  T = await s.seedTenant('owner@policies.test');
  const g = await s.api('POST', `/v1/agents/${T.agentId}/gates`, T.ownerToken, { name: 'anth', kind: 'anthropic', upstream_url: s.mock.url });
  assert.equal(g.status, 201, JSON.stringify(g.body));
  const m = await s.api('POST', `/v1/agents/${T.agentId}/gates`, T.ownerToken, { name: 'tools', kind: 'mcp', upstream_url: s.mock.url });
  assert.equal(m.status, 201, JSON.stringify(m.body));
  const r = await s.db.query(
    `INSERT INTO renlayer.policy_sets (id, tenant_id, name, is_tenant_default)
     VALUES (gen_random_uuid(), $1, 'default', true) RETURNING id::text`, [T.tenantId]);
  setId = r.rows[0].id;
  p = await s.startProxy();
  traces = await watchStream(s.nats.url, 'RENLAYER_TRACES', [`renlayer.traces.${T.tenantId}.>`]);
  decisions = await watchStream(s.nats.url, 'RENLAYER_DECISIONS', [`renlayer.decisions.${T.tenantId}.>`]);
  await waitFor(async () => (await statusOf(chat({}, { 'X-RenLayer-Gate': 'anth' }, '/v1/messages'))) === 200, { what: 'anthropic gate loaded' });
});

after(async () => {
  await traces?.close();
  await decisions?.close();
  await s?.close();
  // PX_DUMP_LOG=1: the proxy's log (sanitizer reports included) for debugging
  if (process.env.PX_DUMP_LOG) console.error(p?.logText());
});

describe('policies', () => {
  test('DENY on a model glob: 403 in the OpenAI shape, not forwarded, decision and trace DENIED', async () => {
    const id = await addPolicy('no big models', 'DENY', { model: 'gpt-4o-big*' }, 'Big models are not allowed here.');
    await waitFor(async () => (await statusOf(chat({ model: 'gpt-4o-big-2025' }))) === 403, { what: 'deny policy loaded' });
    s.mock.reset();
    const r = await chat({ model: 'gpt-4o-big-2025' });
    assert.equal(r.status, 403);
    const body = await r.json();
    assert.equal(body.error.type, 'permission_error');
    assert.equal(body.error.code, 'policy_denied');
    assert.equal(body.error.message, 'Big models are not allowed here.');
    assert.equal(body.renlayer.status, 'DENIED');
    assert.equal(s.mock.received().length, 0, 'the mock saw nothing');
    const tid = r.headers.get('x-renlayer-trace-id');
    const d = await decisions.find((x) => x.trace_id === tid, 'decision');
    assert.equal(d.status, 'DENIED');
    assert.deepEqual(d.policy_ids, [id]);
    const t = await traces.find((x) => x.trace_id === tid, 'trace');
    assert.equal(t.status, 'DENIED');
    assert.equal(t.http_status, 403);
    assert.deepEqual(t.policy_ids, [id]);
    assert.equal(await statusOf(chat()), 200, 'other models pass');
  });

  test('FLAG: forwarded, trace FLAGGED with the policy id', async () => {
    const id = await addPolicy('flag users', 'FLAG', { user: 'flag-me*' }, 'Review this user.');
    let r;
    await waitFor(async () => {
      r = await chat({}, { 'X-RenLayer-User': 'flag-me@x' });
      await r.arrayBuffer();
      const t = await traces.find((x) => x.trace_id === r.headers.get('x-renlayer-trace-id'));
      return t.status === 'FLAGGED';
    }, { what: 'flag policy loaded' });
    assert.equal(r.status, 200);
    const t = await traces.find((x) => x.trace_id === r.headers.get('x-renlayer-trace-id'));
    assert.deepEqual(t.policy_ids, [id]);
  });

  test('a policy that fails to evaluate (regex past its match limit) denies, naming the policy', async () => {
    const id = await addPolicy('evil regex', 'DENY', { user: { regex: '^(a+)+$' } }, 'never shown');
    const hostile = `${'a'.repeat(40)}!`;
    let r;
    await waitFor(async () => {
      r = await chat({}, { 'X-RenLayer-User': hostile });
      return r.status === 403;
    }, { what: 'evil policy loaded' });
    const body = await r.json();
    assert.equal(body.renlayer.status, 'DENIED');
    assert.match(body.error.message, new RegExp(id));
    const t = await traces.find((x) => x.trace_id === r.headers.get('x-renlayer-trace-id'));
    assert.equal(t.status, 'DENIED');
    assert.deepEqual(t.policy_ids, [id]);
    assert.equal(await statusOf(chat({}, { 'X-RenLayer-User': 'bob' })), 200, 'a user the regex handles passes');
  });

  test('hot reload: a changed policy applies to the next request', async () => {
    const id = await addPolicy('reloadable', 'DENY', { model: 'reload-model' }, 'denied for now');
    await waitFor(async () => (await statusOf(chat({ model: 'reload-model' }))) === 403, { what: 'policy loaded' });
    await s.db.query("UPDATE renlayer.policies SET action = 'ALLOW' WHERE id = $1", [id]);
    const changed = Date.now();
    await waitFor(async () => (await statusOf(chat({ model: 'reload-model' }))) === 200, { timeout: 5000, interval: 10, what: 'policy change' });
    assert.ok(Date.now() - changed < 2000, `reload took ${Date.now() - changed} ms`);
    const r = await chat({ model: 'reload-model' });
    await r.arrayBuffer();
    const t = await traces.find((x) => x.trace_id === r.headers.get('x-renlayer-trace-id'));
    assert.equal(t.status, 'ALLOWED');
    assert.deepEqual(t.policy_ids, [id], 'an ALLOW match is recorded');
  });

  test('hot reload under load: no request ever sees a half-built set', async () => {
    // Two policies, flipped together in one transaction between two states:
    //   X: p1 DENY model "hr-a" "X",  p2 DENY model "hr-b" "X"
    //   Y: p1 DENY model "hr-b" "Y",  p2 DENY model "hr-a" "Y"
    // Either state denies both models; a set mixing p1 of one with p2 of the
    // other leaves a model unmatched, and its request would pass (200).
    const p1 = await addPolicy('hr-1', 'DENY', { model: 'hr-a' }, 'X', 1);
    const p2 = await addPolicy('hr-2', 'DENY', { model: 'hr-b' }, 'X', 2);
    await waitFor(async () => (await statusOf(chat({ model: 'hr-b' }))) === 403, { what: 'both policies loaded' });
    const seen = { X: 0, Y: 0 };
    const wrong = [];
    let stop = false;
    const lane = async (i) => {
      for (let n = 0; !stop; n++) {
        const model = (i + n) % 2 ? 'hr-a' : 'hr-b';
        const r = await chat({ model });
        const body = await r.json().catch(() => ({}));
        if (r.status !== 403) wrong.push(`${model}: ${r.status}`);
        else if (/\bX\b/.test(body.error?.message)) seen.X++;
        else if (/\bY\b/.test(body.error?.message)) seen.Y++;
        else wrong.push(`${model}: ${body.error?.message}`);
      }
    };
    const lanes = Array.from({ length: 8 }, (_, i) => lane(i));
    const flips = 40;
    for (let k = 0; k < flips; k++) {
      const [m1, m2, msg] = k % 2 ? ['hr-a', 'hr-b', 'X'] : ['hr-b', 'hr-a', 'Y'];
      await s.db.query('BEGIN'); // the test's only user of s.db meanwhile
      await s.db.query('UPDATE renlayer.policies SET conditions = $2, message = $3 WHERE id = $1', [p1, JSON.stringify({ model: m1 }), msg]);
      await s.db.query('UPDATE renlayer.policies SET conditions = $2, message = $3 WHERE id = $1', [p2, JSON.stringify({ model: m2 }), msg]);
      await s.db.query('COMMIT');
      const before = seen[msg];
      await waitFor(() => seen[msg] > before, { what: `state ${msg} served` });
    }
    stop = true;
    await Promise.all(lanes);
    assert.deepEqual(wrong, [], 'requests that saw a half-built set');
    assert.ok(seen.X > flips / 2 && seen.Y > flips / 2, JSON.stringify(seen));
    await s.db.query('DELETE FROM renlayer.policies WHERE id = ANY($1)', [[p1, p2]]);
    await waitFor(async () => (await statusOf(chat({ model: 'hr-a' }))) === 200, { what: 'policies removed' });
  });

  test('a broken policy row makes its whole set deny (fail closed)', async () => {
    const id = await addPolicy('bad zone', 'DENY', { time: { start: '00:00', end: '24:00', tz: 'Mars/Olympus' } });
    await waitFor(async () => (await statusOf(chat())) === 403, { what: 'broken set loaded' });
    const r = await chat();
    const body = await r.json();
    assert.equal(body.renlayer.status, 'DENIED');
    assert.match(body.error.message, new RegExp(id));
    await s.db.query('DELETE FROM renlayer.policies WHERE id = $1', [id]);
    await waitFor(async () => (await statusOf(chat())) === 200, { what: 'set fixed' });
  });
});

describe('DLP', () => {
  test('an AWS secret key in a prompt: 403 DLP_BLOCKED in the OpenAI and Anthropic shapes; the trace never holds it', async () => {
    assert.equal(AWS_SECRET.length, 40);
    s.mock.reset();
    const content = `here are my creds: aws_secret_access_key = ${AWS_SECRET} thanks`;
    const r = await chat({ messages: [{ role: 'user', content }] });
    assert.equal(r.status, 403);
    const body = await r.json();
    assert.equal(body.error.code, 'dlp_blocked');
    assert.equal(body.renlayer.status, 'DLP_BLOCKED');
    assert.match(body.error.message, /AWS_SECRET_KEY/);
    assert.ok(!JSON.stringify(body).includes(AWS_SECRET));

    const a = await chat({ max_tokens: 50, messages: [{ role: 'user', content }] }, { 'X-RenLayer-Gate': 'anth', 'anthropic-version': '2023-06-01' }, '/v1/messages');
    assert.equal(a.status, 403);
    const ab = await a.json();
    assert.equal(ab.type, 'error');
    assert.equal(ab.error.type, 'permission_error');
    assert.equal(ab.renlayer.status, 'DLP_BLOCKED');
    assert.equal(s.mock.received().length, 0, 'nothing forwarded');

    for (const res of [r, a]) {
      const tid = res.headers.get('x-renlayer-trace-id');
      const t = await traces.find((x) => x.trace_id === tid, 'blocked trace');
      assert.equal(t.status, 'DLP_BLOCKED');
      assert.ok(t.dlp_findings.some((f) => f.detector === 'AWS_SECRET_KEY' && f.where === 'request' && f.severity === 'critical'));
      assert.ok(!JSON.stringify(t).includes(AWS_SECRET), 'the secret is not in the trace');
      assert.match(t.request_body, /\[REDACTED:AWS_SECRET_KEY\]/);
      const d = await decisions.find((x) => x.trace_id === tid, 'blocked decision');
      assert.equal(d.status, 'DLP_BLOCKED');
      assert.ok(!JSON.stringify(d).includes(AWS_SECRET));
    }
  });

  test('values spelled with \\u escapes are found: in a prompt (blocked, or forwarded redacted) and in a response', async () => {
    const raw = (content) => fetch(`${p.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${T.agentKey}`, 'content-type': 'application/json' },
      body: `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"${content}"}]}`,
    });
    s.mock.reset();
    const hidden = `aws_secret_access_key = \\u0071${AWS_SECRET.slice(1)}`; // q as \u0071
    const r = await raw(hidden);
    assert.equal(r.status, 403);
    assert.equal((await r.json()).renlayer.status, 'DLP_BLOCKED');
    assert.equal(s.mock.received().length, 0, 'nothing forwarded');

    const m = await raw('mail jane.doe\\u0040acme-widgets.com about it');
    assert.equal(m.status, 200);
    await m.arrayBuffer();
    const up = s.mock.received().at(-1);
    assert.ok(up.body.includes('[REDACTED:EMAIL]'), up.body);
    assert.ok(!up.body.includes('jane.doe'), up.body);
    assert.equal(JSON.parse(up.body).messages[0].content, 'mail [REDACTED:EMAIL] about it');

    const o = await chat({}, { 'x-mock-text': `the key id is ${AWS_KEY_ID}`, 'x-mock-escape-capitals': '1' });
    assert.equal(o.status, 403);
    const ob = await o.json();
    assert.equal(ob.error.code, 'dlp_blocked');
    assert.ok(!JSON.stringify(ob).includes(AWS_KEY_ID));
  });

  test('a "/" written as "\\/" hides nothing: in a prompt, a whole response and an MCP result event', async () => {
    const SLASHED = 'q7Rz2LkP9vXw4N/T1mYc8HdJ3sFg6Qe0Ua5V/+Ko'; // an AWS secret with slashes
    assert.equal(SLASHED.length, 40);
    const escaped = SLASHED.replaceAll('/', '\\/');
    s.mock.reset();
    const r = await fetch(`${p.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${T.agentKey}`, 'content-type': 'application/json' },
      body: `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"aws_secret_access_key = ${escaped}"}]}`,
    });
    assert.equal(r.status, 403);
    const rb = await r.json();
    assert.equal(rb.renlayer.status, 'DLP_BLOCKED');
    assert.match(rb.error.message, /AWS_SECRET_KEY/);
    assert.equal(s.mock.received().length, 0, 'nothing forwarded');
    const t = await traces.find((x) => x.trace_id === r.headers.get('x-renlayer-trace-id'), 'blocked trace');
    assert.ok(!JSON.stringify(t).includes(SLASHED) && !JSON.stringify(t).includes(escaped), 'the secret is not in the trace');

    // a provider whose encoder escapes every '/' (PHP's json_encode)
    const o = await chat({}, { 'x-mock-text': `aws_secret_access_key = ${SLASHED}`, 'x-mock-escape-slashes': '1' });
    assert.equal(o.status, 403);
    const ob = await o.text();
    assert.match(ob, /dlp_blocked/);
    assert.ok(!ob.includes(SLASHED) && !ob.includes(escaped), ob);

    // an MCP server answering tools/call as an SSE event: no delta, scanned as one piece
    const call = (extra) => fetch(`${p.url}/gates/tools/mcp`, {
      method: 'POST',
      headers: { authorization: `Bearer ${T.agentKey}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...extra },
      body: '{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"~/.aws/credentials"}}}',
    });
    const ok = await call({ 'x-mock-text': 'see https://example.com/docs/a/b', 'x-mock-escape-slashes': '1' });
    assert.equal(ok.status, 200);
    const okText = await ok.text();
    assert.ok(okText.includes('https:\\/\\/example.com\\/docs'), `an event without findings passes as sent: ${okText}`);
    const mc = await call({ 'x-mock-text': `aws_secret_access_key = ${SLASHED}`, 'x-mock-escape-slashes': '1' });
    assert.equal(mc.status, 200, 'a stream: the status is already sent');
    const mt = await mc.text();
    assert.ok(!mt.includes(SLASHED) && !mt.includes(escaped), mt);
    assert.match(mt, /"code":"dlp_blocked"/);
    const mtr = await traces.find((x) => x.trace_id === mc.headers.get('x-renlayer-trace-id'), 'mcp trace');
    assert.equal(mtr.status, 'DLP_BLOCKED');
    assert.ok(mtr.dlp_findings.some((f) => f.detector === 'AWS_SECRET_KEY' && f.where === 'response'));
  });

  test('a query string is scanned as a form reader decodes it: a %40 e-mail is forwarded redacted, a %2F secret blocks', async () => {
    s.mock.reset();
    const r = await chat({}, {}, '/v1/chat/completions?cc=jane.doe%40acme-widgets.com&v=1&note=a+b');
    assert.equal(r.status, 200);
    await r.arrayBuffer();
    const up = s.mock.received().at(-1);
    assert.ok(!up.url.includes('jane.doe'), up.url);
    assert.match(up.url, /\?cc=%5BREDACTED%3AEMAIL%5D&v=1&note=a\+b$/, 'the other pairs as sent');
    const t = await traces.find((x) => x.trace_id === r.headers.get('x-renlayer-trace-id'), 'query trace');
    assert.equal(t.status, 'DLP_WARNED');
    assert.ok(t.dlp_findings.some((f) => f.detector === 'EMAIL' && f.where === 'request' && f.action === 'redact'));
    assert.ok(!JSON.stringify(t).includes('jane.doe'));

    const secret = 'q7Rz2LkP9vXw4N%2FT1mYc8HdJ3sFg6Qe0Ua5V%2F%2BKo'; // '/' and '+' as every encoder writes them
    const b = await chat({}, {}, `/v1/chat/completions?aws_secret_access_key=${secret}`);
    assert.equal(b.status, 403);
    const bb = await b.json();
    assert.equal(bb.renlayer.status, 'DLP_BLOCKED');
    assert.match(bb.error.message, /AWS_SECRET_KEY/);
    assert.equal(s.mock.received().length, 1, 'the blocked call was not forwarded');
  });

  test('a form body on an HTTP call is scanned decoded and redacted pair by pair; a JSON API body is read as JSON whatever its Content-Type', async () => {
    const form = (body, path = '/v2/customers') => fetch(`${p.url}${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${T.agentKey}`, 'content-type': 'application/x-www-form-urlencoded' },
      body,
    });
    s.mock.reset();
    const r = await form('email=jane.doe%40acme-widgets.com&amount=100&description=a+b');
    assert.equal(r.status, 200);
    await r.arrayBuffer();
    assert.equal(s.mock.received().at(-1).body, 'email=%5BREDACTED%3AEMAIL%5D&amount=100&description=a+b');
    const t = await traces.find((x) => x.trace_id === r.headers.get('x-renlayer-trace-id'), 'form trace');
    assert.equal(t.request_body, 'email=%5BREDACTED%3AEMAIL%5D&amount=100&description=a+b');

    const b = await form(`aws_secret_access_key=${encodeURIComponent('q7Rz2LkP9vXw4N/T1mYc8HdJ3sFg6Qe0Ua5V/+Ko')}`);
    assert.equal(b.status, 403);
    assert.equal((await b.json()).renlayer.status, 'DLP_BLOCKED');
    assert.equal(s.mock.received().length, 1, 'the blocked form was not forwarded');

    // curl -d sends JSON labelled as a form: a chat body is read as JSON ('+' stays a '+')
    const c = await form(JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'mail jane.doe@acme-widgets.com 1+1' }] }), '/v1/chat/completions');
    assert.equal(c.status, 200);
    await c.arrayBuffer();
    assert.equal(JSON.parse(s.mock.received().at(-1).body).messages[0].content, 'mail [REDACTED:EMAIL] 1+1');
  });

  test('a compressed request body is decoded before the scan and forwarded decoded; what cannot be decoded is refused', async () => {
    const send = (body, encoding, path = '/v1/chat/completions', extra = {}) => fetch(`${p.url}${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${T.agentKey}`, 'content-type': 'application/json', 'content-encoding': encoding, ...extra },
      body,
    });
    const json = (content) => JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content }] });
    s.mock.reset();
    // gzip hides the secret from a byte scanner: decoded, it is found
    const blocked = await send(gzipSync(json(`aws_secret_access_key = ${AWS_SECRET}`)), 'gzip');
    assert.equal(blocked.status, 403);
    assert.equal((await blocked.json()).renlayer.status, 'DLP_BLOCKED');
    // two codings, applied deflate first: an e-mail forwarded redacted, as plain JSON
    const mail = await send(gzipSync(deflateSync(json('mail jane.doe@acme-widgets.com about it'))), 'deflate, gzip');
    assert.equal(mail.status, 200);
    await mail.arrayBuffer();
    // on a plain passthrough path as well (raw deflate, as some clients send it)
    const pass = await send(deflateRawSync(`aws_secret_access_key=${AWS_SECRET}`), 'deflate', '/v2/upload');
    assert.equal(pass.status, 403);
    await pass.arrayBuffer();
    const got = s.mock.received();
    assert.equal(got.length, 1, 'only the redacted chat was forwarded');
    assert.equal(JSON.parse(got[0].body).messages[0].content, 'mail [REDACTED:EMAIL] about it');
    assert.equal(got[0].headers['content-encoding'], undefined, 'the upstream gets the decoded body');
    const t = await traces.find((x) => x.trace_id === mail.headers.get('x-renlayer-trace-id'), 'decoded trace');
    assert.match(t.request_body, /\[REDACTED:EMAIL\]/);

    s.mock.reset();
    const br = await send('whatever', 'br');
    assert.equal(br.status, 415);
    const bb = await br.json();
    assert.equal(bb.error.code, 'unsupported_content_encoding');
    assert.match(bb.error.message, /br is not supported/);
    const corrupt = await send('not gzip at all', 'gzip');
    assert.equal(corrupt.status, 400);
    assert.match((await corrupt.json()).error.message, /could not be decoded: gzip/);
    // 10 KB that expand past the body limit (10 MiB): refused, not inflated
    const bomb = gzipSync(Buffer.alloc(12 * 1024 * 1024));
    assert.ok(bomb.length < 64 * 1024);
    const big = await send(bomb, 'gzip');
    assert.equal(big.status, 413);
    assert.match((await big.json()).error.message, /exceeds/);
    const a = await send(gzipSync(JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 20, messages: [{ role: 'user', content: 'hi' }] })), 'gzip', '/v1/messages',
      { 'X-RenLayer-Gate': 'anth', 'anthropic-version': '2023-06-01' });
    assert.equal(a.status, 200, 'an Anthropic body decoded the same way');
    await a.arrayBuffer();
    assert.equal(s.mock.received().length, 1, 'only the valid body reached the upstream');
  });

  test('an e-mail address: DLP_WARNED, forwarded redacted (its default action)', async () => {
    s.mock.reset();
    const r = await chat({ messages: [{ role: 'user', content: 'mail jane.doe@acme-widgets.com about it' }] });
    assert.equal(r.status, 200);
    await r.arrayBuffer();
    const up = s.mock.received().at(-1);
    assert.ok(up.body.includes('[REDACTED:EMAIL]'), up.body);
    assert.ok(!up.body.includes('jane.doe@acme-widgets.com'));
    const t = await traces.find((x) => x.trace_id === r.headers.get('x-renlayer-trace-id'));
    assert.equal(t.status, 'DLP_WARNED');
    assert.deepEqual(t.dlp_findings, [{ detector: 'EMAIL', severity: 'medium', where: 'request', action: 'redact' }]);
    assert.ok(!JSON.stringify(t).includes('jane.doe@acme-widgets.com'));
  });

  test('a warn-only finding is forwarded as is; the trace body is still redacted', async () => {
    await s.db.query(
      `INSERT INTO renlayer.dlp_builtin_overrides (id, tenant_id, detector, action) VALUES (gen_random_uuid(), $1, 'email', 'warn')`,
      [T.tenantId]);
    let r;
    await waitFor(async () => {
      s.mock.reset();
      r = await chat({ messages: [{ role: 'user', content: 'mail joe.bloggs@acme-widgets.com today' }] });
      await r.arrayBuffer();
      return s.mock.received().at(-1)?.body.includes('joe.bloggs@acme-widgets.com');
    }, { what: 'override loaded' });
    const t = await traces.find((x) => x.trace_id === r.headers.get('x-renlayer-trace-id'));
    assert.equal(t.status, 'DLP_WARNED');
    assert.equal(t.dlp_findings[0].action, 'warn');
    assert.ok(!JSON.stringify(t).includes('joe.bloggs@acme-widgets.com'));
    await s.db.query('DELETE FROM renlayer.dlp_builtin_overrides WHERE tenant_id = $1', [T.tenantId]);
  });

  test('a custom redact rule: the mock receives [REDACTED:<rule id>]', async () => {
    const r0 = await s.db.query(
      `INSERT INTO renlayer.dlp_rules (id, tenant_id, name, pattern, severity, action, scope)
       VALUES (gen_random_uuid(), $1, 'project codes', 'PRJ-[0-9]{5}', 'medium', 'redact', 'request') RETURNING id::text`,
      [T.tenantId]);
    const ruleId = r0.rows[0].id;
    await waitFor(async () => {
      s.mock.reset();
      const r = await chat({ messages: [{ role: 'user', content: 'status of PRJ-12345?' }] });
      await r.arrayBuffer();
      return s.mock.received().at(-1)?.body.includes(`[REDACTED:${ruleId}]`);
    }, { what: 'custom rule loaded' });
    assert.ok(!s.mock.received().at(-1).body.includes('PRJ-12345'));
  });

  test('a policy can test DLP findings: DENY when an e-mail is present', async () => {
    const id = await addPolicy('no pii to big', 'DENY', { dlp: 'EMAIL', model: 'pii-model' }, 'No personal data for this model.');
    await waitFor(async () => (await statusOf(chat({ model: 'pii-model', messages: [{ role: 'user', content: 'x a.b@acme-widgets.com' }] }))) === 403, { what: 'dlp policy' });
    assert.equal(await statusOf(chat({ model: 'pii-model' })), 200, 'without an e-mail it passes');
    await s.db.query('DELETE FROM renlayer.policies WHERE id = $1', [id]);
  });

  test('a streamed response with an AWS key split across two chunks ends with an error event; the client never gets the key', async () => {
    const text = `Sure, the key id is ${AWS_KEY_ID} and that is all.`;
    const r = await chat({ stream: true, messages: [{ role: 'user', content: 'give me a key' }] },
      { 'x-mock-text': text, 'x-mock-chunks': '2', 'x-mock-chunk-delay-ms': '30' });
    assert.equal(r.status, 200);
    const raw = await r.text();
    let deltas = '';
    let error = null;
    for (const line of raw.split('\n')) {
      if (!line.startsWith('data: ') || line === 'data: [DONE]') continue;
      const o = JSON.parse(line.slice(6));
      if (o.error) error = o;
      else deltas += o.choices?.[0]?.delta?.content ?? '';
    }
    assert.ok(!raw.includes(AWS_KEY_ID), 'the key never reaches the client');
    assert.ok(!deltas.includes(AWS_KEY_ID));
    assert.ok(error, `an error event ends the stream: ${raw}`);
    assert.equal(error.error.code, 'dlp_blocked');
    assert.equal(error.renlayer.status, 'DLP_BLOCKED');
    assert.ok(!raw.includes('[DONE]'));
    const t = await traces.find((x) => x.trace_id === r.headers.get('x-renlayer-trace-id'));
    assert.equal(t.status, 'DLP_BLOCKED');
    assert.ok(t.dlp_findings.some((f) => f.detector === 'AWS_ACCESS_KEY' && f.where === 'response'));
    assert.ok(!JSON.stringify(t).includes(AWS_KEY_ID));
  });

  test('a streamed Anthropic response with a key ends with an `event: error`', async () => {
    const r = await chat({ stream: true, max_tokens: 100, messages: [{ role: 'user', content: 'key?' }] },
      { 'X-RenLayer-Gate': 'anth', 'anthropic-version': '2023-06-01', 'x-mock-text': `key ${AWS_KEY_ID} ok`, 'x-mock-chunks': '3' }, '/v1/messages');
    const raw = await r.text();
    assert.ok(!raw.includes(AWS_KEY_ID));
    assert.match(raw, /event: error\ndata: \{"type":"error"/);
  });

  test('a whole (non-stream) response with a key becomes a structured 403', async () => {
    const r = await chat({ messages: [{ role: 'user', content: 'key?' }] }, { 'x-mock-text': `here: ${AWS_KEY_ID}` });
    assert.equal(r.status, 403);
    const raw = await r.text();
    assert.ok(!raw.includes(AWS_KEY_ID));
    const body = JSON.parse(raw);
    assert.equal(body.error.code, 'dlp_blocked');
    const t = await traces.find((x) => x.trace_id === r.headers.get('x-renlayer-trace-id'));
    assert.equal(t.status, 'DLP_BLOCKED');
    assert.ok(!JSON.stringify(t).includes(AWS_KEY_ID));
  });

  test('a streamed response with an e-mail is redacted in place', async () => {
    const r = await chat({ stream: true, messages: [{ role: 'user', content: 'who?' }] },
      { 'x-mock-text': 'write to mia.wong@acme-widgets.com please', 'x-mock-chunks': '4' });
    const raw = await r.text();
    let deltas = '';
    for (const line of raw.split('\n')) {
      if (!line.startsWith('data: ') || line === 'data: [DONE]') continue;
      deltas += JSON.parse(line.slice(6)).choices?.[0]?.delta?.content ?? '';
    }
    assert.ok(!raw.includes('mia.wong@acme-widgets.com'), raw);
    assert.match(deltas, /\[REDACTED:EMAIL\]/);
    assert.ok(raw.includes('[DONE]'));
    const t = await traces.find((x) => x.trace_id === r.headers.get('x-renlayer-trace-id'));
    assert.equal(t.status, 'DLP_WARNED');
  });

  test('a stream whose last event lacks its blank line reaches the client once (found by tests/fuzz)', async () => {
    for (const end of ['newline', 'none']) {
      const r = await chat({ stream: true, messages: [{ role: 'user', content: 'hi' }] },
        { 'x-mock-text': 'plain words, nothing to find', 'x-mock-chunks': '3', 'x-mock-sse-last-end': end });
      assert.equal(r.status, 200);
      const raw = await r.text();
      assert.equal(raw.split('data: [DONE]').length - 1, 1, `${end}: [DONE] once in ${JSON.stringify(raw)}`);
      assert.ok(raw.endsWith(end === 'newline' ? 'data: [DONE]\n' : 'data: [DONE]'), raw);
      let deltas = '';
      for (const line of raw.split('\n')) {
        if (!line.startsWith('data: {')) continue;
        deltas += JSON.parse(line.slice(6)).choices?.[0]?.delta?.content ?? '';
      }
      assert.equal(deltas, 'plain words, nothing to find');
    }
  });

  test('a streamed Responses API answer: deltas and the full-text copies (".done", completed) are redacted', async () => {
    const r = await fetch(`${p.url}/v1/responses`, {
      method: 'POST',
      headers: { authorization: `Bearer ${T.agentKey}`, 'content-type': 'application/json', 'x-mock-text': 'ask leo.park@acme-widgets.com now', 'x-mock-chunks': '3' },
      body: JSON.stringify({ model: 'gpt-4o-mini', input: 'who?', stream: true }),
    });
    assert.equal(r.status, 200);
    const raw = await r.text();
    assert.ok(!raw.includes('leo.park@acme-widgets.com'), raw);
    assert.match(raw, /response\.completed/);
    assert.match(raw, /\[REDACTED:EMAIL\]/);
    for (const line of raw.split('\n')) if (line.startsWith('data: ')) JSON.parse(line.slice(6));
  });

  test('the metrics count decisions by status', async () => {
    for (const st of ['DENIED', 'FLAGGED', 'DLP_BLOCKED', 'DLP_WARNED']) {
      assert.ok((await metric(p, `renlayer_proxy_decisions_total{status="${st}"}`)) > 0, st);
    }
  });
});
