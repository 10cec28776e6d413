// The official SDKs (openai, @anthropic-ai/sdk, @modelcontextprotocol/sdk)
// pointed at renlayer-proxy, with the mock provider behind it: what the
// client sees, what the upstream received, and the trace on the bus.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { startProxyStack, watchStream, UPSTREAM_SECRET } from '../lib/proxy_stack.mjs';
import { waitFor } from '../lib/harness.mjs';
import { tokens, DEFAULT_TEXT } from '../fixtures/mock-upstream/server.mjs';

let s;
let T; // the seeded tenant
let proxy;
let traces;
let decisions;
let openai;

const lastReceived = (pathPart) => [...s.mock.received()].reverse().find((r) => r.path.includes(pathPart));

before(async () => {
  s = await startProxyStack();
  T = await s.seedTenant('owner@e2e.test');
  // every decision on the bus, allowed ones too (the default publishes them for blocked calls)
  proxy = await s.startProxy({ RENLAYER_PUBLISH_DECISIONS: 'all' });
  traces = await watchStream(s.nats.url, 'RENLAYER_TRACES', [`renlayer.traces.${T.tenantId}.>`]);
  decisions = await watchStream(s.nats.url, 'RENLAYER_DECISIONS', [`renlayer.decisions.${T.tenantId}.>`]);
  openai = new OpenAI({
    baseURL: `${proxy.url}/v1`,
    apiKey: T.agentKey,
    maxRetries: 0,
    defaultHeaders: { 'X-RenLayer-User': 'alice', 'X-RenLayer-Session': 'run-42' },
  });
});

after(async () => {
  await traces?.close();
  await decisions?.close();
  await s?.close();
});

/** The trace of the call that carried this trace id (from the response header). */
const traceOf = (id) => traces.find((t) => t.trace_id === id, `trace ${id}`);

describe('openai', () => {
  test('chat: the upstream gets the injected key and never the RenLayer key; the trace has tokens and cost', async () => {
    const { data, response } = await openai.chat.completions
      .create({ model: 'gpt-4o-mini', messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'hello there!' }] })
      .withResponse();
    assert.equal(data.choices[0].message.content, DEFAULT_TEXT);
    const traceId = response.headers.get('x-renlayer-trace-id');
    assert.match(traceId, /^[0-9a-f-]{36}$/);
    const up = lastReceived('/v1/chat/completions');
    assert.equal(up.headers.authorization, `Bearer ${UPSTREAM_SECRET}`);
    const all = JSON.stringify(up.headers);
    assert.ok(!all.includes(T.agentKey), 'the RenLayer key never reaches the upstream');
    assert.equal(up.headers['x-renlayer-user'], undefined);
    assert.equal(up.headers['x-renlayer-session'], undefined);
    const t = await traceOf(traceId);
    assert.equal(t.v, 1);
    assert.equal(t.status, 'ALLOWED');
    assert.equal(t.http_status, 200);
    assert.equal(t.action, 'chat');
    assert.equal(t.model, 'gpt-4o-mini');
    assert.equal(t.user, 'alice');
    assert.equal(t.session_id, 'run-42');
    assert.equal(t.tenant_id, T.tenantId);
    assert.equal(t.agent_id, T.agentId);
    assert.equal(t.gate_id, T.gateId);
    assert.equal(t.usage.input_tokens, 5);
    assert.equal(t.usage.output_tokens, 16);
    assert.equal(t.usage.total_tokens, 21);
    const price = (await s.db.query("SELECT input_per_mtok::float8 AS i, output_per_mtok::float8 AS o FROM renlayer.model_prices WHERE model = 'gpt-4o-mini'")).rows[0];
    assert.ok(Math.abs(t.cost_usd - (5 * price.i + 16 * price.o) / 1e6) < 1e-12, `cost ${t.cost_usd}`);
    assert.ok(t.latency_ms > 0 && t.overhead_us >= 0);
    const d = await decisions.find((x) => x.trace_id === traceId, 'decision');
    assert.equal(d.status, 'ALLOWED');
  });

  test('streaming chat: usage asked for by the proxy, its chunk hidden from the client, exact in the trace', async () => {
    const stream = await openai.chat.completions.create({
      model: 'gpt-4o-mini', stream: true, messages: [{ role: 'user', content: 'hello there!' }],
    });
    let text = '';
    let sawUsage = false;
    for await (const chunk of stream) {
      if (chunk.usage) sawUsage = true;
      text += chunk.choices[0]?.delta?.content ?? '';
    }
    assert.equal(text, DEFAULT_TEXT);
    assert.equal(sawUsage, false, 'the usage chunk the client did not ask for is removed');
    const up = lastReceived('/v1/chat/completions');
    assert.equal(up.json.stream_options.include_usage, true);
    const t = await traces.find((x) => x.stream === true && x.usage.input_tokens === 3, 'stream trace');
    assert.equal(t.usage.output_tokens, 16);
    assert.ok(t.cost_usd > 0, 'a streamed call is not recorded as $0');
  });

  test('streaming chat with include_usage asked by the client keeps the usage chunk', async () => {
    const stream = await openai.chat.completions.create({
      model: 'gpt-4o-mini', stream: true, stream_options: { include_usage: true },
      messages: [{ role: 'user', content: 'x' }],
    });
    let usage = null;
    for await (const chunk of stream) if (chunk.usage) usage = chunk.usage;
    assert.equal(usage.prompt_tokens, 1);
    assert.equal(usage.completion_tokens, 16);
  });

  test('streaming passes chunks through as they arrive', async () => {
    const started = Date.now();
    const stream = await openai.chat.completions.create(
      { model: 'gpt-4o-mini', stream: true, messages: [{ role: 'user', content: 'slow' }] },
      { headers: { 'x-mock-chunk-delay-ms': '150', 'x-mock-chunks': '6' } },
    );
    let first = 0;
    for await (const chunk of stream) {
      if (!first && chunk.choices[0]?.delta?.content) first = Date.now() - started;
    }
    const total = Date.now() - started;
    assert.ok(total >= 800, `the stream took ${total} ms`);
    assert.ok(first < total - 500, `first chunk after ${first} ms of ${total} ms`);
  });

  test('cached and reasoning tokens are kept and priced', async () => {
    const { response } = await openai.chat.completions
      .create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'a'.repeat(400) }] },
        { headers: { 'x-mock-cached-tokens': '60', 'x-mock-reasoning-tokens': '7' } })
      .withResponse();
    const t = await traceOf(response.headers.get('x-renlayer-trace-id'));
    assert.equal(t.usage.input_tokens, 100);
    assert.equal(t.usage.cached_input_tokens, 60);
    assert.equal(t.usage.reasoning_tokens, 7);
    assert.equal(t.usage.output_tokens, 23);
    const p = (await s.db.query("SELECT input_per_mtok::float8 i, output_per_mtok::float8 o, cached_input_per_mtok::float8 c FROM renlayer.model_prices WHERE model = 'gpt-4o-mini'")).rows[0];
    const expected = (40 * p.i + 60 * p.c + 23 * p.o) / 1e6;
    assert.ok(Math.abs(t.cost_usd - expected) < 1e-12, `cost ${t.cost_usd} vs ${expected}`);
  });

  test('tools: calls requested by the model and results sent by the agent land in the trace', async () => {
    const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }];
    const { data, response } = await openai.chat.completions
      .create({ model: 'gpt-4o-mini', tools, messages: [{ role: 'user', content: 'weather?' }] })
      .withResponse();
    const call = data.choices[0].message.tool_calls[0];
    assert.equal(call.function.name, 'get_weather');
    const t1 = await traceOf(response.headers.get('x-renlayer-trace-id'));
    const req = t1.tool_calls.find((c) => c.phase === 'requested');
    assert.equal(req.name, 'get_weather');
    assert.equal(req.id, call.id);
    assert.match(req.args_sha256, /^[0-9a-f]{64}$/);
    const second = await openai.chat.completions
      .create({ model: 'gpt-4o-mini', tools, messages: [
        { role: 'user', content: 'weather?' }, data.choices[0].message,
        { role: 'tool', tool_call_id: call.id, content: '{"temp":21}' }] })
      .withResponse();
    const t2 = await traceOf(second.response.headers.get('x-renlayer-trace-id'));
    assert.equal(t2.action, 'tool_call');
    const res = t2.tool_calls.find((c) => c.phase === 'result');
    assert.equal(res.id, call.id);
    assert.equal(res.name, 'get_weather');
  });

  test('streamed tool calls are assembled from their fragments', async () => {
    const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }];
    const stream = await openai.chat.completions.create({ model: 'gpt-4o-mini', stream: true, tools, messages: [{ role: 'user', content: 'streamed tools' }] });
    let args = '';
    for await (const c of stream) args += c.choices[0]?.delta?.tool_calls?.[0]?.function?.arguments ?? '';
    assert.equal(args, '{"city":"mock_city"}');
    const t = await traces.find((x) => x.stream && x.tool_calls.some((c) => c.phase === 'requested'), 'streamed tool trace');
    assert.equal(t.tool_calls[0].name, 'get_weather');
  });

  test('responses API, streamed, with cached and reasoning tokens', async () => {
    const stream = await openai.responses.create(
      { model: 'gpt-4o-mini', input: 'a'.repeat(80), stream: true },
      { headers: { 'x-mock-cached-tokens': '12', 'x-mock-reasoning-tokens': '3' } },
    );
    let text = '';
    for await (const ev of stream) if (ev.type === 'response.output_text.delta') text += ev.delta;
    assert.equal(text, DEFAULT_TEXT);
    const t = await traces.find((x) => x.path === '/v1/responses' && x.stream, 'responses trace');
    assert.equal(t.usage.input_tokens, 20);
    assert.equal(t.usage.cached_input_tokens, 12);
    assert.equal(t.usage.reasoning_tokens, 3);
    assert.equal(t.usage.output_tokens, 19);
  });

  test('embeddings (base64, as the SDK asks)', async () => {
    const { data, response } = await openai.embeddings.create({ model: 'text-embedding-3-small', input: 'hello world' }).withResponse();
    assert.equal(data.data[0].embedding.length, 8);
    const t = await traceOf(response.headers.get('x-renlayer-trace-id'));
    assert.equal(t.action, 'embedding');
    assert.equal(t.usage.input_tokens, tokens('hello world'));
  });

  test('models list passes through', async () => {
    const list = await openai.models.list();
    assert.ok(list.data.some((m) => m.id === 'gpt-4o-mini'));
  });

  test('a bad key raises the SDK\'s AuthenticationError', async () => {
    const bad = new OpenAI({ baseURL: `${proxy.url}/v1`, apiKey: 'rl_live_nope', maxRetries: 0 });
    await assert.rejects(bad.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }] }),
      (e) => e instanceof OpenAI.AuthenticationError && e.status === 401);
  });

  test('upstream errors come back verbatim', async () => {
    await assert.rejects(
      openai.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }] }, { headers: { 'x-mock-error': '429' } }),
      (e) => e instanceof OpenAI.RateLimitError && e.status === 429);
  });

  test('gzip from the upstream is decoded for usage and for the client', async () => {
    const { data, response } = await openai.chat.completions
      .create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'zip' }] }, { headers: { 'x-mock-gzip': 'true' } })
      .withResponse();
    assert.equal(data.choices[0].message.content, DEFAULT_TEXT);
    const t = await traceOf(response.headers.get('x-renlayer-trace-id'));
    assert.equal(t.usage.output_tokens, 16);
  });
});

describe('anthropic', () => {
  const tools = [{ name: 'get_weather', description: 'w', input_schema: { type: 'object', properties: { city: { type: 'string' } } } }];

  test('messages streaming with x-api-key (older SDKs) and Bearer (SDK 1.x)', async () => {
    for (const client of [
      new Anthropic({ baseURL: proxy.url, apiKey: T.agentKey, maxRetries: 0 }),
      new Anthropic({ baseURL: proxy.url, authToken: T.agentKey, apiKey: null, maxRetries: 0 }),
    ]) {
      const stream = client.messages.stream({ model: 'claude-sonnet-4-5', max_tokens: 100, messages: [{ role: 'user', content: 'hello there!' }] });
      const msg = await stream.finalMessage();
      assert.equal(msg.content[0].text, DEFAULT_TEXT);
      const up = lastReceived('/v1/messages');
      assert.equal(up.headers.authorization, `Bearer ${UPSTREAM_SECRET}`);
      assert.equal(up.headers['x-api-key'], undefined, 'the RenLayer key is not forwarded as x-api-key');
      assert.ok(up.headers['anthropic-version'], 'anthropic-version passes through');
    }
    const t = await traces.find((x) => x.model === 'claude-sonnet-4-5' && x.stream, 'anthropic stream trace');
    assert.equal(t.usage.input_tokens, 3);
    assert.equal(t.usage.output_tokens, 16);
  });

  test('cache reads and writes count as input, priced as such', async () => {
    const client = new Anthropic({ baseURL: proxy.url, apiKey: T.agentKey, maxRetries: 0 });
    const { response } = await client.messages
      .create({ model: 'claude-sonnet-4-5', max_tokens: 50, messages: [{ role: 'user', content: 'cache' }] },
        { headers: { 'x-mock-cached-tokens': '30', 'x-mock-cache-creation-tokens': '10' } })
      .withResponse();
    const t = await traceOf(response.headers.get('x-renlayer-trace-id'));
    assert.equal(t.usage.cached_input_tokens, 30);
    assert.equal(t.usage.cache_write_tokens, 10);
    assert.equal(t.usage.input_tokens, 2 + 30 + 10);
  });

  test('tool_use streamed with input_json_delta', async () => {
    const client = new Anthropic({ baseURL: proxy.url, apiKey: T.agentKey, maxRetries: 0 });
    const msg = await client.messages.stream({ model: 'claude-sonnet-4-5', max_tokens: 100, tools, messages: [{ role: 'user', content: 'weather in paris' }] }).finalMessage();
    const use = msg.content.find((b) => b.type === 'tool_use');
    assert.deepEqual(use.input, { city: 'mock_city' });
    const t = await traces.find((x) => x.tool_calls.some((c) => c.id === use.id), 'tool_use trace');
    assert.equal(t.tool_calls.find((c) => c.id === use.id).name, 'get_weather');
  });

  test('a bad key raises the SDK\'s AuthenticationError', async () => {
    const bad = new Anthropic({ baseURL: proxy.url, apiKey: 'rl_live_nope', maxRetries: 0 });
    await assert.rejects(bad.messages.create({ model: 'claude-sonnet-4-5', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] }),
      (e) => e instanceof Anthropic.AuthenticationError && e.status === 401);
  });
});

describe('mcp', () => {
  test('list and call tools through an MCP gate addressed by path', async () => {
    const g = await s.api('POST', `/v1/agents/${T.agentId}/gates`, T.ownerToken, { name: 'tools', kind: 'mcp', upstream_url: s.mock.url });
    assert.equal(g.status, 201, JSON.stringify(g.body));
    await waitFor(async () => {
      const r = await fetch(`${proxy.url}/gates/tools/mcp`, { method: 'POST', headers: { authorization: `Bearer ${T.agentKey}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' }, body: '{"jsonrpc":"2.0","id":0,"method":"ping"}' });
      await r.arrayBuffer();
      return r.status === 200;
    }, { what: 'the new gate reaches the proxy' });
    const transport = new StreamableHTTPClientTransport(new URL(`${proxy.url}/gates/tools/mcp`), {
      requestInit: { headers: { authorization: `Bearer ${T.agentKey}`, 'X-RenLayer-Session': 'mcp-run' } },
    });
    const client = new Client({ name: 'e2e', version: '1.0.0' });
    await client.connect(transport);
    const list = await client.listTools();
    assert.ok(list.tools.some((t) => t.name === 'get_weather'));
    const res = await client.callTool({ name: 'get_weather', arguments: { city: 'Paris' } });
    assert.match(res.content[0].text, /get_weather called with/);
    await client.close();
    const t = await traces.find((x) => x.action === 'mcp' && x.tool_calls.some((c) => c.name === 'get_weather'), 'mcp tools/call trace');
    assert.equal(t.session_id, 'mcp-run');
    const up = lastReceived('/mcp');
    assert.ok(!JSON.stringify(up.headers).includes(T.agentKey));
  });
});
