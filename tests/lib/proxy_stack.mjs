// A running renlayer-proxy with everything it needs: PostgreSQL, NATS, the
// schema, a tenant seeded through the API's code, the mock provider as the
// gate's upstream, and a watcher of the traces and decisions on the bus.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { connect, StringCodec, consumerOpts } from 'nats';
import { startPostgres, startNats, startService, runBinary, waitFor, sourceDir, testSecretKey } from './harness.mjs';
import { parseEnvLines } from './api_stack.mjs';
import { startMock } from '../fixtures/mock-upstream/server.mjs';

export const UPSTREAM_SECRET = 'sk-upstream-secret-0123456789';

/**
 * Watches a JetStream stream from its start and keeps every trace or decision
 * it carries, parsed: a bus message holds one or more, one per line
 * (docs/bus.md). Each entry has the message's subject, Nats-Msg-Id and stream
 * sequence, and the number of lines the message had (`lines`).
 */
export async function watchStream(natsUrl, stream, subjects) {
  const nc = await connect({ servers: natsUrl, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
  const js = nc.jetstream();
  const jsm = await nc.jetstreamManager();
  await waitFor(async () => {
    try {
      await jsm.streams.info(stream);
      return true;
    } catch {
      return false;
    }
  }, { what: `stream ${stream}` });
  const sc = StringCodec();
  const messages = [];
  let busMessages = 0;
  // an ordered push consumer from the stream's start (nats-server 2.9 has no
  // multi-filter consumers, so one subscription per subject)
  const subs = [];
  for (const subject of subjects) {
    const opts = consumerOpts();
    opts.orderedConsumer();
    opts.deliverAll();
    subs.push(await js.subscribe(subject, opts));
  }
  const iter = { close: () => Promise.all(subs.map((x) => x.unsubscribe())) };
  for (const sub of subs) {
    (async () => {
      for await (const m of sub) {
        const text = sc.decode(m.data);
        const lines = text.split('\n').filter((l) => l !== '');
        busMessages++;
        const meta = { subject: m.subject, msgId: m.headers?.get('Nats-Msg-Id'), seq: m.seq, lines: lines.length };
        for (const line of lines.length ? lines : [text]) {
          try {
            messages.push({ ...meta, data: JSON.parse(line) });
          } catch {
            messages.push({ ...meta, raw: line });
          }
        }
      }
    })().catch(() => {});
  }
  return {
    messages,
    /** Bus messages received (each carries one or more entries of messages). */
    busMessages: () => busMessages,
    /** Resolves to the first message whose data satisfies pred. */
    find(pred, what = 'message') {
      return waitFor(() => messages.find((m) => m.data && pred(m.data))?.data, { timeout: 20000, what });
    },
    async close() {
      await iter.close?.();
      await nc.close();
    },
  };
}

export async function startProxyStack({ proxyEnv = {}, mockConfig = {} } = {}) {
  const [pgServer, nats] = await Promise.all([startPostgres(), startNats()]);
  const mock = await startMock({ port: 0, config: mockConfig });
  const spool = await mkdtemp(path.join(tmpdir(), 'renlayer-spool-'));
  const base = {
    RENLAYER_DATABASE_URL: pgServer.url,
    RENLAYER_NATS_URL: nats.url,
    RENLAYER_SECRET_KEY: testSecretKey,
    RENLAYER_MIGRATIONS_DIR: path.join(sourceDir, 'migrations'),
  };
  const migrated = await runBinary('api', ['migrate'], base);
  if (migrated.code !== 0) throw new Error(`migrate failed: ${migrated.stderr}`);
  const api = await startService('api', base);
  const db = new pg.Client({ connectionString: pgServer.url });
  await db.connect();
  const proxies = [];

  const stack = {
    pg: pgServer,
    nats,
    mock,
    api,
    db,
    env: base,
    spool,
    proxies,

    /** Seeds a tenant whose default gate forwards to the mock with an injected key. */
    async seedTenant(email, upstream = mock.url) {
      const r = await runBinary('api', ['seed-demo', '--email', email, '--upstream', upstream,
        '--header', `Authorization=Bearer ${UPSTREAM_SECRET}`], base);
      if (r.code !== 0) throw new Error(`seed-demo failed: ${r.stderr}`);
      const v = parseEnvLines(r.stdout);
      return {
        tenantId: v.RENLAYER_DEMO_TENANT_ID,
        ownerToken: v.RENLAYER_DEMO_OPERATOR_TOKEN,
        agentId: v.RENLAYER_DEMO_AGENT_ID,
        agentKey: v.RENLAYER_DEMO_AGENT_KEY,
        gateId: v.RENLAYER_DEMO_GATE_ID,
      };
    },

    /** Calls the API as an operator. */
    async api(method, urlPath, token, body) {
      const res = await fetch(`${api.url}${urlPath}`, {
        method,
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await res.text();
      return { status: res.status, body: text ? JSON.parse(text) : null };
    },

    /** Starts one more proxy process on this stack. */
    async startProxy(extra = {}) {
      const p = await startService('proxy', {
        ...base,
        RENLAYER_SPOOL_DIR: path.join(spool, `p${proxies.length}`),
        RENLAYER_PROXY_WORKERS: '2',
        RENLAYER_HEALTH_INTERVAL_MS: '100',
        RENLAYER_UPSTREAM_RETRY_BACKOFF_MS: '10',
        ...proxyEnv,
        ...extra,
      });
      proxies.push(p);
      await waitFor(async () => (await fetch(`${p.url}/readyz`)).status === 200, { timeout: 20000, what: 'proxy ready' });
      return p;
    },

    async close() {
      await Promise.all(proxies.map((p) => p.stop()));
      await api.stop();
      await stack.db.end().catch(() => {});
      await mock.close();
      await Promise.all([pgServer.close(), nats.close()]);
      await rm(spool, { recursive: true, force: true });
    },
  };
  return stack;
}
