// Trace and decision v1 messages (docs/bus.md) as the proxy publishes them,
// built in JS for the trace-writer's tests and benchmark: UUIDv7 ids whose
// timestamp is the request's started_at, and fast parallel JetStream
// publishing with Nats-Msg-Id = the trace id.
import { randomBytes } from 'node:crypto';

/** A UUIDv7 (RFC 9562) carrying the Unix millisecond ms. */
export function uuidv7(ms = Date.now()) {
  const b = randomBytes(16);
  let t = BigInt(Math.floor(ms));
  for (let i = 5; i >= 0; i--) {
    b[i] = Number(t & 0xffn);
    t >>= 8n;
  }
  b[6] = (b[6] & 0x0f) | 0x70;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** RFC 3339 UTC with microseconds, as the proxy writes times. */
export function isoMicros(ms, micros = 0) {
  const iso = new Date(Math.floor(ms)).toISOString(); // 2024-10-20T11:54:56.123Z
  return `${iso.slice(0, 23)}${String(micros % 1000).padStart(3, '0')}Z`;
}

const SHA = '5f1d7a2c0c3e4b8d9a6f0e1b2c3d4e5f60718293a4b5c6d7e8f9012345678901';

/**
 * A trace shaped like the example of docs/bus.md. ms: its started_at;
 * bodyBytes: approximate size of each body; overrides replace fields.
 */
export function makeTrace({ tenant, agent, ms = Date.now(), bodyBytes = 0, ...overrides }) {
  const traceId = uuidv7(ms);
  const pad = bodyBytes > 0 ? 'x'.repeat(bodyBytes) : 'Weather in Paris? Reply to [EMAIL]';
  return {
    v: 1,
    kind: 'trace',
    trace_id: traceId,
    tenant_id: tenant,
    agent_id: agent,
    gate_id: '0191c9a4-7b1e-7c3a-9f1e-2b6c8d4e5f62',
    api_key_id: '0191c9a4-7b1e-7c3a-9f1e-2b6c8d4e5f63',
    user: 'alice@example.com',
    session_id: 'run-2024-10-20-001',
    action: 'chat',
    method: 'POST',
    path: '/v1/chat/completions',
    model: 'gpt-4o-mini',
    upstream: 'https://api.openai.com',
    status: 'FLAGGED',
    http_status: 200,
    policy_ids: ['0191c9a4-7b1e-7c3a-9f1e-2b6c8d4e5f64'],
    dlp_findings: [{ detector: 'EMAIL', severity: 'medium', where: 'request', action: 'redact' }],
    tool_calls: [{ name: 'get_weather', id: 'call_Xk2fQ9', phase: 'requested', args_sha256: SHA }],
    usage: { input_tokens: 1200, output_tokens: 85, total_tokens: 1285, cached_input_tokens: 1024, cache_write_tokens: 0, reasoning_tokens: 0 },
    cost_usd: 0.00011,
    latency_ms: 812.457,
    upstream_ms: 790.25,
    overhead_us: 412,
    started_at: isoMicros(ms, 456),
    ended_at: isoMicros(ms + 812, 913),
    stream: false,
    error: null,
    attempts: [{ gate_id: '0191c9a4-7b1e-7c3a-9f1e-2b6c8d4e5f62', upstream: 'https://api.openai.com', http_status: 200, error: null, ms: 790.25 }],
    request_body: `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"${pad}"}],"tools":[{"type":"function","function":{"name":"get_weather"}}]}`,
    response_body: `{"id":"chatcmpl-9","choices":[{"message":{"role":"assistant","content":"${pad}\\n\\tdone"}}],"usage":{"prompt_tokens":1200,"completion_tokens":85,"total_tokens":1285}}`,
    truncated: false,
    ...overrides,
  };
}

/** The decision of a trace (docs/bus.md). */
export function makeDecision(trace, overrides = {}) {
  const ms = Date.parse(trace.started_at);
  return {
    v: 1,
    kind: 'decision',
    trace_id: trace.trace_id,
    tenant_id: trace.tenant_id,
    agent_id: trace.agent_id,
    gate_id: trace.gate_id,
    api_key_id: trace.api_key_id,
    user: trace.user,
    session_id: trace.session_id,
    action: trace.action,
    method: trace.method,
    path: trace.path,
    model: trace.model,
    status: trace.status,
    http_status: null,
    policy_ids: trace.policy_ids,
    dlp_findings: trace.dlp_findings,
    reason: 'policy "pii-review": flag requests with personal data',
    started_at: trace.started_at,
    decided_at: isoMicros(ms + 1, 102),
    ...overrides,
  };
}

export const traceSubject = (t) => `renlayer.traces.${t.tenant_id}.${t.agent_id}`;
export const decisionSubject = (t) => `renlayer.decisions.${t.tenant_id}.${t.agent_id}`;

/**
 * Publishes items ({subject, data (string|Buffer|object), msgID}) to
 * JetStream with up to `window` publishes awaiting their ack at once; resolves
 * to the number acked. A publish that fails (no ack in time) is retried with
 * the same msgID, which the stream deduplicates.
 */
export async function publishAll(js, items, { window = 512 } = {}) {
  const enc = new TextEncoder();
  let next = 0;
  let acked = 0;
  async function lane() {
    for (;;) {
      const i = next++;
      if (i >= items.length) return;
      const it = items[i];
      const data = typeof it.data === 'string' ? enc.encode(it.data)
        : it.data instanceof Uint8Array ? it.data : enc.encode(JSON.stringify(it.data));
      for (let attempt = 0; ; attempt++) {
        try {
          await js.publish(it.subject, data, it.msgID ? { msgID: it.msgID, timeout: 10000 } : { timeout: 10000 });
          acked++;
          break;
        } catch (e) {
          if (attempt >= 20) throw e;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(window, items.length) }, lane));
  return acked;
}
