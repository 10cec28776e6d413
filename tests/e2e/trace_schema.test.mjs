// The bus contract: every trace and decision the proxy publishes validates
// against its documented JSON Schema (docs/schemas/trace.v1.json and
// decision.v1.json, 2020-12, closed), for plain and streamed chats, tool
// calls, the Anthropic protocol and a call with personal data in it.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { sourceDir } from '../lib/harness.mjs';
import { startProxyStack, watchStream } from '../lib/proxy_stack.mjs';

let s;
let T; // the seeded tenant
let proxy;
let traces;
let decisions;
let validateTrace;
let validateDecision;

const weather = {
  type: 'function',
  function: { name: 'get_weather', description: 'Weather of a city', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } },
};

// name -> [path, body]: the calls whose trace and decision are checked
const calls = {
  'chat': ['/v1/chat/completions', { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hello there!' }] }],
  'streamed chat': ['/v1/chat/completions', { model: 'gpt-4o-mini', stream: true, stream_options: { include_usage: true }, messages: [{ role: 'user', content: 'stream please' }] }],
  'chat asking for a tool': ['/v1/chat/completions', { model: 'gpt-4o-mini', tools: [weather], messages: [{ role: 'user', content: 'Weather in Paris?' }] }],
  'streamed chat asking for a tool': ['/v1/chat/completions', { model: 'gpt-4o-mini', stream: true, tools: [weather], messages: [{ role: 'user', content: 'Weather in Oslo?' }] }],
  'chat sending a tool result': ['/v1/chat/completions', {
    model: 'gpt-4o-mini',
    tools: [weather],
    messages: [
      { role: 'user', content: 'Weather in Paris?' },
      { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] },
      { role: 'tool', tool_call_id: 'call_1', content: '18 degrees, sunny' },
    ],
  }],
  'anthropic message': ['/v1/messages', { model: 'claude-sonnet-4-5', max_tokens: 64, messages: [{ role: 'user', content: 'hi' }] }],
  'chat with personal data': ['/v1/chat/completions', { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'Mail jane.doe@acme-widgets.com, card 4739 2081 3899 4461' }] }],
};
const traceIds = {}; // name -> trace id from X-RenLayer-Trace-Id

before(async () => {
  const ajv = new Ajv2020({ allErrors: true, strict: true });
  addFormats(ajv);
  const load = async (f) => JSON.parse(await readFile(path.join(sourceDir, 'docs/schemas', f), 'utf8'));
  validateTrace = ajv.compile(await load('trace.v1.json'));
  validateDecision = ajv.compile(await load('decision.v1.json'));

  s = await startProxyStack();
  T = await s.seedTenant('owner@schema.test');
  proxy = await s.startProxy({ RENLAYER_PUBLISH_DECISIONS: 'all' });
  traces = await watchStream(s.nats.url, 'RENLAYER_TRACES', [`renlayer.traces.${T.tenantId}.>`]);
  decisions = await watchStream(s.nats.url, 'RENLAYER_DECISIONS', [`renlayer.decisions.${T.tenantId}.>`]);
  for (const [name, [urlPath, body]] of Object.entries(calls)) {
    const res = await fetch(`${proxy.url}${urlPath}`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${T.agentKey}`,
        'content-type': 'application/json',
        'anthropic-version': '2023-06-01',
        'x-renlayer-user': 'alice',
        'x-renlayer-session': 'schema-run',
      },
      body: JSON.stringify(body),
    });
    await res.arrayBuffer(); // the whole answer, the stream included
    traceIds[name] = res.headers.get('x-renlayer-trace-id');
    assert.match(traceIds[name] ?? '', /^[0-9a-f-]{36}$/, `${name}: ${res.status} carries a trace id`);
  }
});

after(async () => {
  await traces?.close();
  await decisions?.close();
  await s?.close();
});

function assertValid(validate, msg, what) {
  assert.ok(validate(msg), `${what}:\n${JSON.stringify(validate.errors, null, 2)}\n${JSON.stringify(msg, null, 2).slice(0, 4000)}`);
}

describe('trace v1', () => {
  for (const name of Object.keys(calls)) {
    test(`${name}: the published trace validates against docs/schemas/trace.v1.json`, async () => {
      const t = await traces.find((m) => m.trace_id === traceIds[name], `trace of ${name}`);
      assertValid(validateTrace, t, name);
      assert.equal(t.tenant_id, T.tenantId);
      assert.equal(t.user, 'alice');
      assert.equal(t.session_id, 'schema-run');
      assert.equal(t.stream, calls[name][1].stream === true);
    });
  }

  const allTraces = () => Promise.all(Object.keys(calls).map((n) => traces.find((m) => m.trace_id === traceIds[n], n)));

  test('the calls exercised the optional parts: usage, tool calls, attempts', async () => {
    const all = await allTraces();
    assert.ok(all.some((t) => t.usage !== null), 'usage');
    assert.ok(all.some((t) => t.tool_calls.some((c) => c.phase === 'requested')), 'a requested tool call');
    assert.ok(all.some((t) => t.tool_calls.some((c) => c.phase === 'result')), 'a tool result');
    assert.ok(all.some((t) => t.attempts.length > 0), 'attempts');
  });

  test('the call with personal data has DLP findings, and its bodies hold no detected value', async () => {
    const t = await traces.find((m) => m.trace_id === traceIds['chat with personal data'], 'trace');
    const detectors = t.dlp_findings.map((f) => f.detector).sort();
    assert.deepEqual(detectors, ['CREDIT_CARD', 'EMAIL']);
    for (const f of t.dlp_findings) assert.equal(f.where, 'request');
    assert.ok(!t.request_body.includes('jane.doe@acme-widgets.com'), 'e-mail redacted in the trace');
    assert.ok(!t.request_body.includes('4739 2081 3899 4461'), 'card number redacted in the trace');
    assert.match(t.request_body, /\[REDACTED:EMAIL\]/);
  });

  test('the schema is closed: a field the producer does not document fails validation', () => {
    const t = traces.messages.find((m) => m.data?.trace_id === traceIds.chat).data;
    assert.ok(!validateTrace({ ...t, extra: 1 }));
    assert.ok(!validateTrace({ ...t, started_at: '2024-10-20T11:54:56Z' }), 'times carry microseconds');
    const { attempts, ...missing } = t;
    assert.ok(attempts && !validateTrace(missing));
  });
});

describe('decision v1', () => {
  for (const name of Object.keys(calls)) {
    test(`${name}: the published decision validates against docs/schemas/decision.v1.json`, async () => {
      const d = await decisions.find((m) => m.trace_id === traceIds[name], `decision of ${name}`);
      assertValid(validateDecision, d, name);
      const t = await traces.find((m) => m.trace_id === traceIds[name], `trace of ${name}`);
      assert.equal(d.started_at, t.started_at, 'the decision carries the trace\'s partition key');
      assert.equal(d.status, t.status);
    });
  }
});
