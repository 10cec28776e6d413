// renlayer-proxy's behaviour around the happy path: revocation reaching two
// proxies at once, gate selection, fallbacks, bounds, client disconnects,
// and its dependencies failing (NATS down: nothing lost; PostgreSQL down:
// fail open, or closed for a tenant that asks).
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { startProxyStack, watchStream } from '../lib/proxy_stack.mjs';
import { waitFor, metric } from '../lib/harness.mjs';

let s;
let T;
let p1;
let p2;

const chat = (proxy, key, extra = {}, headers = {}) =>
  fetch(`${proxy.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }], ...extra }),
  });

async function status(promise) {
  const r = await promise;
  await r.arrayBuffer();
  return r.status;
}

before(async () => {
  s = await startProxyStack();
  T = await s.seedTenant('owner@proxy.test');
  p1 = await s.startProxy();
  p2 = await s.startProxy();
});

after(async () => {
  await s?.close();
});

describe('keys', () => {
  test('a revoked key gets 401 on the next request to either proxy', async () => {
    const k = await s.api('POST', `/v1/agents/${T.agentId}/keys`, T.ownerToken, { name: 'short-lived' });
    assert.equal(k.status, 201);
    const key = k.body.secret;
    await waitFor(async () => (await status(chat(p1, key))) === 200 && (await status(chat(p2, key))) === 200,
      { what: 'the new key on both proxies' });
    assert.equal((await s.api('DELETE', `/v1/agents/${T.agentId}/keys/${k.body.id}`, T.ownerToken)).status, 204);
    const revokedAt = Date.now();
    await waitFor(async () => (await status(chat(p1, key))) === 401 && (await status(chat(p2, key))) === 401,
      { timeout: 5000, interval: 10, what: 'revocation on both proxies' });
    assert.ok(Date.now() - revokedAt < 2000, `revocation took ${Date.now() - revokedAt} ms`);
    assert.equal(await status(chat(p1, T.agentKey)), 200, 'other keys keep working');
  });

  test('a change is loaded and counted: the config metrics move', async () => {
    const loads = 'renlayer_proxy_config_loads_total{result="ok"}';
    const notes = 'renlayer_proxy_config_notifications_total';
    const last = 'renlayer_proxy_config_last_success_timestamp_seconds';
    const [l0, n0, t0] = [await metric(p1, loads), await metric(p1, notes), await metric(p1, last)];
    assert.ok(l0 >= 1 && t0 > 0, 'the first load is counted');
    assert.ok(t0 <= Date.now() / 1000 + 1);
    const K = await s.seedTenant('owner@config-metrics.test');
    await waitFor(async () => (await status(chat(p1, K.agentKey))) === 200, { what: 'the new key loaded' });
    assert.ok(await metric(p1, notes) > n0, 'notifications counted');
    assert.ok(await metric(p1, loads) > l0, 'loads counted');
    assert.ok(await metric(p1, last) > t0, 'the last success moved');
    assert.ok(await metric(p1, 'renlayer_proxy_config_load_seconds') > 0);
    assert.equal(await metric(p1, 'renlayer_proxy_config_loads_total{result="error"}'), 0);
  });

  test('an expired key gets 401', async () => {
    const k = await s.api('POST', `/v1/agents/${T.agentId}/keys`, T.ownerToken, { name: 'expiring' });
    await waitFor(async () => (await status(chat(p1, k.body.secret))) === 200, { what: 'key live' });
    await s.db.query("UPDATE renlayer.api_keys SET expires_at = now() - interval '1 second' WHERE id = $1", [k.body.id]);
    await waitFor(async () => (await status(chat(p1, k.body.secret))) === 401, { what: 'key expired' });
  });

  test('no key, a malformed key, an unknown key: 401 in the OpenAI and Anthropic shapes', async () => {
    const none = await fetch(`${p1.url}/v1/chat/completions`, { method: 'POST', body: '{}' });
    assert.equal(none.status, 401);
    const body = await none.json();
    assert.equal(body.error.type, 'authentication_error');
    const anth = await fetch(`${p1.url}/v1/messages`, { method: 'POST', headers: { 'x-api-key': 'sk-ant-xyz' }, body: '{}' });
    assert.equal(anth.status, 401);
    const ab = await anth.json();
    assert.equal(ab.type, 'error');
    assert.equal(ab.error.type, 'authentication_error');
    assert.ok(anth.headers.get('x-renlayer-trace-id'));
  });
});

describe('gates', () => {
  let named;
  before(async () => {
    const g = await s.api('POST', `/v1/agents/${T.agentId}/gates`, T.ownerToken, {
      name: 'pinned', kind: 'openai', upstream_url: `${s.mock.url}/pinned`, pinned_model: 'gpt-4.1-mini',
      headers: { Authorization: 'Bearer sk-other-gate' },
    });
    assert.equal(g.status, 201, JSON.stringify(g.body));
    named = g.body;
    await waitFor(async () => (await status(chat(p1, T.agentKey, {}, { 'X-RenLayer-Gate': 'pinned' }))) === 200, { what: 'gate loaded' });
  });

  test('X-RenLayer-Gate, X-Layer-Gate-Id and /gates/<name>/ pick the gate; the pin applies', async () => {
    for (const [url, headers] of [
      [`${p1.url}/v1/chat/completions`, { 'X-RenLayer-Gate': 'pinned' }],
      [`${p1.url}/v1/chat/completions`, { 'X-Layer-Gate-Id': named.id }],
      [`${p1.url}/gates/pinned/v1/chat/completions`, {}],
    ]) {
      s.mock.reset();
      const r = await fetch(url, { method: 'POST', headers: { authorization: `Bearer ${T.agentKey}`, 'content-type': 'application/json', ...headers }, body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] }) });
      assert.equal(r.status, 200);
      const up = s.mock.received().at(-1);
      assert.equal(up.path, '/pinned/v1/chat/completions');
      assert.equal(up.json.model, 'gpt-4.1-mini');
      assert.equal(up.headers.authorization, 'Bearer sk-other-gate');
      assert.equal(up.headers['x-layer-gate-id'], undefined);
    }
  });

  test('round-robin spreads requests over the gate and its fallbacks', async () => {
    const b = await s.api('POST', `/v1/agents/${T.agentId}/gates`, T.ownerToken, { name: 'rr-b', kind: 'openai', upstream_url: `${s.mock.url}/rr-b` });
    const a = await s.api('POST', `/v1/agents/${T.agentId}/gates`, T.ownerToken, {
      name: 'rr-a', kind: 'openai', upstream_url: `${s.mock.url}/rr-a`, strategy: 'round-robin', fallback_gate_ids: [b.body.id],
    });
    assert.equal(a.status, 201, JSON.stringify(a.body));
    await waitFor(async () => (await status(chat(p1, T.agentKey, {}, { 'X-RenLayer-Gate': 'rr-a' }))) === 200, { what: 'rr gate loaded' });
    s.mock.reset();
    for (let i = 0; i < 20; i++) assert.equal(await status(chat(p1, T.agentKey, {}, { 'X-RenLayer-Gate': 'rr-a' })), 200);
    const paths = s.mock.received().map((r) => r.path.split('/')[1]);
    const na = paths.filter((p) => p === 'rr-a').length;
    const nb = paths.filter((p) => p === 'rr-b').length;
    assert.equal(na + nb, 20);
    assert.ok(na >= 5 && nb >= 5, `spread ${na}/${nb}`);
  });

  test('an unknown gate is a 404 in the protocol shape', async () => {
    const r = await chat(p1, T.agentKey, {}, { 'X-RenLayer-Gate': 'nope' });
    assert.equal(r.status, 404);
    const b = await r.json();
    assert.match(b.error.message, /no gate named 'nope'/);
  });

  test('fallback: a failing primary is retried on the next gate, each attempt in the trace', async () => {
    const backup = await s.api('POST', `/v1/agents/${T.agentId}/gates`, T.ownerToken, { name: 'backup', kind: 'openai', upstream_url: `${s.mock.url}/backup` });
    const primary = await s.api('POST', `/v1/agents/${T.agentId}/gates`, T.ownerToken, {
      name: 'primary', kind: 'openai', upstream_url: `${s.mock.url}/primary`, strategy: 'fallback', fallback_gate_ids: [backup.body.id],
    });
    assert.equal(primary.status, 201, JSON.stringify(primary.body));
    const traces = await watchStream(s.nats.url, 'RENLAYER_TRACES', [`renlayer.traces.${T.tenantId}.>`]);
    try {
      s.mock.configure({ routes: { '/primary': { error: 503 } } });
      let res;
      await waitFor(async () => {
        res = await chat(p1, T.agentKey, {}, { 'X-RenLayer-Gate': 'primary' });
        return res.status !== 404;
      }, { what: 'primary gate loaded' });
      assert.equal(res.status, 200);
      const id = res.headers.get('x-renlayer-trace-id');
      const t = await traces.find((x) => x.trace_id === id, 'fallback trace');
      assert.equal(t.attempts.length, 2);
      assert.equal(t.attempts[0].http_status, 503);
      assert.equal(t.attempts[1].http_status, 200);
      assert.equal(t.attempts[1].gate_id, backup.body.id);
      // connection refused on the primary also falls back
      await s.api('PATCH', `/v1/agents/${T.agentId}/gates/${primary.body.id}`, T.ownerToken, { upstream_url: 'http://127.0.0.1:9' });
      await waitFor(async () => {
        const r = await chat(p1, T.agentKey, {}, { 'X-RenLayer-Gate': 'primary' });
        const id2 = r.headers.get('x-renlayer-trace-id');
        await r.arrayBuffer();
        if (r.status !== 200) return false;
        const t2 = await traces.find((x) => x.trace_id === id2);
        return t2.attempts.length === 2 && t2.attempts[0].http_status === null && t2.attempts[0].error;
      }, { what: 'fallback after connection refused' });
    } finally {
      s.mock.configure({ routes: null });
      await traces.close();
    }
  });
});

describe('bounds and shapes', () => {
  test('a body over the limit gets 413, headers over the limit 431', async () => {
    const big = await fetch(`${p1.url}/v1/chat/completions`, {
      method: 'POST', headers: { authorization: `Bearer ${T.agentKey}` }, body: 'x'.repeat(11 * 1024 * 1024),
    }).catch((e) => e);
    if (!(big instanceof Error)) {
      assert.equal(big.status, 413);
    }
    const huge = await fetch(`${p1.url}/v1/models`, { headers: { authorization: `Bearer ${T.agentKey}`, 'x-pad': 'y'.repeat(64 * 1024) } }).catch((e) => e);
    if (!(huge instanceof Error)) assert.equal(huge.status, 431);
    assert.equal(await status(chat(p1, T.agentKey)), 200, 'the proxy is fine afterwards');
  });

  test('invalid JSON to a chat path is a 400 in the OpenAI shape, and is not forwarded', async () => {
    s.mock.reset();
    const r = await fetch(`${p1.url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${T.agentKey}` }, body: '{"model":' });
    assert.equal(r.status, 400);
    const b = await r.json();
    assert.equal(b.error.type, 'invalid_request_error');
    // a NUL byte after a number, which jansson alone would let through (found by fuzz_request)
    const nul = await fetch(`${p1.url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${T.agentKey}` },
      body: Buffer.from('{"model":"gpt-4o-mini","n":1\0,"messages":[]}') });
    assert.equal(nul.status, 400);
    assert.match((await nul.json()).error.message, /NUL byte/);
    assert.equal(s.mock.received().length, 0);
  });

  test('any other path is passed through as plain HTTP', async () => {
    const r = await fetch(`${p1.url}/v2/things?x=1&y=two`, { method: 'PUT', headers: { authorization: `Bearer ${T.agentKey}`, 'x-custom': 'kept' }, body: 'raw body' });
    assert.equal(r.status, 200);
    const echo = await r.json();
    assert.equal(echo.path, '/v2/things');
    assert.equal(echo.method, 'PUT');
    assert.equal(echo.body, 'raw body');
    assert.equal(echo.headers['x-custom'], 'kept');
    assert.equal(echo.query, 'x=1&y=two');
  });

  test('pooled upstream handles forget the previous method and body: HEAD, POST, GET, DELETE, PUT in turn', async () => {
    const url = `${p1.url}/v2/methods`;
    const auth = { authorization: `Bearer ${T.agentKey}` };
    for (let round = 0; round < 3; round++) { // the workers' handle pools are LIFO: handles are reused
      const head = await fetch(url, { method: 'HEAD', headers: auth });
      assert.equal(head.status, 200);
      assert.equal(await head.text(), '');
      const post = await (await fetch(url, { method: 'POST', headers: auth, body: `post ${round}` })).json();
      assert.equal(post.method, 'POST');
      assert.equal(post.body, `post ${round}`);
      const get = await (await fetch(url, { headers: auth })).json();
      assert.equal(get.method, 'GET');
      assert.equal(get.body, '');
      const del = await (await fetch(url, { method: 'DELETE', headers: auth })).json();
      assert.equal(del.method, 'DELETE');
      assert.equal(del.body, '');
      const put = await (await fetch(url, { method: 'PUT', headers: auth, body: 'put' })).json();
      assert.equal(put.method, 'PUT');
      assert.equal(put.body, 'put');
    }
  });

  test('an upstream closing its idle kept-alive connections: the proxy stays idle and reconnects', async () => {
    const recorded = async () => (await (await fetch(`${s.mock.url}/__mock/requests?path=/v1/chat`)).json());
    for (let i = 0; i < 3; i++) assert.equal(await status(chat(p1, T.agentKey)), 200);
    const before = await recorded();
    const ports = new Set(before.map((r) => r.remote_port));
    assert.ok(ports.size < before.length, 'upstream connections were kept alive and reused');
    assert.equal((await fetch(`${s.mock.url}/__mock/close-idle`, { method: 'POST' })).status, 200);
    // The closed socket stays readable (EOF): a proxy still watching it
    // would spin a worker. Measured over half a second of no traffic.
    const ticks = () => { const f = readFileSync(`/proc/${p1.child.pid}/stat`, 'utf8').split(') ')[1].split(' '); return Number(f[11]) + Number(f[12]); };
    const t0 = ticks();
    await new Promise((r) => setTimeout(r, 500));
    const used = ticks() - t0;
    assert.ok(used < 15, `the proxy used ${used} clock ticks while idle`);
    assert.equal(await status(chat(p1, T.agentKey)), 200);
    assert.ok(!ports.has((await recorded()).at(-1).remote_port), 'a new upstream connection');
  });

  test('a recycled request keeps nothing of the one before it (tool calls, user, session, model)', async () => {
    // Requests on one kept-alive connection meet the same worker, whose pool
    // hands the previous request's memory to the next one.
    const traces = await watchStream(s.nats.url, 'RENLAYER_TRACES', [`renlayer.traces.${T.tenantId}.>`]);
    try {
      const withTools = {
        model: 'gpt-4o',
        messages: [
          { role: 'user', content: 'weather?' },
          { role: 'assistant', content: null, tool_calls: [{ id: 'call_r1', type: 'function', function: { name: 'get_weather', arguments: '{}' } }] },
          { role: 'tool', tool_call_id: 'call_r1', content: 'sunny' },
        ],
      };
      const ids = [];
      for (let i = 0; i < 20; i++) {
        const r = i % 2
          ? await chat(p1, T.agentKey)
          : await chat(p1, T.agentKey, withTools, { 'X-RenLayer-User': 'u-tools', 'X-RenLayer-Session': 's-tools' });
        assert.equal(r.status, 200);
        await r.arrayBuffer();
        ids.push(r.headers.get('x-renlayer-trace-id'));
      }
      for (let i = 0; i < ids.length; i++) {
        const t = await traces.find((x) => x.trace_id === ids[i], `trace ${i}`);
        if (i % 2) {
          assert.deepEqual(t.tool_calls, [], `trace ${i} has no tool calls`);
          assert.equal(t.user ?? null, null);
          assert.equal(t.session_id ?? null, null);
          assert.equal(t.model, 'gpt-4o-mini');
        } else {
          assert.ok(t.tool_calls.some((c) => c.phase === 'result' && c.id === 'call_r1'));
          assert.equal(t.user, 'u-tools');
          assert.equal(t.model, 'gpt-4o');
        }
      }
    } finally {
      await traces.close();
    }
  });

  test('a client that leaves mid-stream cancels the upstream transfer', async () => {
    const ctrl = new AbortController();
    const r = await fetch(`${p1.url}/v1/chat/completions`, {
      method: 'POST', signal: ctrl.signal,
      headers: { authorization: `Bearer ${T.agentKey}`, 'content-type': 'application/json', 'x-mock-chunk-delay-ms': '300', 'x-mock-chunks': '40' },
      body: JSON.stringify({ model: 'gpt-4o-mini', stream: true, messages: [{ role: 'user', content: 'long' }] }),
    });
    const reader = r.body.getReader();
    await reader.read();
    ctrl.abort();
    await waitFor(async () => (await metric(p1, 'renlayer_proxy_client_aborts_total')) >= 1, { timeout: 10000, what: 'the abort noticed' });
  });
});

describe('dependencies failing', () => {
  /** n chat calls, each answered 200, spread over the proxies given; their trace ids. */
  async function tracedChats(proxies, n, session) {
    const ids = [];
    for (let i = 0; i < n; i++) {
      const r = await chat(proxies[i % proxies.length], T.agentKey, {}, { 'X-RenLayer-Session': session });
      assert.equal(r.status, 200);
      ids.push(r.headers.get('x-renlayer-trace-id'));
      await r.arrayBuffer();
    }
    return ids;
  }
  const allArrived = (traces, ids, what) =>
    waitFor(() => ids.every((id) => traces.messages.some((m) => m.data?.trace_id === id)), { timeout: 30000, what });

  test('NATS down during traffic: requests succeed, every trace arrives after NATS returns', async () => {
    const traces = await watchStream(s.nats.url, 'RENLAYER_TRACES', [`renlayer.traces.${T.tenantId}.>`]);
    try {
      await s.nats.stop();
      const ids = await tracedChats([p2, p1], 40, 'nats-outage');
      const depth = (p) => metric(p, 'renlayer_proxy_spool_depth');
      assert.ok((await depth(p1)) + (await depth(p2)) > 0, 'traces wait in the spools');
      await s.nats.start();
      await allArrived(traces, ids, 'every trace after NATS returned');
      await waitFor(async () => (await depth(p1)) + (await depth(p2)) === 0, { what: 'spools drained' });
    } finally {
      await traces.close();
    }
  });

  test('the spool survives a restart of the proxy: traces written while NATS was down arrive later', async () => {
    const spoolDir = `${s.spool}/restart`;
    const p3 = await s.startProxy({ RENLAYER_SPOOL_DIR: spoolDir });
    const traces = await watchStream(s.nats.url, 'RENLAYER_TRACES', [`renlayer.traces.${T.tenantId}.>`]);
    try {
      await s.nats.stop();
      const ids = await tracedChats([p3], 10, 'restart');
      assert.equal(await p3.stop('SIGTERM'), 0);
      const again = await s.startProxy({ RENLAYER_SPOOL_DIR: spoolDir });
      const depth = await metric(again, 'renlayer_proxy_spool_depth');
      assert.ok(depth >= 10, `the restarted proxy found ${depth} spooled messages`);
      await s.nats.start();
      await allArrived(traces, ids, 'the spooled traces after the restart');
      await again.stop();
    } finally {
      if (!s.nats.running) await s.nats.start();
      await traces.close();
    }
  });

  test('SIGTERM while NATS hangs: traces awaiting their acks are spooled; a proxy started while it hangs connects once it answers and replays them', async () => {
    const spoolDir = `${s.spool}/hang`;
    const p4 = await s.startProxy({ RENLAYER_SPOOL_DIR: spoolDir });
    const traces = await watchStream(s.nats.url, 'RENLAYER_TRACES', [`renlayer.traces.${T.tenantId}.>`]);
    let paused = false;
    try {
      await s.nats.pause(); // connected, silent: publishes go out, no ack comes back
      paused = true;
      const ids = await tracedChats([p4], 10, 'hang');
      await waitFor(async () => (await metric(p4, 'renlayer_proxy_messages_published_total{kind="trace"}')) >= 10,
        { what: 'the traces handed to the bus' });
      assert.equal(await p4.stop('SIGTERM', 30000), 0, p4.logText().slice(-3000));
      // started while NATS still hangs: its first bus connection waits for it
      const again = await s.startProxy({ RENLAYER_SPOOL_DIR: spoolDir });
      const depth = await metric(again, 'renlayer_proxy_spool_depth');
      assert.ok(depth >= 1, `the restarted proxy found ${depth} spooled messages`);
      await s.nats.resume();
      paused = false;
      await allArrived(traces, ids, 'every trace after NATS woke up');
      await waitFor(async () => (await metric(again, 'renlayer_proxy_spool_depth')) === 0, { what: 'spool replayed' });
      await again.stop();
    } finally {
      if (paused) await s.nats.resume();
      await traces.close();
    }
  });

  test('PostgreSQL down: cached agents keep working; a fail-closed tenant gets a clear error', async () => {
    const F = await s.seedTenant('owner@failclosed.test');
    await s.db.query('UPDATE renlayer.tenants SET fail_closed = true WHERE id = $1', [F.tenantId]);
    await waitFor(async () => (await status(chat(p1, F.agentKey))) === 200, { what: 'fail-closed tenant loaded' });
    const last = 'renlayer_proxy_config_last_success_timestamp_seconds';
    await s.db.end();
    await s.pg.stop();
    try {
      await waitFor(async () => {
        const r = await fetch(`${p1.url}/readyz`);
        const b = await r.json();
        return r.status === 200 && b.degraded === true && b.checks.database === 'down';
      }, { what: 'proxy notices, and stays ready (degraded)' });
      assert.equal(await status(chat(p1, T.agentKey)), 200, 'fail open');
      const r = await chat(p1, F.agentKey);
      assert.equal(r.status, 503);
      const b = await r.json();
      assert.match(b.error.message, /database is unreachable/);
    } finally {
      await s.pg.start();
      const back = Date.now() / 1000;
      await waitFor(async () => (await (await fetch(`${p1.url}/readyz`)).json()).degraded === false,
        { timeout: 30000, what: 'proxy no longer degraded' });
      // a reconnect reloads everything: what changed meanwhile was never notified
      await waitFor(async () => (await metric(p1, last)) >= Math.floor(back), { what: 'a load after the restart' });
      s.db = new (await import('pg')).default.Client({ connectionString: s.pg.url });
      await s.db.connect();
    }
    await waitFor(async () => (await status(chat(p1, F.agentKey))) === 200, { what: 'the fail-closed tenant served again' });
  });
});
