// The settle pass looks at the keys the sync triggers logged as leaving the source, not at the whole table. Here a
// key-changing UPDATE, in a transaction open across the copy of its row, moves the last row of a composite key (text,
// date) to a new key: its trigger found nothing under the old key in the target (the row's batch had not run), and
// the batch, reading a snapshot without the update, copied the row under the old key. The logged key is how the pass
// finds that row, whatever DateStyle the application writes under, and under a role of its own with no privilege in
// tidemark's schema or on the new table. Once settled, the triggers stop logging and both directions keep syncing.
import { Client } from 'pg';
import { eventOf, eventually, Harness, StopWaiting } from '../helpers/env';
import { slowCopyPlan } from '../helpers/plans';

const h = new Harness();
beforeAll(() => h.start());
afterAll(() => h.stop());
jest.setTimeout(300_000);

const ROWS = 6000;
/** The highest key, ('r2', day 5999): copied by the last batch. */
const LAST = { region: 'r2', day: 5999 };
const MOVED = 105_999;
/** Day `n` as a date. */
const day = (n: number) => `(date '2000-01-01' + ${n})`;

test('a key change in a transaction open across the copy of its row: the logged key settles it; then no more logging', async () => {
  const db = await h.db('settlelog');
  await db.query(`CREATE TABLE orders (region text, day date, note text NOT NULL, PRIMARY KEY (region, day));
    CREATE TABLE orders_v2 (region text, day date, note text NOT NULL, PRIMARY KEY (region, day));
    INSERT INTO orders SELECT 'r' || (i % 3), ${day(0)} + i, 'n' || i FROM generate_series(1, ${ROWS}) i`);
  const plan = slowCopyPlan(db, { name: 'settle-log', table: 'orders', key: ['region', 'day'], sync: 'bidirectional' });
  const logged = async () =>
    (
      await db.query<{ settling: number; removals: number }>(
        `SELECT (SELECT count(*) FROM tidemark.sync_settling)::int AS settling,
                (SELECT count(*) FROM tidemark.sync_removals)::int AS removals`,
      )
    )[0];
  // The application's own role: it may use its table, nothing of tidemark's, and not the new table until it moves
  // there. Its writes to orders reach orders_v2 all the same: the sync functions run as the migration's role.
  const role = `settlelog_app_${process.pid}`;
  await db.query(`DROP ROLE IF EXISTS ${role}; CREATE ROLE ${role} LOGIN;
    GRANT SELECT, INSERT, UPDATE, DELETE ON orders TO ${role}`);
  const appUrl = new URL(db.url);
  appUrl.username = role;
  const app = new Client({ connectionString: appUrl.toString(), application_name: 'app' });
  await app.connect();
  // Day first: the text form of the old key's date would read as another date in the settle pass's session.
  await app.query(`SET DateStyle = 'SQL, DMY'`);
  try {
    const { workflowId } = await h.client.start(plan, { autoApprove: false });
    await h.approvalPending(workflowId, 'copy');
    // Twenty batches at least 300 ms apart: the last one comes seconds after the sync triggers are in place.
    await h.client.throttle(workflowId, { delayMs: 300 });
    await h.client.approve(workflowId);
    await eventually(async () => (await logged()).settling === 1, 'the sync to be installed, logging', 120_000, 20);
    await app.query('BEGIN');
    await app.query(`UPDATE orders SET day = ${day(MOVED)} WHERE region = '${LAST.region}' AND day = ${day(LAST.day)}`);
    const oldKeyInTarget = async () =>
      (await db.query(`SELECT 1 FROM orders_v2 WHERE region = '${LAST.region}' AND day = ${day(LAST.day)}`)).length;
    expect(await oldKeyInTarget()).toBe(0);

    const appPid = (app as unknown as { processID: number }).processID;
    await eventually(
      async () => {
        const s = await h.client.status(workflowId);
        if (['rolled-back', 'failed', 'completed'].includes(s.state))
          throw new StopWaiting(`migration ${s.state}: ${s.error}`);
        if (s.phases.find((p) => p.name === 'copy')?.status === 'completed')
          throw new StopWaiting('the copy phase ended with the update still open');
        return s.copy[0]?.waitingFor?.includes(`pid ${appPid} `);
      },
      'the settle pass to wait for the open transaction',
      240_000,
    );
    // The batch copied the row under its old key, under the uncommitted update.
    expect(await oldKeyInTarget()).toBe(1);
    await app.query('COMMIT');

    await eventOf(h.client, workflowId, /^phase validate completed$/);
    const differ = async () =>
      (
        await db.query<{ n: number }>(
          `SELECT (SELECT count(*) FROM (TABLE orders EXCEPT TABLE orders_v2) a)::int
                + (SELECT count(*) FROM (TABLE orders_v2 EXCEPT TABLE orders) b)::int AS n`,
        )
      )[0].n;
    expect(await oldKeyInTarget()).toBe(0);
    expect(await differ()).toBe(0);
    const events = (await h.client.status(workflowId)).events.map((e) => e.message);
    expect(events).toContain(
      'copy orders: settled, 1 row(s) that left the source while it was copied removed (1 logged key(s) looked at)',
    );

    // Settled: the triggers no longer log, and the list is gone; both directions still sync.
    expect(await logged()).toEqual({ settling: 0, removals: 0 });
    const logging = await db.query(
      `SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'tidemark' AND p.prosrc LIKE '%sync_removals%'`,
    );
    expect(logging).toEqual([]);
    await app.query(`DELETE FROM orders WHERE region = 'r1' AND day = ${day(1)}`);
    await app.query(`UPDATE orders SET day = ${day(200_001)} WHERE region = 'r2' AND day = ${day(2)}`);
    // The application moves to the new table.
    await db.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON orders_v2 TO ${role}`);
    await app.query(`DELETE FROM orders_v2 WHERE region = 'r0' AND day = ${day(3)}`);
    expect(await differ()).toBe(0);
    expect((await db.query(`SELECT count(*)::int AS n FROM orders`))[0].n).toBe(ROWS - 2);
    expect(await logged()).toEqual({ settling: 0, removals: 0 });

    await h.client.abort(workflowId, { reason: 'test over' });
    expect((await h.client.waitForEnd(workflowId)).state).toBe('rolled-back');
  } finally {
    await app.end();
    await db.query(`DROP OWNED BY ${role}; DROP ROLE ${role}`);
  }
});

test('a TRUNCATE of the source during the copy: the whole table is settled, and the log goes all the same', async () => {
  const db = await h.db('settletruncate');
  await db.query(`CREATE TABLE items (id bigint PRIMARY KEY, note text NOT NULL);
    CREATE TABLE items_v2 (id bigint PRIMARY KEY, note text NOT NULL);
    INSERT INTO items SELECT i, 'n' || i FROM generate_series(1, ${ROWS}) i`);
  const plan = slowCopyPlan(db, { name: 'settle-truncate', table: 'items', key: 'id', sync: 'forward' });
  const { workflowId } = await h.client.start(plan, { autoApprove: false });
  await h.approvalPending(workflowId, 'copy');
  await h.client.throttle(workflowId, { delayMs: 300 });
  await h.client.approve(workflowId);
  // Some batches in, most not yet.
  await eventually(
    async () => (await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM items_v2`))[0].n >= 300,
    'the first batch in the new table',
    120_000,
    20,
  );
  await db.query(`TRUNCATE items`);
  await db.query(`INSERT INTO items SELECT i, 'after ' || i FROM generate_series(1, 10) i`);
  await eventOf(h.client, workflowId, /^phase validate completed$/);
  expect(await db.query(`SELECT id, note FROM items_v2 ORDER BY id`)).toEqual(
    await db.query(`SELECT id, note FROM items ORDER BY id`),
  );
  expect((await db.query(`SELECT count(*)::int AS n FROM items_v2`))[0].n).toBe(10);
  expect(
    await db.query(
      `SELECT (SELECT count(*) FROM tidemark.sync_settling)::int AS settling,
              (SELECT count(*) FROM tidemark.sync_removals)::int AS removals,
              (SELECT count(*) FROM pg_proc WHERE prosrc LIKE '%sync_removals%')::int AS logging`,
    ),
  ).toEqual([{ settling: 0, removals: 0, logging: 0 }]);
  await h.client.abort(workflowId, { reason: 'test over' });
  expect((await h.client.waitForEnd(workflowId)).state).toBe('rolled-back');
});
