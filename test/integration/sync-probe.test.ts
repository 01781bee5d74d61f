// The reverse path is tried before traffic moves: a mapping that cannot be written back fails at preflight (nothing
// changed), in `plan check --rehearse` (a write through each trigger, rolled back), or at the latest when the copy
// phase installs its triggers — never once the application's writes go to the new path.
import { Client, Pool } from 'pg';
import { rolledBack } from '../../src/db/tx';
import { F } from '../../src/migration/failures';
import { toFailure } from '../../src/phases/activity-kit';
import { probeSync } from '../../src/phases/copy/probe';
import { loadPlan } from '../../src/plan/load';
import { runCli } from '../helpers/cli';
import { eventually, Harness, type TestDb } from '../helpers/env';
import { writePlan } from '../helpers/plans';

const h = new Harness();
beforeAll(() => h.start());
afterAll(() => h.stop());

async function ordersDb(label: string): Promise<TestDb> {
  const db = await h.db(label);
  await db.query(`CREATE TABLE orders (id bigint PRIMARY KEY, amount_cents bigint NOT NULL CHECK (amount_cents > 0),
                    currency text NOT NULL, note text);
                  INSERT INTO orders SELECT g, g * 100, 'EUR', NULL FROM generate_series(1, 50) g;`);
  return db;
}

function ordersPlan(db: TestDb, columns: Record<string, string>, reverse: Record<string, string>, up: string) {
  return writePlan(
    {
      name: `orders-${db.name.replace(/_/g, '-')}`,
      database: { urlEnv: db.urlEnv },
      backup: { enabled: false },
      schema: [{ id: '001_orders_v2', up: 'up.sql', down: 'down.sql' }],
      copy: [{ name: 'orders', from: 'orders', to: 'orders_v2', key: 'id', columns, reverse, sync: 'bidirectional' }],
      traffic: { flag: 'use_orders_v2', stages: [{ percent: 100, soak: '1s' }] },
    },
    { 'up.sql': up, 'down.sql': 'DROP TABLE orders_v2;' },
  );
}

test('a NOT NULL column of the old table that reverse leaves empty is refused at preflight: nothing changes', async () => {
  const db = await ordersDb('probenotnull');
  const file = ordersPlan(
    db,
    { id: 'id', amount: 'amount_cents / 100.0' },
    { amount_cents: '(amount * 100)::bigint' },
    'CREATE TABLE orders_v2 (id bigint PRIMARY KEY, amount numeric NOT NULL);',
  );
  const { workflowId } = await h.client.start(loadPlan(file), { autoApprove: true });
  const final = await h.client.waitForEnd(workflowId);
  expect(final.state).toBe('rolled-back');
  expect(final.error).toContain(
    'copy orders: mapping: sync: bidirectional writes the new path\'s rows back to orders but leaves its NOT NULL column(s) "currency" empty',
  );
  expect(final.events.at(-1)?.message).toBe('ended: nothing was changed');
});

test('plan check --rehearse tries the mapping: a target column that does not exist fails it', async () => {
  const db = await ordersDb('probemissing');
  const file = ordersPlan(
    db,
    { id: 'id', amount: 'amount_cents / 100.0', currency: 'currency', memo: 'note' },
    { amount_cents: '(amount * 100)::bigint' },
    'CREATE TABLE orders_v2 (id bigint PRIMARY KEY, amount numeric NOT NULL, currency text NOT NULL);',
  );
  const r = await runCli(['plan', 'check', file, '--rehearse'], { [db.urlEnv]: db.url });
  expect(r.code).toBe(1);
  expect(r.stdout).toContain('fail copy orders: mapping: target orders_v2 has no column "memo"');
  expect(r.stdout).toMatch(
    /sync of copy job orders: FAILED — resolving the mapping fails: copy job "orders": target orders_v2 has no column "memo"/,
  );
  expect(r.stdout).toContain('database unchanged by the rehearsal: yes');
});

test('a reverse mapping that breaks a constraint of the old table fails in the rehearsal and before the copy', async () => {
  const db = await ordersDb('probecheck');
  // Rounds to whole euros: 0.50 € comes back as 0 cents, which the old table's CHECK refuses.
  const file = ordersPlan(
    db,
    { id: 'id', amount: 'amount_cents / 100', currency: 'currency' },
    { amount_cents: '(amount * 0)::bigint' },
    'CREATE TABLE orders_v2 (id bigint PRIMARY KEY, amount bigint NOT NULL, currency text NOT NULL);',
  );
  const rehearsal = await runCli(['plan', 'check', file, '--rehearse'], { [db.urlEnv]: db.url });
  expect(rehearsal.code).toBe(1);
  expect(rehearsal.stdout).toMatch(
    /sync of copy job orders: FAILED — an update on the new table \(reverse sync\) fails: new row for relation "orders" violates check constraint/,
  );
  const { workflowId } = await h.client.start(loadPlan(file), { autoApprove: true });
  const final = await h.client.waitForEnd(workflowId);
  expect(final.state).toBe('rolled-back');
  expect(final.phases.find((p) => p.name === 'copy')?.status).toBe('failed');
  expect(final.error).toMatch(
    /copy job "orders": an update on the new table \(reverse sync\) fails: .*check constraint/,
  );
  expect(final.copy).toEqual([]);
});

test("a lock the application holds says nothing about the mapping: the probe's attempt fails to be retried, not the plan", async () => {
  const db = await ordersDb('probelock');
  await db.query(
    `CREATE TABLE orders_v2 (id bigint PRIMARY KEY, amount_cents bigint NOT NULL, currency text NOT NULL)`,
  );
  const plan = loadPlan(
    ordersPlan(db, { id: 'id', amount_cents: 'amount_cents', currency: 'currency' }, {}, 'SELECT 1'),
  );
  const pool = new Pool({ connectionString: db.url });
  const app = new Client({ connectionString: db.url });
  await app.connect();
  try {
    // The application holds the first order while the probe writes through it.
    await app.query(`BEGIN; SELECT * FROM orders WHERE id = 1 FOR UPDATE`);
    const c = await pool.connect();
    try {
      await expect(
        rolledBack(c, { lockTimeoutMs: 200 }, (tx) => probeSync(tx, plan.copy[0], true)),
      ).rejects.toMatchObject({ code: '55P03' });
    } finally {
      c.release();
    }
    await app.query('ROLLBACK');
    // Once it lets go, the same probe passes.
    const c2 = await pool.connect();
    try {
      const probe = await rolledBack(c2, { lockTimeoutMs: 2000 }, (tx) => probeSync(tx, plan.copy[0], true));
      expect(probe).toMatchObject({ ok: true });
    } finally {
      c2.release();
    }
  } finally {
    await app.end();
    await pool.end();
  }
});

test('a reverse that does not give the old rows back is named before traffic moves: in the rehearsal and when the copy starts', async () => {
  const db = await ordersDb('probelossy');
  // Odd orders carry 3 cents more: a target amount with one decimal keeps 0.03 € as 0.0 €, and reverse, although it
  // looks right, writes back whole 10 cents. Every application write of such an order on the new path would change it.
  await db.query(`UPDATE orders SET amount_cents = amount_cents + 3 WHERE id % 2 = 1`);
  const plan = (scale: number) =>
    ordersPlan(
      db,
      { id: 'id', amount: 'amount_cents / 100.0', currency: 'currency' },
      { amount_cents: '(amount * 100)::bigint' },
      `CREATE TABLE orders_v2 (id bigint PRIMARY KEY, amount numeric(12,${scale}) NOT NULL, currency text NOT NULL);`,
    );
  const env = { [db.urlEnv]: db.url };
  const lossy = await runCli(['plan', 'check', plan(1), '--rehearse'], env);
  expect(lossy.code).toBe(0);
  expect(lossy.stdout).toMatch(
    /WARNING: written back, 25 of 50 sampled row\(s\) of "public"."orders" would change: "amount_cents" on 25 \(key \d*[13579]: "\d+03" comes back "\d+00"\)/,
  );
  // A warning, so the plan may run; --strict refuses it.
  expect((await runCli(['plan', 'check', plan(1), '--rehearse', '--strict'], env)).code).toBe(1);
  // Two decimals keep every cent: no warning.
  const exact = await runCli(['plan', 'check', plan(2), '--rehearse'], env);
  expect(exact.stdout).toContain('sync of copy job orders: ok — writes on either table reach the other');
  expect(exact.stdout).not.toContain('WARNING');

  const { workflowId } = await h.client.start(loadPlan(plan(1)), { autoApprove: true });
  const final = await h.client.waitForEnd(workflowId);
  expect(final.state).toBe('completed');
  expect(final.events.map((e) => e.message)).toContainEqual(
    expect.stringMatching(/^copy orders: WARNING: written back, 25 of 50 sampled row\(s\) .* "amount_cents" on 25/),
  );
});

test('across two databases the same round trip is tried: in the rehearsal of a blue-green plan', async () => {
  const blue = await ordersDb('probelossyblue');
  const green = await h.db('probelossygreen');
  await blue.query(`UPDATE orders SET amount_cents = amount_cents + 3 WHERE id % 2 = 1`);
  const plan = (scale: number) =>
    writePlan(
      {
        name: `orders-across-${scale}`,
        database: { urlEnv: blue.urlEnv },
        target: { urlEnv: green.urlEnv },
        backup: { enabled: false },
        schema: [{ id: '001_orders_v2', up: 'up.sql', down: 'down.sql' }],
        copy: [
          {
            name: 'orders',
            from: 'orders',
            to: 'orders_v2',
            key: 'id',
            columns: { id: 'id', amount: 'amount_cents / 100.0', currency: 'currency' },
            reverse: { amount_cents: '(amount * 100)::bigint' },
            sync: 'bidirectional',
          },
        ],
        traffic: { flag: 'use_orders_v2', stages: [{ percent: 100, soak: '1s' }] },
        cleanup: {},
      },
      {
        'up.sql': `CREATE TABLE orders_v2 (id bigint PRIMARY KEY, amount numeric(12,${scale}) NOT NULL, currency text NOT NULL);`,
        'down.sql': 'DROP TABLE orders_v2;',
      },
    );
  const env = { [blue.urlEnv]: blue.url, [green.urlEnv]: green.url };
  const lossy = await runCli(['plan', 'check', plan(1), '--rehearse'], env);
  expect(lossy.stdout).toMatch(
    /sync of copy job orders: ok — a sample of rows mapped to the target and back\n\s+WARNING: written back, 25 of 50 sampled row\(s\) of "public"."orders" would change: "amount_cents" on 25 \(key \d*[13579]: "\d+03" comes back "\d+00"\)/,
  );
  const exact = await runCli(['plan', 'check', plan(2), '--rehearse'], env);
  expect(exact.stdout).toContain('sync of copy job orders: ok — a sample of rows mapped to the target and back');
  expect(exact.stdout).not.toContain('WARNING');
  expect(exact.stdout).toContain('database unchanged by the rehearsal: yes');
});

test('one catalog row changed by two sessions at once (two attempts of a step): the second fails to be retried', async () => {
  const db = await h.db('catalograce');
  await db.query(`CREATE FUNCTION capture_fn() RETURNS int LANGUAGE sql AS 'SELECT 1'`);
  const replace = (n: number) => `CREATE OR REPLACE FUNCTION capture_fn() RETURNS int LANGUAGE sql AS 'SELECT ${n}'`;
  const [first, second] = [new Client({ connectionString: db.url }), new Client({ connectionString: db.url })];
  await first.connect();
  await second.connect();
  try {
    await first.query('BEGIN');
    await first.query(replace(2));
    const pid = (await second.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0].pid;
    const racing = second.query(replace(3)).then(
      () => undefined,
      (e: unknown) => e,
    );
    await eventually(async () => {
      const r = await db.query<{ w: string | null }>(
        `SELECT wait_event_type AS w FROM pg_stat_activity WHERE pid = $1`,
        [pid],
      );
      return r[0]?.w === 'Lock';
    }, 'the second session to wait for the first');
    await first.query('COMMIT');
    const e = await racing;
    expect(e).toMatchObject({ code: 'XX000', message: 'tuple concurrently updated' });
    expect(toFailure(e, 'switching the capture')).toMatchObject({ type: F.RetryableDbError });
  } finally {
    await first.end();
    await second.end();
  }
});
