// `renlayer-api migrate`: applies every migration once, is safe to run twice
// and twice at once, and refuses an applied migration whose file changed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cp, mkdtemp, readdir, rm, appendFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { startPostgres, runBinary, sourceDir } from '../lib/harness.mjs';

let server;
let db;

before(async () => {
  server = await startPostgres();
  db = new pg.Client({ connectionString: server.url });
  await db.connect();
});

after(async () => {
  await db?.end();
  await server?.close();
});

const env = () => ({ RENLAYER_DATABASE_URL: server.url, RENLAYER_MIGRATIONS_DIR: path.join(sourceDir, 'migrations') });

async function migrationFiles() {
  return (await readdir(path.join(sourceDir, 'migrations'))).filter((f) => /^\d{4}_.*\.sql$/.test(f)).sort();
}

test('two concurrent runs apply each migration exactly once', async () => {
  const [a, b] = await Promise.all([runBinary('api', ['migrate'], env()), runBinary('api', ['migrate'], env())]);
  assert.equal(a.code, 0, a.stderr);
  assert.equal(b.code, 0, b.stderr);
  const files = await migrationFiles();
  const { rows } = await db.query('SELECT version, name FROM renlayer.schema_migrations ORDER BY version');
  assert.deepEqual(rows.map((r) => r.name), files);
  // one run applied everything, the other found it done
  const applied = [a, b].map((r) => JSON.parse(r.stderr.trim().split('\n').pop()).applied).sort();
  assert.deepEqual(applied, [0, files.length]);
});

test('a second run changes nothing', async () => {
  const before = await db.query("SELECT count(*)::int AS n FROM pg_tables WHERE schemaname = 'renlayer'");
  const r = await runBinary('api', ['migrate'], env());
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /"applied":0/);
  const afterRun = await db.query("SELECT count(*)::int AS n FROM pg_tables WHERE schemaname = 'renlayer'");
  assert.equal(afterRun.rows[0].n, before.rows[0].n);
  assert.ok(afterRun.rows[0].n > 20, 'the schema has its tables');
});

test('an applied migration that was edited is refused', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'renlayer-mig-'));
  try {
    await cp(path.join(sourceDir, 'migrations'), dir, { recursive: true });
    const first = (await migrationFiles())[0];
    await appendFile(path.join(dir, first), '\n-- edited\n');
    const r = await runBinary('api', ['migrate'], { ...env(), RENLAYER_MIGRATIONS_DIR: dir });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /was changed after it was applied/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a failing migration leaves nothing of itself behind', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'renlayer-mig-'));
  try {
    await cp(path.join(sourceDir, 'migrations'), dir, { recursive: true });
    await appendFile(path.join(dir, '9998_good_then_bad.sql'),
      'CREATE TABLE renlayer.half_done (id int);\nSELECT no_such_function();\n');
    const r = await runBinary('api', ['migrate'], { ...env(), RENLAYER_MIGRATIONS_DIR: dir });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /9998_good_then_bad\.sql/);
    const t = await db.query("SELECT to_regclass('renlayer.half_done') AS t");
    assert.equal(t.rows[0].t, null);
    const v = await db.query('SELECT count(*)::int AS n FROM renlayer.schema_migrations WHERE version = 9998');
    assert.equal(v.rows[0].n, 0);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a missing database URL is a clear configuration error', async () => {
  const r = await runBinary('api', ['migrate'], { RENLAYER_DATABASE_URL: '', RENLAYER_MIGRATIONS_DIR: '/nonexistent' });
  assert.equal(r.code, 2);
  assert.match(r.stderr, /RENLAYER_DATABASE_URL: is required/);
});
