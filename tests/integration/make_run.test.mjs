// `make run` / `make stop` (scripts/run.sh, scripts/stop.sh) on free ports in
// a private state folder: everything starts and is ready, demo.env holds what
// the README promises, a second run is safe, and stop leaves no process behind.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { freePort, statusOf, sourceDir, buildDir, waitFor, getJson } from '../lib/harness.mjs';

const run = promisify(execFile);
let state;
let env;
const ports = {};

before(async () => {
  state = await mkdtemp(path.join(tmpdir(), 'renlayer-run-'));
  for (const k of ['PG', 'NATS', 'PROXY', 'API', 'TRACE_WRITER', 'SESSION_TRACKER', 'INSIGHTS', 'MOCK']) {
    ports[k] = await freePort();
  }
  env = {
    ...process.env,
    RENLAYER_STATE_DIR: state,
    BUILD_DIR: buildDir,
    RL_SKIP_NPM: '1',
    ...Object.fromEntries(Object.entries(ports).map(([k, v]) => [`RENLAYER_${k}_PORT`, String(v)])),
  };
});

after(async () => {
  await run('bash', [path.join(sourceDir, 'scripts/stop.sh')], { env }).catch(() => {});
  await rm(state, { recursive: true, force: true });
});

function parseEnv(text) {
  return Object.fromEntries(text.trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
}

const pidFiles = ['proxy', 'api', 'trace-writer', 'session-tracker', 'insights', 'mock-upstream'];

async function pids() {
  const out = [];
  for (const name of pidFiles) out.push(Number(await readFile(path.join(state, 'run', `${name}.pid`), 'utf8')));
  out.push(Number(await readFile(path.join(state, 'nats', 'nats.pid'), 'utf8')));
  const pgPid = (await readFile(path.join(state, 'pg', 'postmaster.pid'), 'utf8')).split('\n')[0];
  out.push(Number(pgPid));
  return out;
}

// Running means not exited: a zombie (exited, not yet reaped by PID 1) has stopped.
const isAlive = (pid) => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
};

test('run starts the stack, seeds the demo and prints how to call it', async () => {
  const { stdout } = await run('bash', [path.join(sourceDir, 'scripts/run.sh')], { env, timeout: 180000 });
  assert.match(stdout, /RenLayer is running/);
  assert.match(stdout, /v1\/chat\/completions/);
  assert.match(stdout, /new OpenAI\(/);
  const demo = parseEnv(await readFile(path.join(state, 'demo.env'), 'utf8'));
  for (const k of ['RENLAYER_PROXY_URL', 'RENLAYER_API_URL', 'RENLAYER_DEMO_AGENT_KEY', 'RENLAYER_DEMO_OPERATOR_TOKEN',
    'RENLAYER_DEMO_OPERATOR_EMAIL', 'RENLAYER_DATABASE_URL', 'RENLAYER_NATS_URL']) {
    assert.ok(demo[k], `${k} in demo.env`);
  }
  assert.match(demo.RENLAYER_DEMO_AGENT_KEY, /^rl_live_[0-9A-Za-z]{33}$/);
  assert.match(demo.RENLAYER_DEMO_OPERATOR_TOKEN, /^rlop_[0-9A-Za-z]{33}$/);
  assert.equal(await statusOf(`${demo.RENLAYER_API_URL}/readyz`), 200);
  for (const k of ['PROXY', 'API', 'TRACE_WRITER', 'SESSION_TRACKER', 'INSIGHTS']) {
    assert.equal(await statusOf(`http://127.0.0.1:${ports[k]}/readyz`), 200, k);
  }
  // the demo lives in the database, keys only as hashes
  const db = new pg.Client({ connectionString: demo.RENLAYER_DATABASE_URL });
  await db.connect();
  try {
    const { rows } = await db.query(
      `SELECT t.name AS tenant, o.email, a.name AS agent, g.upstream_url, g.is_default,
              (SELECT count(*)::int FROM renlayer.api_keys k WHERE k.agent_id = a.id) AS keys
         FROM renlayer.tenants t JOIN renlayer.operators o ON o.tenant_id = t.id
         JOIN renlayer.agents a ON a.tenant_id = t.id JOIN renlayer.gates g ON g.agent_id = a.id
        WHERE t.id = $1`, [demo.RENLAYER_DEMO_TENANT_ID]);
    assert.equal(rows.length, 1);
    assert.equal(rows[0].email, demo.RENLAYER_DEMO_OPERATOR_EMAIL);
    assert.equal(rows[0].upstream_url, `http://127.0.0.1:${ports.MOCK}`);
    assert.equal(rows[0].keys, 1);
    const leaked = await db.query(
      `SELECT count(*)::int AS n FROM renlayer.api_keys WHERE encode(key_hash, 'escape') LIKE '%' || $1 || '%'`,
      [demo.RENLAYER_DEMO_AGENT_KEY.slice(8)]);
    assert.equal(leaked.rows[0].n, 0);
  } finally {
    await db.end();
  }
});

// The README's walkthrough, run as written (its sh blocks in one shell with
// demo.env loaded, its OpenAI SDK snippet with node): what it shows must work.
// Proxies apply a policy a few tens of milliseconds after the API commits it
// (NOTIFY, then a reload), as the README says; a reader takes longer than
// that between two blocks, the test waits for it by polling the proxy.
const policyApplied = `for i in $(seq 1 500); do
  curl -s $RENLAYER_PROXY_URL/v1/chat/completions -H "Authorization: Bearer $RENLAYER_DEMO_AGENT_KEY" \\
    -H 'Content-Type: application/json' -d '{"model":"gpt-4.5-preview","messages":[]}' | grep -q policy_denied && break
  sleep 0.02
done`;

function walkthrough(readme) {
  const start = readme.indexOf('## Five-minute walkthrough');
  assert.ok(start >= 0, 'README has the walkthrough');
  const section = readme.slice(start, readme.indexOf('\n## ', start + 1));
  const blocks = [...section.matchAll(/```(sh|js)\n([\s\S]*?)```/g)].map((m) => ({ lang: m[1], code: m[2] }));
  const shell = blocks.filter((b) => b.lang === 'sh' && !b.code.includes('make run'))
    .map((b) => (b.code.includes('/v1/policies -H') ? `${b.code}${policyApplied}\n` : b.code));
  const js = blocks.filter((b) => b.lang === 'js').map((b) => b.code);
  return { shell: shell.join('\n'), js };
}

test('the README walkthrough works as written', async () => {
  const demo = parseEnv(await readFile(path.join(state, 'demo.env'), 'utf8'));
  const { shell, js } = walkthrough(await readFile(path.join(sourceDir, 'README.md'), 'utf8'));
  assert.equal(js.length, 1);
  const runEnv = { ...env, ...demo };
  const script = path.join(sourceDir, 'tests', '.readme-walkthrough-' + process.pid + '.mjs');
  await writeFile(script, js[0]);
  try {
    const sdk = await run('node', [script], { env: runEnv, timeout: 60000 });
    assert.match(sdk.stdout, /deterministic reply from the RenLayer mock/);
  } finally {
    await rm(script, { force: true });
  }
  const { stdout } = await run('bash', ['-euo', 'pipefail', '-c', shell], { env: runEnv, timeout: 60000 });
  assert.match(stdout, /"name":"support-bot"/);                      // the agent
  assert.match(stdout, /"secret":"rl_live_/);                         // its keys, shown once
  assert.match(stdout, /"code":"policy_denied"/);                     // the policy denied the preview model
  assert.match(stdout, /"policy":\{"id":"[^"]+","name":"no previews"\}/); // and the dry run names it
  assert.match(stdout, /"code":"dlp_blocked"/);                       // the AWS key never left
  assert.match(stdout, /write to \[REDACTED:EMAIL\]/);               // the e-mail was redacted upstream
  assert.match(stdout, /"redacted":"mail \[REDACTED:EMAIL\]"/);      // the scan API agrees
  assert.match(stdout, /"pattern":"TCK-\[0-9\]\{6\}"/);             // the custom rule
  // and the blocked call is a trace the API lists (written by the trace-writer, so polled)
  const auth = { headers: { authorization: `Bearer ${demo.RENLAYER_DEMO_OPERATOR_TOKEN}` } };
  await waitFor(async () => {
    const { body } = await getJson(`${demo.RENLAYER_API_URL}/v1/traces?limit=20`, auth);
    return body.data.some((t) => t.status === 'DLP_BLOCKED' && t.error === 'dlp_blocked');
  }, { what: 'the DLP_BLOCKED trace' });
});

test('a second run keeps what runs and does not seed again', async () => {
  const before1 = await pids();
  const demoBefore = await readFile(path.join(state, 'demo.env'), 'utf8');
  await run('bash', [path.join(sourceDir, 'scripts/run.sh')], { env, timeout: 180000 });
  assert.deepEqual(await pids(), before1);
  assert.equal(await readFile(path.join(state, 'demo.env'), 'utf8'), demoBefore);
});

test('stop stops exactly what run started, and nothing is left', async () => {
  const all = await pids();
  const names = [...pidFiles, 'nats-server', 'postgres'];
  assert.ok(all.every(isAlive));
  await run('bash', [path.join(sourceDir, 'scripts/stop.sh')], { env, timeout: 120000 });
  assert.deepEqual(all.map((p, i) => (isAlive(p) ? names[i] : null)).filter(Boolean), []);
  for (const k of Object.keys(ports)) {
    assert.equal(await statusOf(`http://127.0.0.1:${ports[k]}/healthz`), 0, `${k} port closed`);
  }
});
