// Publishes N realistic traces (and their decisions) into JetStream for
// tests/bench/writer.sh, before any trace-writer runs: creates the two
// streams as rl_bus would (file storage, 10 min dedupe window, 7 days), then
// publishes with Nats-Msg-Id = the trace id. Prints one JSON line:
// {"traces":N,"decisions":D,"seconds":S,"bytes":B}.
// LINES > 1 frames them as the proxy does under load (docs/bus.md): up to
// LINES traces of one subject per message, one per line, under the first
// one's id.
//   node writer_publish.mjs NATS_URL TENANT N [BODY_BYTES] [DECISION_EVERY] [LINES]
import { connect } from 'nats';
import { makeTrace, makeDecision, traceSubject, decisionSubject, publishAll } from './writer_messages.mjs';

const [url, tenant, nArg, bodyArg, everyArg, linesArg] = process.argv.slice(2);
const LINES = Math.max(1, Number(linesArg || 1));
const N = Number(nArg || 200000);
const BODY = Number(bodyArg || 2048);
const DECISION_EVERY = Number(everyArg || 10); // one decision per DECISION_EVERY traces

const WORDS = ('the a of to and in that is for on with as it by this be are from at or an was which we can ' +
  'model tool weather paris invoice customer summary request response agent session policy token cost ' +
  'latency upstream stream message content assistant user system function arguments result error retry ' +
  'json schema field value order account report quarter revenue growth forecast meeting decision owner').split(' ');

/** A chat-like text of about n bytes (compressible like real prose, not like "xxxx"). */
function prose(n, seed) {
  let s = '';
  let x = seed * 2654435761 % 4294967296;
  while (s.length < n) {
    x = (x * 1103515245 + 12345) % 2147483648;
    s += WORDS[x % WORDS.length] + ((x >> 8) % 11 === 0 ? '. ' : ' ');
  }
  return s.slice(0, n);
}

const agents = Array.from({ length: 8 }, (_, i) => `0191c9a4-7b1e-7c3a-9f1e-2b6c8d4e5f${(70 + i).toString(16).padStart(2, '0')}`);
const bodies = Array.from({ length: 256 }, (_, i) => prose(BODY, i + 1));

/** Up to LINES items of one subject per message, in order, one per line. */
function frame(items) {
  const open = new Map(); // subject -> item being filled
  const out = [];
  for (const it of items) {
    let m = open.get(it.subject);
    if (!m) {
      m = { subject: it.subject, msgID: it.msgID, lines: [] };
      open.set(it.subject, m);
      out.push(m);
    }
    m.lines.push(it.data);
    if (m.lines.length === LINES) open.delete(it.subject);
  }
  return out.map((m) => ({ subject: m.subject, msgID: m.msgID, data: m.lines.join('\n') }));
}

const nc = await connect({ servers: url });
const jsm = await nc.jetstreamManager();
const NS = 1e9;
for (const [name, subject] of [['RENLAYER_TRACES', 'renlayer.traces.>'], ['RENLAYER_DECISIONS', 'renlayer.decisions.>']]) {
  try {
    await jsm.streams.info(name);
  } catch {
    await jsm.streams.add({ name, subjects: [subject], storage: 'file', retention: 'limits', discard: 'old',
      max_age: 7 * 86400 * NS, duplicate_window: 600 * NS, num_replicas: 1 });
  }
}
const js = nc.jetstream();
const t0 = Date.now();
let bytes = 0;
let decisions = 0;
const CHUNK = 20000;
for (let off = 0; off < N; off += CHUNK) {
  const items = [];
  const now = Date.now();
  for (let i = off; i < Math.min(N, off + CHUNK); i++) {
    const body = bodies[i % bodies.length];
    const req = JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: body }] });
    const resp = JSON.stringify({ id: `chatcmpl-${i}`, choices: [{ message: { role: 'assistant', content: bodies[(i * 7 + 3) % bodies.length] } }],
      usage: { prompt_tokens: 512, completion_tokens: 480, total_tokens: 992 } });
    const t = makeTrace({
      tenant, agent: agents[i % agents.length], ms: now - (N - i) % 1000,
      session_id: `run-${i % 500}`, request_body: req, response_body: resp,
      dlp_findings: i % 5 === 0 ? [{ detector: 'EMAIL', severity: 'medium', where: 'request', action: 'redact' }] : [],
    });
    const data = JSON.stringify(t);
    bytes += data.length;
    items.push({ subject: traceSubject(t), data, msgID: t.trace_id });
    if (DECISION_EVERY > 0 && i % DECISION_EVERY === 0) {
      const d = makeDecision(t);
      items.push({ subject: decisionSubject(d), data: JSON.stringify(d), msgID: `${d.trace_id}:d` });
      decisions++;
    }
  }
  await publishAll(js, LINES > 1 ? frame(items) : items, { window: 2048 });
}
const seconds = (Date.now() - t0) / 1000;
await nc.close();
console.log(JSON.stringify({ traces: N, decisions, seconds, bytes }));
