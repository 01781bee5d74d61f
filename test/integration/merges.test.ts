// Keys and merges under live writes: a composite key, a key renamed in the target beside new surrogate ids, and
// several sources into one target — a join with an outer join's optional side, rows of two tables into one (each job
// its slice), rows folded into a JSONB column. Writers change every source throughout the copy and validation;
// afterwards source and target are identical through the mapping (EXCEPT both ways) and validation passed.
import type { Pool } from 'pg';
import { loadPlan } from '../../src/plan/load';
import { exceptBothWays } from '../helpers/db-assert';
import { Harness, type TestDb } from '../helpers/env';
import { writePlan } from '../helpers/plans';
import { startWorkload, type Op } from '../helpers/writers';

const h = new Harness();
beforeAll(() => h.start());
afterAll(() => h.stop());

/** Runs the plan with the writers working from before the copy to after the migration ended. */
async function runUnderWrites(db: TestDb, doc: Record<string, unknown>, files: Record<string, string>, ops: Op[]) {
  const plan = loadPlan(
    writePlan({ database: { urlEnv: db.urlEnv }, backup: { enabled: false }, approvals: ['copy'], ...doc }, files),
  );
  const writers = startWorkload(db.url, ops, { opsPerSecond: 200 });
  try {
    const { workflowId } = await h.client.start(plan, { autoApprove: false });
    await h.approvalPending(workflowId, 'copy');
    await h.client.throttle(workflowId, { batchSize: 200, delayMs: 20 });
    await h.client.approve(workflowId);
    const final = await h.client.waitForEnd(workflowId);
    const stats = await writers.stop();
    return { final, stats };
  } finally {
    await writers.stop().catch(() => undefined);
  }
}

const pick = (rnd: () => number, n: number) => 1 + Math.floor(rnd() * n);

test('a composite key: (tenant_id, id), with key changes, copied and kept in step both ways', async () => {
  const db = await h.db('compositekey');
  await db.query(`CREATE TABLE accounts (tenant_id int NOT NULL, id bigint NOT NULL, name text NOT NULL, PRIMARY KEY (tenant_id, id));
    INSERT INTO accounts SELECT 1 + g % 7, g, 'account ' || g FROM generate_series(1, 6000) g;`);
  let next = 100_000;
  const ops: Op[] = [
    async (p: Pool, rnd, s) => {
      await p.query(`INSERT INTO accounts VALUES ($1, $2, 'new')`, [pick(rnd, 7), next++]);
      s.inserts++;
    },
    async (p: Pool, rnd, s) => {
      await p.query(`UPDATE accounts SET name = $2 WHERE id = $1`, [pick(rnd, 6000), `renamed ${rnd()}`]);
      s.updates++;
    },
    async (p: Pool, rnd, s) => {
      // Moves an account to another tenant: a change of the key's first column.
      await p.query(`UPDATE accounts SET tenant_id = 8 + tenant_id WHERE id = $1 AND tenant_id < 8`, [pick(rnd, 6000)]);
      s.keyChanges++;
    },
    async (p: Pool, rnd, s) => {
      await p.query(`DELETE FROM accounts WHERE id = $1`, [pick(rnd, 6000)]);
      s.deletes++;
    },
  ];
  const { final, stats } = await runUnderWrites(
    db,
    {
      name: 'composite-accounts',
      schema: [{ id: '001', up: 'up.sql', down: 'down.sql' }],
      copy: [
        {
          name: 'accounts',
          from: 'accounts',
          to: 'accounts_v2',
          key: ['tenant_id', 'id'],
          columns: { tenant_id: 'tenant_id', id: 'id', display_name: 'upper(name)' },
          reverse: { name: 'lower(display_name)' },
          sync: 'bidirectional',
        },
      ],
    },
    {
      'up.sql': `CREATE TABLE accounts_v2 (tenant_id int NOT NULL, id bigint NOT NULL, display_name text NOT NULL, PRIMARY KEY (tenant_id, id));`,
      'down.sql': 'DROP TABLE accounts_v2;',
    },
    ops,
  );
  expect(final.state).toBe('completed');
  expect(final.validation?.ok).toBe(true);
  expect(stats.keyChanges).toBeGreaterThan(5);
  expect(
    await exceptBothWays(
      db,
      'SELECT tenant_id, id, upper(name) FROM accounts',
      'SELECT tenant_id, id, display_name FROM accounts_v2',
    ),
  ).toEqual({ onlyInA: 0, onlyInB: 0 });
  // The new path writes back through the composite key.
  await db.query(
    `UPDATE accounts_v2 SET display_name = 'WRITTEN ON V2' WHERE (tenant_id, id) = (SELECT tenant_id, id FROM accounts_v2 LIMIT 1)`,
  );
  await db.query(
    `DELETE FROM accounts_v2 WHERE (tenant_id, id) = (SELECT tenant_id, id FROM accounts_v2 ORDER BY id DESC LIMIT 1)`,
  );
  expect(
    await exceptBothWays(
      db,
      'SELECT tenant_id, id, upper(name) FROM accounts',
      'SELECT tenant_id, id, display_name FROM accounts_v2',
    ),
  ).toEqual({ onlyInA: 0, onlyInB: 0 });
});

test('a key renamed in the target, whose rows get new uuid ids: the legacy key carries the sync, the ids stay put', async () => {
  const db = await h.db('renamedkey');
  await db.query(`CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL);
    INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 5002) g;`);
  // The workload writes ids up to 5000; 5001 and 5002 are left for the checks at the end.
  let next = 100_000;
  const ops: Op[] = [
    async (p: Pool, _rnd, s) => {
      await p.query(`INSERT INTO customers VALUES ($1, 'new')`, [next++]);
      s.inserts++;
    },
    async (p: Pool, rnd, s) => {
      await p.query(`UPDATE customers SET name = $2 WHERE id = $1`, [pick(rnd, 5000), `renamed ${rnd()}`]);
      s.updates++;
    },
    async (p: Pool, rnd, s) => {
      await p.query(`DELETE FROM customers WHERE id = $1`, [pick(rnd, 5000)]);
      s.deletes++;
    },
  ];
  const { final } = await runUnderWrites(
    db,
    {
      name: 'renamed-customers',
      schema: [{ id: '001', up: 'up.sql', down: 'down.sql' }],
      copy: [
        {
          name: 'customers',
          from: 'customers',
          to: 'customers_v2',
          key: { source: 'id', target: 'legacy_id' },
          columns: { name: 'name' },
          sync: 'bidirectional',
        },
      ],
    },
    {
      'up.sql': `CREATE TABLE customers_v2 (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), legacy_id bigint NOT NULL UNIQUE, name text NOT NULL);`,
      'down.sql': 'DROP TABLE customers_v2;',
    },
    ops,
  );
  expect(final.state).toBe('completed');
  expect(final.validation?.ok).toBe(true);
  expect(
    await exceptBothWays(db, 'SELECT id, name FROM customers', 'SELECT legacy_id, name FROM customers_v2'),
  ).toEqual({
    onlyInA: 0,
    onlyInB: 0,
  });
  // The mapping stays queryable, and a write on either side keeps the new row's own id.
  const [before] = await db.query<{ id: string }>(`SELECT id FROM customers_v2 WHERE legacy_id = 5001`);
  await db.query(`UPDATE customers SET name = 'old path' WHERE id = 5001`);
  await db.query(`UPDATE customers_v2 SET name = 'new path' WHERE legacy_id = 5002`);
  expect(await db.query(`SELECT id, name FROM customers_v2 WHERE legacy_id = 5001`)).toEqual([
    { id: before.id, name: 'old path' },
  ]);
  expect(await db.query(`SELECT name FROM customers WHERE id = 5002`)).toEqual([{ name: 'new path' }]);
});

test('merges into one target: a left join, two tables into one (each its slice), rows folded into JSONB', async () => {
  const db = await h.db('merges');
  await db.query(`
    CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL);
    CREATE TABLE profiles (user_id bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE, bio text NOT NULL);
    INSERT INTO users SELECT g, 'user ' || g FROM generate_series(1, 3000) g;
    INSERT INTO profiles SELECT g, 'bio ' || g FROM generate_series(1, 3000) g WHERE g % 3 <> 0;
    CREATE TABLE requests (id bigint PRIMARY KEY, body text NOT NULL);
    CREATE TABLE notifications (id bigint PRIMARY KEY, body text NOT NULL);
    INSERT INTO requests SELECT g, 'request ' || g FROM generate_series(1, 2000) g;
    INSERT INTO notifications SELECT g, 'notification ' || g FROM generate_series(1, 2000) g;
    CREATE TABLE event_settings (event_id bigint NOT NULL, key text NOT NULL, value text NOT NULL, PRIMARY KEY (event_id, key));
    INSERT INTO event_settings SELECT e, k, 'v' || e FROM generate_series(1, 1500) e, unnest(ARRAY['theme', 'lang']) k WHERE e % 4 <> 0;`);
  let next = 100_000;
  const ops: Op[] = [
    async (p: Pool, rnd, s) => {
      // The optional side appears and disappears.
      const id = pick(rnd, 3000);
      if (rnd() < 0.5)
        await p.query(`INSERT INTO profiles SELECT id, 'late bio' FROM users WHERE id = $1 ON CONFLICT DO NOTHING`, [
          id,
        ]);
      else await p.query(`DELETE FROM profiles WHERE user_id = $1`, [id]);
      s.updates++;
    },
    async (p: Pool, rnd, s) => {
      await p.query(`UPDATE users SET name = $2 WHERE id = $1`, [pick(rnd, 3000), `renamed ${rnd()}`]);
      s.updates++;
    },
    async (p: Pool, rnd, s) => {
      await p.query(`DELETE FROM users WHERE id = $1`, [pick(rnd, 3000)]);
      s.deletes++;
    },
    async (p: Pool, rnd, s) => {
      const table = rnd() < 0.5 ? 'requests' : 'notifications';
      await p.query(`INSERT INTO ${table} VALUES ($1, 'new')`, [next++]);
      await p.query(`UPDATE ${table} SET body = $2 WHERE id = $1`, [pick(rnd, 2000), `changed ${rnd()}`]);
      await p.query(`DELETE FROM ${table} WHERE id = $1`, [pick(rnd, 2000)]);
      s.inserts++;
    },
    async (p: Pool, rnd, s) => {
      const e = pick(rnd, 1500);
      await p.query(
        `INSERT INTO event_settings VALUES ($1, $2, $3) ON CONFLICT (event_id, key) DO UPDATE SET value = EXCLUDED.value`,
        [e, rnd() < 0.5 ? 'theme' : 'tz', `w${rnd()}`],
      );
      if (rnd() < 0.3)
        await p.query(`DELETE FROM event_settings WHERE event_id = $1 AND key = 'lang'`, [pick(rnd, 1500)]);
      s.updates++;
    },
  ];
  const accounts = `SELECT u.id, u.name, p.bio FROM users u LEFT JOIN profiles p ON p.user_id = u.id`;
  const settings = `SELECT event_id AS id, jsonb_object_agg(key, value) AS settings FROM event_settings GROUP BY event_id`;
  const { final, stats } = await runUnderWrites(
    db,
    {
      name: 'merges',
      schema: [{ id: '001', up: 'up.sql', down: 'down.sql' }],
      copy: [
        {
          name: 'accounts',
          query: accounts,
          to: 'accounts',
          key: 'id',
          columns: { id: 'id', name: 'name', bio: 'bio' },
          sync: 'forward',
          syncFrom: [
            { table: 'users', key: 'id' },
            { table: 'profiles', key: 'user_id' },
          ],
        },
        {
          name: 'requests',
          from: 'requests',
          to: 'events',
          key: { source: 'id', target: 'legacy_id' },
          columns: { body: 'body' },
          slice: { kind: "'request'" },
        },
        {
          name: 'notifications',
          from: 'notifications',
          to: 'events',
          key: { source: 'id', target: 'legacy_id' },
          columns: { body: 'body' },
          slice: { kind: "'notification'" },
        },
        {
          name: 'settings',
          query: settings,
          to: 'event_config',
          key: 'id',
          columns: { id: 'id', settings: 'settings' },
          sync: 'forward',
          syncFrom: [{ table: 'event_settings', key: 'event_id' }],
        },
      ],
    },
    {
      'up.sql': `CREATE TABLE accounts (id bigint PRIMARY KEY, name text NOT NULL, bio text);
        CREATE TABLE events (id bigserial PRIMARY KEY, kind text NOT NULL, legacy_id bigint NOT NULL, body text NOT NULL, UNIQUE (kind, legacy_id));
        CREATE TABLE event_config (id bigint PRIMARY KEY, settings jsonb NOT NULL);`,
      'down.sql': 'DROP TABLE accounts, events, event_config;',
    },
    ops,
  );
  expect(final.error).toBeNull();
  expect(final.state).toBe('completed');
  // Each job was validated on its own slice: 4 jobs, a row count and a checksum each.
  expect(final.validation?.checks.map((c) => [c.check, c.ok])).toEqual([
    ['rowCount accounts', true],
    ['checksum accounts', true],
    ['rowCount requests', true],
    ['checksum requests', true],
    ['rowCount notifications', true],
    ['checksum notifications', true],
    ['rowCount settings', true],
    ['checksum settings', true],
  ]);
  expect(stats.updates + stats.deletes + stats.inserts).toBeGreaterThan(100);
  expect(await exceptBothWays(db, accounts, 'SELECT id, name, bio FROM accounts')).toEqual({ onlyInA: 0, onlyInB: 0 });
  expect(
    await exceptBothWays(
      db,
      `SELECT 'request', id, body FROM requests UNION ALL SELECT 'notification', id, body FROM notifications`,
      'SELECT kind, legacy_id, body FROM events',
    ),
  ).toEqual({ onlyInA: 0, onlyInB: 0 });
  expect(await exceptBothWays(db, settings, 'SELECT id, settings FROM event_config')).toEqual({
    onlyInA: 0,
    onlyInB: 0,
  });
});
