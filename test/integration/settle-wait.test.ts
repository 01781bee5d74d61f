// A row deleted in a transaction that stays open across the copy of that row. Its sync trigger ran before the batch
// that copies the row committed, so it found nothing to delete in the target; the batch, reading a snapshot in which
// the delete is not committed, copies the row. Only the settle pass can remove it, and only once the delete is
// committed: the pass must wait for that transaction to end, or the application's delete is undone in the new table.
import { Client } from 'pg';
import { eventOf, eventually, Harness, StopWaiting } from '../helpers/env';
import { slowCopyPlan } from '../helpers/plans';

const h = new Harness();
beforeAll(() => h.start());
afterAll(() => h.stop());
jest.setTimeout(300_000);

const ROWS = 6000;
/** The row deleted: the last key, copied by the last batch. */
const LAST = ROWS;

test('a delete in a transaction open across the copy of its row: the settle pass waits for it, the row ends deleted', async () => {
  const db = await h.db('settlewait');
  await db.query(`CREATE TABLE items (id bigint PRIMARY KEY, note text NOT NULL);
    CREATE TABLE items_v2 (id bigint PRIMARY KEY, note text NOT NULL);
    INSERT INTO items SELECT i, 'n' || i FROM generate_series(1, ${ROWS}) i`);
  const plan = slowCopyPlan(db, { name: 'settle-wait', table: 'items', key: 'id', sync: 'forward' });
  const app = new Client({ connectionString: db.url, application_name: 'app' });
  await app.connect();
  try {
    const { workflowId } = await h.client.start(plan, { autoApprove: false });
    await h.approvalPending(workflowId, 'copy');
    // Twenty batches at least 300 ms apart: the last one comes seconds after the sync trigger is in place.
    await h.client.throttle(workflowId, { delayMs: 300 });
    await h.client.approve(workflowId);
    await eventually(
      async () =>
        (
          await db.query<{ n: number }>(
            `SELECT count(*)::int AS n FROM pg_trigger WHERE tgrelid = 'items'::regclass AND tgname LIKE 'tidemark%'`,
          )
        )[0].n > 0,
      'the sync trigger on items',
      120_000,
      20,
    );
    await app.query('BEGIN');
    await app.query('DELETE FROM items WHERE id = $1', [LAST]);
    // The scenario: the row's batch has not run yet (its trigger found nothing to delete).
    expect((await db.query(`SELECT id FROM items_v2 WHERE id = ${LAST}`)).length).toBe(0);

    // Every range copied, the copy phase must not end while the delete is uncommitted (it would keep the row). Other
    // sessions (the worker's own, mid-query) may be counted for an instant: the wait is for this one.
    const appPid = (app as unknown as { processID: number }).processID;
    const waiting = await eventually(
      async () => {
        const s = await h.client.status(workflowId);
        if (['rolled-back', 'failed', 'completed'].includes(s.state))
          throw new StopWaiting(`migration ${s.state}: ${s.error}`);
        const copy = s.phases.find((p) => p.name === 'copy');
        if (copy?.status === 'completed') return 'the copy phase ended with the delete still open';
        return s.copy[0]?.waitingFor?.includes(`pid ${appPid} `) ? s.copy[0].waitingFor : undefined;
      },
      'the settle pass to wait for the open transaction',
      240_000,
    );
    expect(waiting).toMatch(/^waiting for \d+ transaction\(s\) open since before the last batch to end: /);
    expect(waiting).toContain(`pid ${appPid} (app, idle in transaction since `);
    // The batch did copy the row, under the uncommitted delete.
    expect((await db.query(`SELECT id FROM items_v2 WHERE id = ${LAST}`)).length).toBe(1);
    await app.query('COMMIT');

    await eventOf(h.client, workflowId, /^phase validate completed$/);
    expect(await db.query(`SELECT id FROM items_v2 WHERE id = ${LAST}`)).toEqual([]);
    const [{ a, b }] = await db.query<{ a: number; b: number }>(
      `SELECT (SELECT count(*) FROM items)::int AS a, (SELECT count(*) FROM items_v2)::int AS b`,
    );
    expect({ a, b }).toEqual({ a: ROWS - 1, b: ROWS - 1 });
    const events = (await h.client.status(workflowId)).events.map((e) => e.message);
    expect(events).toContain(
      'copy items: settled, 1 row(s) that left the source while it was copied removed (1 logged key(s) looked at)',
    );
    await h.client.abort(workflowId, { reason: 'test over' });
    expect((await h.client.waitForEnd(workflowId)).state).toBe('rolled-back');
  } finally {
    await app.end();
  }
});
