// The mock upstream (tests/fixtures/mock-upstream) driven by the official
// SDKs: if these pass, the mock speaks the real wire formats.
import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import zlib from 'node:zlib';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

import { startMock, tokens, embeddingOf, DEFAULT_TEXT } from '../fixtures/mock-upstream/server.mjs';

const SERVER = fileURLToPath(new URL('../fixtures/mock-upstream/server.mjs', import.meta.url));
const T = { timeout: 15000 };

let mock;
let openai;
let anthropic;

const WEATHER_OA = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'weather',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
};
const WEATHER_AN = {
  name: 'get_weather',
  description: 'weather',
  input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
};

before(async () => {
  mock = await startMock({ port: 0 });
  openai = new OpenAI({ apiKey: 'sk-test', baseURL: `${mock.url}/v1`, maxRetries: 0, timeout: 5000 });
  anthropic = new Anthropic({ apiKey: 'sk-ant-test', baseURL: mock.url, maxRetries: 0, timeout: 5000 });
});

after(async () => {
  await mock?.close();
});

beforeEach(() => mock.reset({ config: true }));

async function getJson(path, init) {
  const r = await fetch(mock.url + path, init);
  return { status: r.status, headers: r.headers, body: await r.json() };
}

test('token formula', () => {
  assert.equal(tokens(''), 0);
  assert.equal(tokens('abcd'), 1);
  assert.equal(tokens('abcde'), 2);
  assert.equal(tokens('é'), 1); // 2 UTF-8 bytes
  assert.equal(DEFAULT_TEXT.length, 62);
  assert.equal(tokens(DEFAULT_TEXT), 16);
});

test('openai chat completion (JSON)', T, async () => {
  const r = await openai.chat.completions.create({
    model: 'gpt-4o-mini',
    messages: [
      { role: 'system', content: 'be brief' }, // 8 bytes
      { role: 'user', content: 'hello there!' }, // 12 bytes
    ],
  });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.model, 'gpt-4o-mini');
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(r.choices[0].message.content, DEFAULT_TEXT);
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.deepEqual(
    {
      p: r.usage.prompt_tokens,
      c: r.usage.completion_tokens,
      t: r.usage.total_tokens,
      cached: r.usage.prompt_tokens_details.cached_tokens,
      reasoning: r.usage.completion_tokens_details.reasoning_tokens,
    },
    { p: 5, c: 16, t: 21, cached: 0, reasoning: 0 },
  );
});

test('openai chat: overrides by header (text, cached/reasoning tokens, model) and max_tokens truncation', T, async () => {
  const r = await openai.chat.completions.create(
    { model: 'gpt-4o', messages: [{ role: 'user', content: 'abcdefgh' }] },
    { headers: { 'x-mock-text': 'Hello world', 'x-mock-cached-tokens': '1', 'x-mock-reasoning-tokens': '7', 'x-mock-model': 'gpt-4o-2024-08-06' } },
  );
  assert.equal(r.choices[0].message.content, 'Hello world');
  assert.equal(r.model, 'gpt-4o-2024-08-06');
  assert.equal(r.usage.prompt_tokens, 2);
  assert.equal(r.usage.prompt_tokens_details.cached_tokens, 1);
  assert.equal(r.usage.completion_tokens, 3 + 7); // reasoning is part of completion tokens
  assert.equal(r.usage.completion_tokens_details.reasoning_tokens, 7);

  const t = await openai.chat.completions.create({ model: 'gpt-4o', max_tokens: 3, messages: [{ role: 'user', content: 'x' }] });
  assert.equal(t.choices[0].finish_reason, 'length');
  assert.equal(t.choices[0].message.content, DEFAULT_TEXT.slice(0, 12));
  assert.equal(t.usage.completion_tokens, 3);

  const l = await openai.chat.completions.create(
    { model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] },
    { headers: { 'x-mock-text-length': '1000' } },
  );
  assert.equal(l.choices[0].message.content.length, 1000);
  assert.equal(l.usage.completion_tokens, 250);
});

test('openai chat streaming with include_usage', T, async () => {
  mock.configure({ chunks: 4 });
  const stream = await openai.chat.completions.create({
    model: 'gpt-4o-mini',
    stream: true,
    stream_options: { include_usage: true },
    messages: [{ role: 'user', content: 'hello there!' }],
  });
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  assert.ok(chunks.every((c) => c.object === 'chat.completion.chunk'));
  const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
  assert.equal(text, DEFAULT_TEXT);
  assert.equal(chunks.filter((c) => c.choices[0]?.delta?.content).length, 4);
  assert.equal(chunks.at(-2).choices[0].finish_reason, 'stop');
  const last = chunks.at(-1);
  assert.deepEqual(last.choices, []);
  assert.equal(last.usage.prompt_tokens, 3);
  assert.equal(last.usage.completion_tokens, 16);
  assert.equal(last.usage.total_tokens, 19);
  assert.equal(last.usage.prompt_tokens_details.cached_tokens, 0);
  assert.equal(last.usage.completion_tokens_details.reasoning_tokens, 0);

  // the SDK's stream helper assembles the same completion
  const helper = openai.chat.completions.stream({
    model: 'gpt-4o-mini',
    stream_options: { include_usage: true },
    messages: [{ role: 'user', content: 'hello there!' }],
  });
  const final = await helper.finalChatCompletion();
  assert.equal(final.choices[0].message.content, DEFAULT_TEXT);
  assert.equal(final.usage.total_tokens, 19);

  // raw wire: [DONE] terminator, no usage chunk without include_usage
  const raw = await fetch(`${mock.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'm', stream: true, messages: [{ role: 'user', content: 'x' }] }),
  });
  assert.match(raw.headers.get('content-type'), /^text\/event-stream/);
  const body = await raw.text();
  assert.ok(body.endsWith('data: [DONE]\n\n'));
  assert.ok(!body.includes('"usage"'));
});

test('openai tool calls (JSON), then text after the tool result', T, async () => {
  const r = await openai.chat.completions.create({
    model: 'gpt-4o',
    messages: [{ role: 'user', content: 'weather in Paris?' }],
    tools: [WEATHER_OA, { type: 'function', function: { name: 'other', parameters: { type: 'object', properties: {} } } }],
  });
  const choice = r.choices[0];
  assert.equal(choice.finish_reason, 'tool_calls');
  assert.equal(choice.message.content, null);
  assert.equal(choice.message.tool_calls.length, 1);
  const call = choice.message.tool_calls[0];
  assert.equal(call.type, 'function');
  assert.equal(call.function.name, 'get_weather');
  assert.deepEqual(JSON.parse(call.function.arguments), { city: 'mock_city' });
  assert.equal(r.usage.completion_tokens, tokens(call.function.arguments));

  const r2 = await openai.chat.completions.create({
    model: 'gpt-4o',
    tools: [WEATHER_OA],
    messages: [
      { role: 'user', content: 'weather in Paris?' },
      { role: 'assistant', content: null, tool_calls: [call] },
      { role: 'tool', tool_call_id: call.id, content: 'sunny' },
    ],
  });
  assert.equal(r2.choices[0].finish_reason, 'stop');
  assert.equal(r2.choices[0].message.content, DEFAULT_TEXT);
  assert.equal(r2.choices[0].message.tool_calls, undefined);

  // configured tool arguments
  const r3 = await openai.chat.completions.create(
    { model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }], tools: [WEATHER_OA] },
    { headers: { 'x-mock-tool-args': '{"city":"Berlin","card":"4111111111111111"}' } },
  );
  assert.deepEqual(JSON.parse(r3.choices[0].message.tool_calls[0].function.arguments), { city: 'Berlin', card: '4111111111111111' });
});

test('openai tool calls streamed as argument fragments', T, async () => {
  const stream = await openai.chat.completions.create({
    model: 'gpt-4o',
    stream: true,
    messages: [{ role: 'user', content: 'weather?' }],
    tools: [WEATHER_OA],
  });
  const frags = [];
  let first;
  let finish;
  for await (const c of stream) {
    const d = c.choices[0]?.delta;
    for (const tc of d?.tool_calls ?? []) {
      if (tc.id) first = tc;
      else frags.push(tc.function.arguments);
    }
    if (c.choices[0]?.finish_reason) finish = c.choices[0].finish_reason;
  }
  assert.equal(first.function.name, 'get_weather');
  assert.equal(first.type, 'function');
  assert.ok(frags.length > 1, 'arguments arrive in several fragments');
  assert.deepEqual(JSON.parse(frags.join('')), { city: 'mock_city' });
  assert.equal(finish, 'tool_calls');

  const helper = openai.chat.completions.stream({ model: 'gpt-4o', messages: [{ role: 'user', content: 'weather?' }], tools: [WEATHER_OA] });
  const final = await helper.finalChatCompletion();
  assert.equal(final.choices[0].finish_reason, 'tool_calls');
  assert.equal(final.choices[0].message.tool_calls[0].function.name, 'get_weather');
  assert.equal(final.choices[0].message.tool_calls[0].function.arguments, '{"city":"mock_city"}');
});

test('openai embeddings: SDK default base64 decodes to the float values', T, async () => {
  const r = await openai.embeddings.create({ model: 'text-embedding-3-small', input: ['hello', 'world!!!'] });
  const sent = mock.received().at(-1);
  assert.equal(sent.json.encoding_format, 'base64'); // the SDK asked for base64
  assert.equal(r.data.length, 2);
  assert.equal(r.usage.prompt_tokens, 2 + 2);
  assert.equal(r.usage.total_tokens, 4);
  const floats = await getJson('/v1/embeddings', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'text-embedding-3-small', input: ['hello', 'world!!!'], encoding_format: 'float' }),
  });
  assert.ok(Array.isArray(floats.body.data[0].embedding));
  assert.equal(floats.body.data[0].embedding.length, 8);
  for (let i = 0; i < 2; i++) {
    assert.deepEqual(Array.from(r.data[i].embedding), floats.body.data[i].embedding);
  }
  assert.deepEqual(floats.body.data[0].embedding, Array.from(embeddingOf('hello', 8)));
  const norm = Math.hypot(...floats.body.data[1].embedding);
  assert.ok(Math.abs(norm - 1) < 1e-5);

  const d = await openai.embeddings.create({ model: 'text-embedding-3-small', input: 'abc', dimensions: 32 });
  assert.equal(d.data[0].embedding.length, 32);
});

test('openai models list and legacy completions', T, async () => {
  const ids = [];
  for await (const m of openai.models.list()) ids.push(m.id);
  assert.ok(ids.includes('gpt-4o-mini'));
  const one = await openai.models.retrieve('gpt-4o');
  assert.equal(one.id, 'gpt-4o');
  await assert.rejects(openai.models.retrieve('nope'), OpenAI.NotFoundError);

  const c = await openai.completions.create({ model: 'gpt-3.5-turbo-instruct', prompt: 'Say hi' });
  assert.equal(c.object, 'text_completion');
  assert.equal(c.choices[0].text, DEFAULT_TEXT);
  assert.equal(c.usage.prompt_tokens, 2);
  assert.equal(c.usage.completion_tokens, 16);

  const s = await openai.completions.create({ model: 'x', prompt: 'Say hi', stream: true, stream_options: { include_usage: true } });
  let text = '';
  let usage;
  for await (const ch of s) {
    text += ch.choices[0]?.text ?? '';
    if (ch.usage) usage = ch.usage;
  }
  assert.equal(text, DEFAULT_TEXT);
  assert.equal(usage.total_tokens, 18);
});

test('openai responses API: JSON, streaming events, function call', T, async () => {
  const r = await openai.responses.create({ model: 'gpt-4o-mini', instructions: 'abcd', input: 'hello world' });
  assert.equal(r.object, 'response');
  assert.equal(r.status, 'completed');
  assert.equal(r.output_text, DEFAULT_TEXT);
  assert.equal(r.usage.input_tokens, 1 + 3); // 15 bytes -> 4
  assert.equal(r.usage.output_tokens, 16);

  const stream = openai.responses.stream(
    { model: 'gpt-4o-mini', input: [{ role: 'user', content: 'hello world' }] },
    { headers: { 'x-mock-cached-tokens': '2', 'x-mock-reasoning-tokens': '4' } },
  );
  const types = [];
  let deltas = '';
  stream.on('event', (e) => types.push(e.type));
  stream.on('response.output_text.delta', (e) => (deltas += e.delta));
  const final = await stream.finalResponse();
  assert.equal(types[0], 'response.created');
  assert.ok(types.includes('response.output_text.delta'));
  assert.equal(types.at(-1), 'response.completed');
  assert.equal(deltas, DEFAULT_TEXT);
  assert.equal(final.output_text, DEFAULT_TEXT);
  assert.equal(final.usage.input_tokens, 3);
  assert.equal(final.usage.input_tokens_details.cached_tokens, 2);
  assert.equal(final.usage.output_tokens, 20);
  assert.equal(final.usage.output_tokens_details.reasoning_tokens, 4);
  assert.equal(final.usage.total_tokens, 23);

  const tools = [{ type: 'function', name: 'get_weather', parameters: WEATHER_OA.function.parameters, strict: false }];
  const fc = await openai.responses.create({ model: 'gpt-4o-mini', input: 'weather?', tools });
  assert.equal(fc.output[0].type, 'function_call');
  assert.equal(fc.output[0].name, 'get_weather');
  assert.deepEqual(JSON.parse(fc.output[0].arguments), { city: 'mock_city' });

  const fs = openai.responses.stream({ model: 'gpt-4o-mini', input: 'weather?', tools });
  const ff = await fs.finalResponse();
  assert.equal(ff.output[0].arguments, '{"city":"mock_city"}');

  const after = await openai.responses.create({
    model: 'gpt-4o-mini',
    tools,
    input: [
      { role: 'user', content: 'weather?' },
      { type: 'function_call', call_id: fc.output[0].call_id, name: 'get_weather', arguments: fc.output[0].arguments },
      { type: 'function_call_output', call_id: fc.output[0].call_id, output: 'sunny' },
    ],
  });
  assert.equal(after.output_text, DEFAULT_TEXT);
});

test('anthropic messages (JSON) with usage', T, async () => {
  mock.configure({ cached_tokens: 1, cache_creation_tokens: 3 });
  const m = await anthropic.messages.create({
    model: 'claude-sonnet-4-5',
    max_tokens: 100,
    system: 'abcd',
    messages: [{ role: 'user', content: [{ type: 'text', text: 'hello world' }] }],
  });
  assert.equal(m.type, 'message');
  assert.equal(m.role, 'assistant');
  assert.equal(m.model, 'claude-sonnet-4-5');
  assert.equal(m.content[0].type, 'text');
  assert.equal(m.content[0].text, DEFAULT_TEXT);
  assert.equal(m.stop_reason, 'end_turn');
  assert.equal(m.usage.input_tokens, 4);
  assert.equal(m.usage.output_tokens, 16);
  assert.equal(m.usage.cache_read_input_tokens, 1);
  assert.equal(m.usage.cache_creation_input_tokens, 3);

  const t = await anthropic.messages.create({ model: 'c', max_tokens: 2, messages: [{ role: 'user', content: 'x' }] });
  assert.equal(t.stop_reason, 'max_tokens');
  assert.equal(t.usage.output_tokens, 2);

  const n = await anthropic.messages.countTokens({ model: 'c', messages: [{ role: 'user', content: 'hello world' }] });
  assert.equal(n.input_tokens, 3);

  const ids = [];
  for await (const mm of anthropic.models.list()) ids.push(mm.id);
  assert.ok(ids.includes('claude-sonnet-4-5'));
});

test('anthropic streaming: full event sequence and final message', T, async () => {
  mock.configure({ cached_tokens: 2 });
  const stream = anthropic.messages.stream({
    model: 'claude-sonnet-4-5',
    max_tokens: 100,
    messages: [{ role: 'user', content: 'hello world' }],
  });
  const types = [];
  let text = '';
  stream.on('streamEvent', (e) => types.push(e.type));
  stream.on('text', (d) => (text += d));
  const final = await stream.finalMessage();
  assert.deepEqual(
    [...new Set(types)],
    ['message_start', 'content_block_start', 'content_block_delta', 'content_block_stop', 'message_delta', 'message_stop'],
  );
  assert.equal(text, DEFAULT_TEXT);
  assert.equal(final.content[0].text, DEFAULT_TEXT);
  assert.equal(final.stop_reason, 'end_turn');
  assert.equal(final.usage.input_tokens, 3);
  assert.equal(final.usage.output_tokens, 16);
  assert.equal(final.usage.cache_read_input_tokens, 2);

  // raw wire carries the ping and the message_start usage
  const raw = await fetch(`${mock.url}/v1/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'c', max_tokens: 100, stream: true, messages: [{ role: 'user', content: 'hello world' }] }),
  });
  const body = await raw.text();
  assert.match(body, /^event: message_start\ndata: .*"usage":\{"input_tokens":3,"cache_creation_input_tokens":0,"cache_read_input_tokens":2,"output_tokens":1,/);
  assert.match(body, /event: ping\ndata: \{"type":"ping"\}/);
  assert.ok(body.endsWith('event: message_stop\ndata: {"type":"message_stop"}\n\n'));
});

test('anthropic tool_use streamed with input_json_delta, then text after tool_result', T, async () => {
  const stream = anthropic.messages.stream({
    model: 'claude-sonnet-4-5',
    max_tokens: 100,
    tools: [WEATHER_AN],
    messages: [{ role: 'user', content: 'weather in Paris?' }],
  });
  const partials = [];
  stream.on('inputJson', (partial) => partials.push(partial));
  const final = await stream.finalMessage();
  assert.ok(partials.length > 1, 'input arrives in several partial_json fragments');
  assert.equal(final.stop_reason, 'tool_use');
  const block = final.content[0];
  assert.equal(block.type, 'tool_use');
  assert.equal(block.name, 'get_weather');
  assert.match(block.id, /^toolu_/);
  assert.deepEqual(block.input, { city: 'mock_city' });
  assert.equal(final.usage.output_tokens, tokens('{"city":"mock_city"}'));

  const json = await anthropic.messages.create({
    model: 'c',
    max_tokens: 100,
    tools: [WEATHER_AN],
    messages: [{ role: 'user', content: 'weather in Paris?' }],
  });
  assert.equal(json.content[0].type, 'tool_use');
  assert.deepEqual(json.content[0].input, { city: 'mock_city' });

  const pre = await anthropic.messages
    .stream(
      { model: 'c', max_tokens: 100, tools: [WEATHER_AN], messages: [{ role: 'user', content: 'w?' }] },
      { headers: { 'x-mock-tool-preamble': '1' } },
    )
    .finalMessage();
  assert.deepEqual(pre.content.map((b) => b.type), ['text', 'tool_use']);
  assert.deepEqual(pre.content[1].input, { city: 'mock_city' });

  const after = await anthropic.messages.create({
    model: 'c',
    max_tokens: 100,
    tools: [WEATHER_AN],
    messages: [
      { role: 'user', content: 'weather in Paris?' },
      { role: 'assistant', content: [{ type: 'tool_use', id: block.id, name: block.name, input: block.input }] },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: block.id, content: 'sunny' }] },
    ],
  });
  assert.equal(after.stop_reason, 'end_turn');
  assert.equal(after.content[0].type, 'text');
});

async function mcpSession(path) {
  const client = new Client({ name: 'mock-test', version: '1.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL(mock.url + path));
  await client.connect(transport);
  return { client, transport };
}

test('MCP over Streamable HTTP (SSE responses): listTools, callTool, ping', T, async () => {
  const { client, transport } = await mcpSession('/mcp');
  try {
    assert.equal(client.getServerVersion().name, 'renlayer-mock-mcp');
    const { tools } = await client.listTools();
    const names = tools.map((t) => t.name);
    assert.ok(names.includes('get_weather') && names.includes('search_docs'));
    const res = await client.callTool({ name: 'get_weather', arguments: { city: 'Paris' } });
    assert.equal(res.isError, false);
    assert.equal(res.content[0].type, 'text');
    assert.equal(res.content[0].text, 'get_weather called with {"city":"Paris"}');
    await client.ping();
    assert.ok(transport.sessionId);
    const recs = mock.received().filter((r) => r.path === '/mcp' && r.method === 'POST');
    assert.equal(recs[0].json.method, 'initialize');
    assert.ok(recs.slice(1).every((r) => r.headers['mcp-session-id'] === transport.sessionId));
    const call = recs.find((r) => r.json?.method === 'tools/call');
    assert.equal(call.json.params.name, 'get_weather');
  } finally {
    await client.close();
  }
  const raw = await fetch(`${mock.url}/mcp`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
  });
  assert.match(raw.headers.get('content-type'), /^text\/event-stream/);
  assert.match(await raw.text(), /^event: message\ndata: \{"jsonrpc":"2.0","id":1,"result":\{"tools"/);
});

test('MCP with JSON responses (config switch) on a nested /mcp path', T, async () => {
  mock.configure({ mcp_mode: 'json' });
  const { client } = await mcpSession('/gates/tools/mcp');
  try {
    const { tools } = await client.listTools();
    assert.ok(tools.length >= 2);
    const res = await client.callTool({ name: 'search_docs', arguments: { query: 'policies' } });
    assert.equal(res.content[0].text, 'search_docs called with {"query":"policies"}');
  } finally {
    await client.close();
  }
  const raw = await fetch(`${mock.url}/x/mcp`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'ping' }),
  });
  assert.match(raw.headers.get('content-type'), /^application\/json/);
  assert.deepEqual(await raw.json(), { jsonrpc: '2.0', id: 7, result: {} });
});

test('error injection raises the SDKs normal exceptions', T, async () => {
  const msgs = [{ role: 'user', content: 'x' }];
  await assert.rejects(
    openai.chat.completions.create({ model: 'm', messages: msgs }, { headers: { 'x-mock-error': '429', 'x-mock-retry-after': '7' } }),
    (e) => {
      assert.ok(e instanceof OpenAI.RateLimitError);
      assert.equal(e.status, 429);
      assert.equal(e.headers.get('retry-after'), '7');
      assert.equal(e.code, 'rate_limit_exceeded');
      return true;
    },
  );
  await assert.rejects(openai.chat.completions.create({ model: 'm', messages: msgs }, { headers: { 'x-mock-error': '500' } }), OpenAI.InternalServerError);
  await assert.rejects(
    openai.chat.completions.create({ model: 'm', messages: msgs, stream: true }, { headers: { 'x-mock-error': '503' } }),
    (e) => e instanceof OpenAI.InternalServerError && e.status === 503,
  );
  await assert.rejects(
    anthropic.messages.create({ model: 'c', max_tokens: 5, messages: msgs }, { headers: { 'x-mock-error': '429' } }),
    (e) => e instanceof Anthropic.RateLimitError && e.type === 'rate_limit_error' && e.requestID.startsWith('req_mock'),
  );
  await assert.rejects(
    anthropic.messages.create({ model: 'c', max_tokens: 5, messages: msgs }, { headers: { 'x-mock-error': '529' } }),
    (e) => e instanceof Anthropic.OverloadedError && e.type === 'overloaded_error',
  );
  await assert.rejects(
    anthropic.messages.create({ model: 'c', max_tokens: 5, messages: msgs }, { headers: { 'x-mock-error': '500' } }),
    Anthropic.InternalServerError,
  );
  // connection reset
  await assert.rejects(openai.chat.completions.create({ model: 'm', messages: msgs }, { headers: { 'x-mock-error': 'reset' } }), (e) => {
    assert.ok(e instanceof OpenAI.APIConnectionError);
    assert.ok(!(e instanceof OpenAI.APIConnectionTimeoutError));
    return true;
  });
  // never answers
  const t0 = Date.now();
  await assert.rejects(
    openai.chat.completions.create({ model: 'm', messages: msgs }, { headers: { 'x-mock-error': 'timeout' }, timeout: 300 }),
    OpenAI.APIConnectionTimeoutError,
  );
  assert.ok(Date.now() - t0 >= 250);
  assert.deepEqual(
    mock.received().map((r) => r.injected),
    ['429', '500', '503', '429', '529', '500', 'reset', 'timeout'],
  );
  // a stream cut in the middle
  const cut = await openai.chat.completions.create({ model: 'm', messages: msgs, stream: true }, { headers: { 'x-mock-reset-after-events': '2' } });
  const got = [];
  await assert.rejects(async () => {
    for await (const c of cut) got.push(c);
  });
  assert.equal(got.length, 2);
});

test('fail the next N requests, then succeed (config, routes and headers)', T, async () => {
  const msgs = [{ role: 'user', content: 'x' }];
  mock.configure({ error: 503, error_count: 2 });
  for (let i = 0; i < 2; i++)
    await assert.rejects(openai.chat.completions.create({ model: 'm', messages: msgs }), (e) => e.status === 503);
  const ok = await openai.chat.completions.create({ model: 'm', messages: msgs });
  assert.equal(ok.choices[0].message.content, DEFAULT_TEXT);
  assert.equal(mock.config().error, null);

  // a failing primary base URL next to a healthy one on the same mock
  mock.configure({ routes: { '/primary': { error: '500' } } });
  const primary = new OpenAI({ apiKey: 'k', baseURL: `${mock.url}/primary/v1`, maxRetries: 0 });
  await assert.rejects(primary.chat.completions.create({ model: 'm', messages: msgs }), OpenAI.InternalServerError);
  await assert.rejects(primary.chat.completions.create({ model: 'm', messages: msgs }), OpenAI.InternalServerError);
  assert.ok(await openai.chat.completions.create({ model: 'm', messages: msgs }));

  // header form: the first attempt carrying these headers fails, the retry passes
  const h = { 'x-mock-error': '429', 'x-mock-error-count': '1', 'x-mock-error-key': 'fallback-1' };
  await assert.rejects(openai.chat.completions.create({ model: 'm', messages: msgs }, { headers: h }), OpenAI.RateLimitError);
  assert.ok(await openai.chat.completions.create({ model: 'm', messages: msgs }, { headers: h }));

  // the SDK's own retries recover from one injected failure
  mock.configure({ error: 500, error_count: 1, retry_after: 0 });
  const retrying = new OpenAI({ apiKey: 'k', baseURL: `${mock.url}/v1`, maxRetries: 2 });
  const r = await retrying.chat.completions.create({ model: 'm', messages: msgs });
  assert.equal(r.choices[0].message.content, DEFAULT_TEXT);

  // control API
  const cfg = await getJson('/__mock/config', { method: 'POST', body: JSON.stringify({ error: '503', error_count: 1 }) });
  assert.equal(cfg.body.error, '503');
  const bad = await getJson('/__mock/config', { method: 'POST', body: JSON.stringify({ no_such_key: 1 }) });
  assert.equal(bad.status, 400);
  await assert.rejects(openai.models.list(), (e) => e.status === 503);
  assert.ok(await openai.models.list());
});

test('chunk delay and latency are observable', T, async () => {
  const stream = await openai.chat.completions.create(
    { model: 'm', stream: true, messages: [{ role: 'user', content: 'x' }] },
    { headers: { 'x-mock-chunk-delay-ms': '80', 'x-mock-chunks': '5' } },
  );
  const times = [];
  for await (const _c of stream) times.push(Date.now());
  // role + 5 content + finish + [DONE] = 8 events, 7 gaps of 80 ms
  assert.equal(times.length, 7);
  assert.ok(times.at(-1) - times[0] >= 400, `spread ${times.at(-1) - times[0]} ms`);

  const t0 = Date.now();
  const an = anthropic.messages.stream(
    { model: 'c', max_tokens: 100, messages: [{ role: 'user', content: 'x' }] },
    { headers: { 'x-mock-latency-ms': '150', 'x-mock-chunk-delay-ms': '40' } },
  );
  let firstText = 0;
  an.on('text', () => (firstText ||= Date.now()));
  await an.finalMessage();
  const end = Date.now();
  assert.ok(firstText - t0 >= 140, 'latency before the first byte');
  assert.ok(end - firstText >= 150, 'text keeps arriving after the first delta');
});

test('gzip responses when the client accepts gzip', T, async () => {
  mock.configure({ gzip: true });
  const raw = await new Promise((resolve, reject) => {
    const req = http.request(
      `${mock.url}/v1/chat/completions`,
      { method: 'POST', headers: { 'accept-encoding': 'gzip', 'content-type': 'application/json' } },
      (res) => {
        const bufs = [];
        res.on('data', (b) => bufs.push(b));
        res.on('end', () => resolve({ headers: res.headers, body: Buffer.concat(bufs) }));
      },
    );
    req.on('error', reject);
    req.end(JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'x' }] }));
  });
  assert.equal(raw.headers['content-encoding'], 'gzip');
  assert.equal(JSON.parse(zlib.gunzipSync(raw.body)).choices[0].message.content, DEFAULT_TEXT);

  // SDKs decode it, streams included, and chunks still arrive one by one
  const r = await openai.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'x' }] });
  assert.equal(r.choices[0].message.content, DEFAULT_TEXT);
  const s = await openai.chat.completions.create(
    { model: 'm', stream: true, messages: [{ role: 'user', content: 'x' }] },
    { headers: { 'x-mock-chunk-delay-ms': '60' } },
  );
  const times = [];
  let text = '';
  for await (const c of s) {
    times.push(Date.now());
    text += c.choices[0]?.delta?.content ?? '';
  }
  assert.equal(text, DEFAULT_TEXT);
  assert.ok(times.at(-1) - times[0] >= 250);
  const m = await anthropic.messages.stream({ model: 'c', max_tokens: 100, messages: [{ role: 'user', content: 'x' }] }).finalMessage();
  assert.equal(m.content[0].text, DEFAULT_TEXT);
  // no gzip unless asked for
  const plain = await fetch(`${mock.url}/v1/models`, { headers: { 'accept-encoding': 'identity' } });
  assert.equal(plain.headers.get('content-encoding'), null);
});

test('plain HTTP echo, recording and reset', T, async () => {
  const e = await getJson('/some/api?x=1', {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'X-Custom': 'Yes' },
    body: '{"a":1}',
  });
  assert.equal(e.status, 200);
  assert.equal(e.body.path, '/some/api');
  assert.equal(e.body.method, 'POST');
  assert.equal(e.body.headers['x-custom'], 'Yes');
  assert.equal(e.body.body, '{"a":1}');
  assert.deepEqual(e.body.json, { a: 1 });

  await openai.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'x' }] });
  const recs = mock.received();
  assert.equal(recs.length, 2);
  assert.equal(recs[0].path, '/some/api');
  assert.equal(recs[0].query, 'x=1');
  assert.equal(recs[1].method, 'POST');
  assert.equal(recs[1].path, '/v1/chat/completions');
  assert.equal(recs[1].headers.authorization, 'Bearer sk-test');
  assert.equal(recs[1].json.model, 'm');
  assert.equal(typeof recs[1].body, 'string');
  assert.equal(recs[1].status, 200);
  assert.ok(recs[1].ts >= recs[0].ts);

  const http1 = await getJson('/__mock/requests');
  assert.equal(http1.body.length, 2);
  assert.deepEqual(
    http1.body.map((r) => r.path),
    ['/some/api', '/v1/chat/completions'],
  );
  const filtered = await getJson('/__mock/requests?path=/chat/');
  assert.equal(filtered.body.length, 1);
  const rs = await fetch(`${mock.url}/__mock/reset`, { method: 'POST' });
  assert.equal(rs.status, 200);
  assert.equal(mock.received().length, 0);
  assert.equal((await getJson('/__mock/requests')).body.length, 0);
  await fetch(`${mock.url}/anything`);
  mock.reset();
  assert.deepEqual(mock.received(), []);
});

test('CLI: prints {"listening":PORT} and serves', T, async () => {
  const child = spawn(process.execPath, [SERVER, '--port', '0', '--host', '127.0.0.1'], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const rl = createInterface({ input: child.stdout });
    const [line] = await once(rl, 'line');
    const { listening } = JSON.parse(line);
    assert.ok(Number.isInteger(listening) && listening > 0);
    const client = new OpenAI({ apiKey: 'k', baseURL: `http://127.0.0.1:${listening}/v1`, maxRetries: 0 });
    const r = await client.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'x' }] });
    assert.equal(r.choices[0].message.content, DEFAULT_TEXT);
    rl.close();
  } finally {
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    const [code] = await exited;
    assert.equal(code, 0);
  }
});
