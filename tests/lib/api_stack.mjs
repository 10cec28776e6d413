// A running renlayer-api on a private PostgreSQL and NATS, with helpers to
// seed tenants, log operators in and call the API, for the API's tests.
import path from 'node:path';
import pg from 'pg';
import { startPostgres, startNats, startService, runBinary, waitFor, sourceDir, testSecretKey } from './harness.mjs';

export function parseEnvLines(text) {
  return Object.fromEntries(
    text.trim().split('\n').filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  );
}

/** Starts PostgreSQL, NATS and the api (dev mode, open signup unless told). */
export async function startApiStack(extraEnv = {}) {
  const [pgServer, nats] = await Promise.all([startPostgres(), startNats()]);
  const base = {
    RENLAYER_DATABASE_URL: pgServer.url,
    RENLAYER_NATS_URL: nats.url,
    RENLAYER_SECRET_KEY: testSecretKey,
    RENLAYER_MIGRATIONS_DIR: path.join(sourceDir, 'migrations'),
  };
  const migrated = await runBinary('api', ['migrate'], base);
  if (migrated.code !== 0) throw new Error(`migrate failed: ${migrated.stderr}`);
  const api = await startService('api', { ...base, RENLAYER_DEV_MODE: 'true', RENLAYER_SIGNUP: 'open', ...extraEnv });
  const db = new pg.Client({ connectionString: pgServer.url });
  await db.connect();

  const stack = {
    pg: pgServer,
    nats,
    api,
    db,
    env: base,
    url: api.url,
    async close() {
      await db.end().catch(() => {});
      await api.stop();
      await Promise.all([pgServer.close(), nats.close()]);
    },

    /** Seeds a tenant through the API's code (seed-demo): ids and secrets. */
    async seedTenant(email) {
      const r = await runBinary('api', ['seed-demo', '--email', email, '--upstream', 'http://127.0.0.1:9'], base);
      if (r.code !== 0) throw new Error(`seed-demo failed: ${r.stderr}`);
      const v = parseEnvLines(r.stdout);
      return {
        tenantId: v.RENLAYER_DEMO_TENANT_ID,
        ownerEmail: v.RENLAYER_DEMO_OPERATOR_EMAIL,
        ownerToken: v.RENLAYER_DEMO_OPERATOR_TOKEN,
        agentId: v.RENLAYER_DEMO_AGENT_ID,
        agentKey: v.RENLAYER_DEMO_AGENT_KEY,
        gateId: v.RENLAYER_DEMO_GATE_ID,
      };
    },

    /** Calls the API; resolves to {status, headers, body (parsed JSON or text)}. */
    async call(method, urlPath, { token, body, headers = {}, raw } = {}) {
      const h = { ...headers };
      if (token) h.authorization = `Bearer ${token}`;
      let payload;
      if (raw !== undefined) payload = raw;
      else if (body !== undefined && method !== 'GET' && method !== 'HEAD') {
        payload = JSON.stringify(body);
        h['content-type'] = 'application/json';
      }
      const res = await fetch(`${api.url}${urlPath}`, { method, headers: h, body: payload });
      const text = await res.text();
      let parsed = text;
      try {
        parsed = text ? JSON.parse(text) : null;
      } catch {
        /* not JSON */
      }
      return { status: res.status, headers: res.headers, body: parsed };
    },

    /** Logs in by e-mail code (dev mode writes it to the log); resolves to the session JWT. */
    async login(email, tenantId) {
      const from = api.lines.length;
      const req = await stack.call('POST', '/v1/auth/otp/request', { body: { email } });
      if (req.status !== 202) throw new Error(`otp request: ${req.status} ${JSON.stringify(req.body)}`);
      const line = await waitFor(
        () => api.lines.slice(from).find((l) => l.msg === 'login code' && l.email === email.toLowerCase()),
        { what: `login code for ${email}` },
      );
      const verify = await stack.call('POST', '/v1/auth/otp/verify', {
        body: tenantId ? { email, code: line.code, tenant_id: tenantId } : { email, code: line.code },
      });
      if (verify.status !== 200) throw new Error(`otp verify: ${verify.status} ${JSON.stringify(verify.body)}`);
      const cookie = verify.headers.get('set-cookie') || '';
      const m = /renlayer_session=([^;]+)/.exec(cookie);
      if (!m) throw new Error(`no session cookie in ${cookie}`);
      return m[1];
    },
  };
  return stack;
}
