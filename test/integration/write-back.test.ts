// Query sources synced both ways: a target row built by an outer join, one folded from many rows into JSONB, and rows
// of two tables sharing one target (each job its slice) are written back to their old tables while the application
// writes both paths. Traffic moves to 100 %, then the migration is aborted at its riskiest moment — the new path has
// taken writes the old tables know only through the write back — and the old tables keep every one of them.
import { Pool } from 'pg';
import { ensureTidemarkSchema } from '../../src/db/bootstrap';
import type { RunRef } from '../../src/db/fence';
import { resolveMapping } from '../../src/phases/copy/mapping';
import { reverseTriggerDdl } from '../../src/phases/copy/sql';
import { loadPlan } from '../../src/plan/load';
import { exceptBothWays, flagPercent, tableExists } from '../helpers/db-assert';
import { eventually, Harness, StopWaiting } from '../helpers/env';
import { writePlan } from '../helpers/plans';
import { startWorkload, type Op, type Workload } from '../helpers/writers';

const h = new Harness();
beforeAll(() => h.start());
afterAll(() => h.stop());

const pick = (rnd: () => number, n: number) => 1 + Math.floor(rnd() * n);
const ops = (w: Workload) => w.stats.inserts + w.stats.updates + w.stats.deletes;

const ACCOUNTS = `SELECT u.id, u.name, p.bio FROM users u LEFT JOIN profiles p ON p.user_id = u.id`;
const SETTINGS = `SELECT event_id AS id, jsonb_object_agg(key, value) AS settings FROM event_settings GROUP BY event_id`;
const ITEMS = `SELECT 'request' AS kind, id, body FROM requests UNION ALL SELECT 'notification', id, body FROM notifications`;
const OLD_TABLES = ['users', 'profiles', 'event_settings', 'requests', 'notifications'];

const oldPath: Op[] = [
  async (p: Pool, rnd, s) => {
    const id = pick(rnd, 2000);
    if (rnd() < 0.5)
      await p.query(`INSERT INTO profiles SELECT id, 'late bio' FROM users WHERE id = $1 ON CONFLICT DO NOTHING`, [id]);
    else await p.query(`DELETE FROM profiles WHERE user_id = $1`, [id]);
    s.updates++;
  },
  async (p: Pool, rnd, s) => {
    await p.query(`UPDATE users SET name = $2 WHERE id = $1`, [pick(rnd, 2000), `old ${rnd()}`]);
    s.updates++;
  },
  async (p: Pool, rnd, s) => {
    const e = pick(rnd, 1000);
    await p.query(
      `INSERT INTO event_settings VALUES ($1, $2, $3) ON CONFLICT (event_id, key) DO UPDATE SET value = EXCLUDED.value`,
      [e, rnd() < 0.5 ? 'theme' : 'tz', `old ${rnd()}`],
    );
    s.updates++;
  },
  async (p: Pool, rnd, s) => {
    const table = rnd() < 0.5 ? 'requests' : 'notifications';
    await p.query(`UPDATE ${table} SET body = $2 WHERE id = $1`, [pick(rnd, 1500), `old ${rnd()}`]);
    s.updates++;
  },
];

/** The application on the new path: every kind of write on each new table. */
function newPath(): Op[] {
  let next = 500_000;
  return [
    async (p: Pool, rnd, s) => {
      await p.query(`INSERT INTO accounts VALUES ($1, $2, $3)`, [next++, `new ${rnd()}`, rnd() < 0.5 ? null : 'bio']);
      s.inserts++;
    },
    async (p: Pool, rnd, s) => {
      // The optional side appears, changes and disappears through the bio.
      await p.query(`UPDATE accounts SET name = $2, bio = $3 WHERE id = $1`, [
        pick(rnd, 2000),
        `new ${rnd()}`,
        rnd() < 0.4 ? null : `new bio ${rnd()}`,
      ]);
      s.updates++;
    },
    async (p: Pool, rnd, s) => {
      await p.query(`DELETE FROM accounts WHERE id = $1`, [pick(rnd, 2000)]);
      s.deletes++;
    },
    async (p: Pool, rnd, s) => {
      // Keys of the folded rows come and go: lang removed, tz set, theme changed.
      await p.query(
        `UPDATE event_config SET settings = (settings - 'lang') || jsonb_build_object('tz', $2::text, 'theme', $3::text) WHERE id = $1`,
        [pick(rnd, 1000), `tz ${rnd()}`, `theme ${rnd()}`],
      );
      s.updates++;
    },
    async (p: Pool, rnd, s) => {
      const kind = rnd() < 0.5 ? 'request' : 'notification';
      await p.query(`INSERT INTO items (kind, legacy_id, body) VALUES ($1, $2, 'new')`, [kind, next++]);
      await p.query(`UPDATE items SET body = $3 WHERE kind = $1 AND legacy_id = $2`, [
        kind,
        pick(rnd, 1500),
        `new ${rnd()}`,
      ]);
      await p.query(`DELETE FROM items WHERE kind = $1 AND legacy_id = $2`, [kind, pick(rnd, 1500)]);
      s.inserts++;
    },
  ];
}

test('query sources written back: abort after cut-over with writes on both paths keeps every write in the old tables', async () => {
  const db = await h.db('writeback');
  await db.query(`
    CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL);
    CREATE TABLE profiles (user_id bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE, bio text NOT NULL);
    INSERT INTO users SELECT g, 'user ' || g FROM generate_series(1, 2000) g;
    INSERT INTO profiles SELECT g, 'bio ' || g FROM generate_series(1, 2000) g WHERE g % 3 <> 0;
    CREATE TABLE event_settings (event_id bigint NOT NULL, key text NOT NULL, value text NOT NULL, PRIMARY KEY (event_id, key));
    INSERT INTO event_settings SELECT e, k, 'v' || e FROM generate_series(1, 1000) e, unnest(ARRAY['theme', 'lang']) k;
    CREATE TABLE requests (id bigint PRIMARY KEY, body text NOT NULL);
    CREATE TABLE notifications (id bigint PRIMARY KEY, body text NOT NULL);
    INSERT INTO requests SELECT g, 'request ' || g FROM generate_series(1, 1500) g;
    INSERT INTO notifications SELECT g, 'notification ' || g FROM generate_series(1, 1500) g;`);
  const schemaBefore = await db.query(
    `SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2`,
  );
  const itemJob = (name: string, kind: string) => ({
    name,
    from: name,
    to: 'items',
    key: { source: 'id', target: 'legacy_id' },
    columns: { body: 'body' },
    slice: { kind: `'${kind}'` },
    sync: 'bidirectional',
  });
  const plan = loadPlan(
    writePlan(
      {
        name: 'write-back',
        database: { urlEnv: db.urlEnv },
        backup: { enabled: false },
        schema: [{ id: '001', up: 'up.sql', down: 'down.sql' }],
        copy: [
          {
            name: 'accounts',
            query: ACCOUNTS,
            to: 'accounts',
            key: 'id',
            columns: { id: 'id', name: 'name', bio: 'bio' },
            sync: 'bidirectional',
            syncFrom: [
              { table: 'users', key: 'id' },
              { table: 'profiles', key: 'user_id' },
            ],
            writeBack: [
              { table: 'users', key: 'id', columns: { id: 'id', name: 'name' } },
              { table: 'profiles', key: 'user_id', columns: { user_id: 'id', bio: 'bio' }, where: 'bio IS NOT NULL' },
            ],
          },
          {
            name: 'settings',
            query: SETTINGS,
            to: 'event_config',
            key: 'id',
            columns: { id: 'id', settings: 'settings' },
            sync: 'bidirectional',
            syncFrom: [{ table: 'event_settings', key: 'event_id' }],
            writeBack: [
              {
                table: 'event_settings',
                key: ['event_id', 'key'],
                columns: { event_id: 't.id', key: 'u.key', value: 'u.value' },
                owner: { event_id: 't.id' },
                unfold: 'jsonb_each_text(t.settings) AS u(key, value)',
              },
            ],
          },
          itemJob('requests', 'request'),
          itemJob('notifications', 'notification'),
        ],
        validate: ['accounts', 'settings', 'requests', 'notifications'].flatMap((j) => [
          { rowCount: { copy: j } },
          { checksum: { copy: j } },
        ]),
        traffic: {
          flag: 'use_new_tables',
          stages: [
            { percent: 50, soak: '1s' },
            { percent: 100, soak: '1h' },
          ],
        },
      },
      {
        'up.sql': `CREATE TABLE accounts (id bigint PRIMARY KEY, name text NOT NULL, bio text);
          CREATE TABLE event_config (id bigint PRIMARY KEY, settings jsonb NOT NULL);
          CREATE TABLE items (id bigserial PRIMARY KEY, kind text NOT NULL, legacy_id bigint NOT NULL, body text NOT NULL, UNIQUE (kind, legacy_id));`,
        'down.sql': 'DROP TABLE accounts, event_config, items;',
      },
    ),
  );

  const old = startWorkload(db.url, oldPath, { concurrency: 2, opsPerSecond: 150 });
  let fresh: Workload | undefined;
  const { workflowId } = await h.client.start(plan, { autoApprove: true });
  const live = async () => {
    const s = await h.client.status(workflowId);
    if (['completed', 'rolled-back', 'failed'].includes(s.state))
      throw new StopWaiting(`migration ${s.state}: ${s.error}`);
    return s;
  };
  try {
    await eventually(async () => ((await live()).traffic?.percent ?? 0) > 0, 'traffic on the new path');
    fresh = startWorkload(db.url, newPath(), { concurrency: 2, opsPerSecond: 150, seed: 11 });
    await eventually(async () => (await live()).traffic?.percent === 100, 'traffic at 100%');
    await eventually(async () => ops(fresh!) >= 150, 'writes on the new path');
  } finally {
    await fresh?.stop();
    await old.stop();
  }
  expect(ops(old)).toBeGreaterThan(0);

  // One more of each on the new path, to find by name after the rollback.
  await db.query(`INSERT INTO accounts VALUES (900001, 'made on the new path', 'its bio')`);
  await db.query(`UPDATE event_config SET settings = '{"only": "this"}' WHERE id = 7`);
  await db.query(`INSERT INTO items (kind, legacy_id, body) VALUES ('notification', 900002, 'made on the new path')`);

  // Both sides agree through the mappings, whichever path each write took.
  expect(await exceptBothWays(db, ACCOUNTS, 'SELECT id, name, bio FROM accounts')).toEqual({ onlyInA: 0, onlyInB: 0 });
  expect(await exceptBothWays(db, SETTINGS, 'SELECT id, settings FROM event_config')).toEqual({
    onlyInA: 0,
    onlyInB: 0,
  });
  expect(await exceptBothWays(db, ITEMS, 'SELECT kind, legacy_id, body FROM items')).toEqual({
    onlyInA: 0,
    onlyInB: 0,
  });
  const snapshot = async () => Promise.all(OLD_TABLES.map((t) => db.query(`SELECT * FROM ${t} ORDER BY 1, 2`)));
  const before = await snapshot();

  await h.client.abort(workflowId, { reason: 'abort after cut-over' });
  const final = await h.client.waitForEnd(workflowId);
  expect(final.state).toBe('rolled-back');
  expect(final.compensations.every((c) => c.status === 'done')).toBe(true);

  // Every write is in the old tables, which the rollback left as the write back made them; the new ones are gone.
  expect(await snapshot()).toEqual(before);
  expect(
    await db.query(`SELECT u.name, p.bio FROM users u JOIN profiles p ON p.user_id = u.id WHERE u.id = 900001`),
  ).toEqual([{ name: 'made on the new path', bio: 'its bio' }]);
  expect(await db.query(`SELECT key, value FROM event_settings WHERE event_id = 7`)).toEqual([
    { key: 'only', value: 'this' },
  ]);
  expect(await db.query(`SELECT body FROM notifications WHERE id = 900002`)).toEqual([
    { body: 'made on the new path' },
  ]);
  for (const t of ['accounts', 'event_config', 'items']) expect([t, await tableExists(db, t)]).toEqual([t, false]);
  expect(await flagPercent(db, 'use_new_tables')).toBe(0);
  expect(
    await db.query(
      `SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2`,
    ),
  ).toEqual(schemaBefore);
  // Nothing of the sync is left behind.
  expect(await db.query(`SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgname LIKE 'tidemark%'`)).toEqual(
    [],
  );
});

test('a target row deleted or re-keyed on the new path takes every old row it stood for with it, `where` or not', async () => {
  const db = await h.db('writeback_where');
  // Profiles may have no bio: the join gives such a customer a NULL bio, as it does one without a profile.
  await db.query(`
    CREATE TABLE customer (id bigint PRIMARY KEY, name text NOT NULL);
    CREATE TABLE profile (customer_id bigint PRIMARY KEY REFERENCES customer (id), bio text);
    CREATE TABLE accounts (id bigint PRIMARY KEY, name text NOT NULL, bio text);
    INSERT INTO customer VALUES (1, 'a'), (2, 'b'), (3, 'c');
    INSERT INTO profile VALUES (1, NULL), (2, NULL), (3, 'bio');
    INSERT INTO accounts SELECT c.id, c.name, p.bio FROM customer c LEFT JOIN profile p ON p.customer_id = c.id;`);
  const plan = loadPlan(
    writePlan({
      name: 'write-back-where',
      database: { urlEnv: db.urlEnv },
      backup: { enabled: false },
      copy: [
        {
          name: 'accounts',
          query: 'SELECT c.id, c.name, p.bio FROM customer c LEFT JOIN profile p ON p.customer_id = c.id',
          to: 'accounts',
          key: 'id',
          columns: { id: 'id', name: 'name', bio: 'bio' },
          sync: 'bidirectional',
          syncFrom: [
            { table: 'customer', key: 'id' },
            { table: 'profile', key: 'customer_id' },
          ],
          writeBack: [
            { table: 'customer', key: 'id', columns: { id: 'id', name: 'name' } },
            {
              table: 'profile',
              key: 'customer_id',
              columns: { customer_id: 'id', bio: 'bio' },
              where: 'bio IS NOT NULL',
            },
          ],
        },
      ],
    }),
  );
  const pool = new Pool({ connectionString: db.url });
  try {
    await ensureTidemarkSchema(pool);
    const m = await resolveMapping(pool, plan.copy[0], { runKey: 'write-back-where' } as RunRef);
    for (const stmt of reverseTriggerDdl(m)) await pool.query(stmt);

    // A change that keeps the row keeps the old row the mapping cannot show (a profile without a bio).
    await db.query(`UPDATE accounts SET name = 'a2' WHERE id = 1`);
    expect(await db.query(`SELECT customer_id::int AS id, bio FROM profile ORDER BY 1`)).toEqual([
      { id: 1, bio: null },
      { id: 2, bio: null },
      { id: 3, bio: 'bio' },
    ]);
    // Gone from the new path: its customer and every profile it stood for go (the delete failed on the profile's
    // foreign key before), and so for the old key of a row whose key changed.
    await db.query(`DELETE FROM accounts WHERE id = 2`);
    await db.query(`UPDATE accounts SET id = 10 WHERE id = 1`);
    expect(await db.query(`SELECT id::int AS id, name FROM customer ORDER BY 1`)).toEqual([
      { id: 3, name: 'c' },
      { id: 10, name: 'a2' },
    ]);
    expect(await db.query(`SELECT customer_id::int AS id, bio FROM profile ORDER BY 1`)).toEqual([
      { id: 3, bio: 'bio' },
    ]);
  } finally {
    await pool.end();
  }
});
