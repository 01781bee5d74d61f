// Blue-green with the old tables archived and dropped later: until the drop, the reverse stream follows the old tables
// into tidemark_archive, so a write the application makes on green after the archive still reaches blue (and an abort
// before the drop would find it there). The migration then completes at the drop, with nothing left behind.
import { Pool } from 'pg';
import { eventOf, eventually, Harness, StopWaiting } from '../helpers/env';
import { blueGreenPlan, leftovers, seedBlue } from '../helpers/blue-green';

const h = new Harness();
beforeAll(() => h.start());
afterAll(() => h.stop());
jest.setTimeout(300_000);

test('a write on green after blue is archived reaches the archived table, and the migration completes at the drop', async () => {
  const blue = await h.db('bg_archive_blue');
  const green = await h.db('bg_archive_green');
  await seedBlue(blue, 500);
  const base = blueGreenPlan(blue, green, { stages: [{ percent: 100, soak: 100 }], archive: true });
  const plan = { ...base, cleanup: { ...base.cleanup!, dropAfter: 20_000 } };
  const { workflowId } = await h.client.start(plan, { autoApprove: true });
  const stillRunning = async () => {
    const s = await h.client.status(workflowId);
    if (s.state !== 'running') throw new StopWaiting(`migration ${s.state}: ${s.error}`);
  };
  await eventually(
    async () => {
      await stillRunning();
      const [{ x }] = await blue.query<{ x: boolean }>(
        `SELECT to_regclass('tidemark_archive.cameras') IS NOT NULL AS x`,
      );
      return x;
    },
    'blue cameras archived',
    240_000,
  );
  await green.query(`UPDATE cameras SET name = 'written on green after the archive' WHERE id = 7`);
  await eventually(
    async () => {
      await stillRunning();
      const [row] = await blue.query<{ name: string }>(`SELECT name FROM tidemark_archive.cameras WHERE id = 7`);
      return row?.name === 'written on green after the archive';
    },
    'the write on green in the archived table on blue',
    60_000,
  );
  const final = await h.client.waitForEnd(workflowId);
  expect({ state: final.state, error: final.error ?? null }).toEqual({ state: 'completed', error: null });
  const [{ x: dropped }] = await blue.query<{ x: boolean }>(
    `SELECT to_regclass('tidemark_archive.cameras') IS NULL AS x`,
  );
  expect(dropped).toBe(true);
  const none = { triggers: 0, functions: 0, captures: 0, changes: 0, stamps: 0, slots: 0, publications: 0 };
  expect(await leftovers(blue)).toEqual(none);
  expect(await leftovers(green)).toEqual(none);
});

test('writes that keep landing on blue through the cleanup reach green or fail: none is left behind in the archive', async () => {
  const blue = await h.db('bg_archive_late_blue');
  const green = await h.db('bg_archive_late_green');
  await seedBlue(blue, 200);
  const base = blueGreenPlan(blue, green, { stages: [{ percent: 100, soak: 100 }], archive: true });
  const plan = { ...base, approvals: ['cleanup' as const] };
  const { workflowId } = await h.client.start(plan, { autoApprove: false });
  await h.approvalPending(workflowId, 'cleanup');

  // A client still on blue (an old deploy, a cron job) inserts cameras there while the cleanup runs, until the table
  // is gone from under it.
  const pool = new Pool({ connectionString: blue.url, max: 3 });
  pool.on('error', () => undefined);
  const acknowledged: number[] = [];
  let running = true;
  let next = 900_000;
  const writers = Array.from({ length: 3 }, async () => {
    while (running) {
      const id = next++;
      try {
        await pool.query(`INSERT INTO cameras (id, name, ip_address) VALUES ($1, 'late on blue', '10.0.0.1')`, [id]);
        acknowledged.push(id);
      } catch {
        // Moved into the archive: this write was refused, never acknowledged.
      }
    }
  });
  try {
    await eventually(async () => acknowledged.length > 20, 'some writes on blue');
    await h.client.approve(workflowId, { by: 'test' });
    const final = await h.client.waitForEnd(workflowId);
    expect({ state: final.state, error: final.error ?? null }).toEqual({ state: 'completed', error: null });
  } finally {
    running = false;
    await Promise.all(writers);
    await pool.end();
  }
  const onGreen = new Set(
    (await green.query<{ id: number }>(`SELECT id FROM cameras WHERE id >= 900000`)).map((r) => Number(r.id)),
  );
  expect(acknowledged.filter((id) => !onGreen.has(id))).toEqual([]);
  const none = { triggers: 0, functions: 0, captures: 0, changes: 0, stamps: 0, slots: 0, publications: 0 };
  expect(await leftovers(blue)).toEqual(none);
  expect(await leftovers(green)).toEqual(none);
});

test('an abort after the archive moves blue back, and writes made on blue from then on outlast late ones on green', async () => {
  const blue = await h.db('bg_archive_abort_blue');
  const green = await h.db('bg_archive_abort_green');
  await seedBlue(blue, 300);
  const base = blueGreenPlan(blue, green, { stages: [{ percent: 100, soak: 100 }], archive: true });
  const plan = { ...base, cleanup: { ...base.cleanup!, dropAfter: 3_600_000 } };
  const { workflowId } = await h.client.start(plan, { autoApprove: true });
  // Cleanup has archived blue's tables and waits for their drop.
  await eventOf(h.client, workflowId, /^waiting .* for drop of archived tables/, 240_000);
  // A view on green's cameras makes its schema undo (DROP TABLE) fail: the rollback holds after the copy's undo, with
  // traffic back on blue.
  await green.query(`CREATE VIEW camera_names AS SELECT id, name FROM cameras`);
  await h.client.abort(workflowId, { reason: 'back to blue' });
  await eventually(async () => (await h.client.status(workflowId)).paused?.rollbackHeld, 'the rollback held');
  const [{ x: back }] = await blue.query<{ x: boolean }>(`SELECT to_regclass('public.cameras') IS NOT NULL AS x`);
  expect(back).toBe(true);

  // Late writes on green, then later ones on blue to the same rows: blue's stay.
  await green.query(`UPDATE cameras SET name = 'late on green' WHERE id = 20`);
  await green.query(`UPDATE cameras SET name = 'stale on green' WHERE id IN (22, 23)`);
  await blue.query(`UPDATE cameras SET name = 'later on blue' WHERE id = 22`);
  await blue.query(`DELETE FROM cameras WHERE id = 23`);

  await green.query(`DROP VIEW camera_names`);
  await h.client.resume(workflowId, { by: 'operator' });
  const final = await h.client.waitForEnd(workflowId);
  expect(final.state).toBe('rolled-back');
  const rows = await blue.query<{ id: number; name: string }>(
    `SELECT id, name FROM cameras WHERE id IN (20, 22, 23) ORDER BY id`,
  );
  expect(rows).toEqual([
    { id: 20, name: 'late on green' },
    { id: 22, name: 'later on blue' },
  ]);
  const none = { triggers: 0, functions: 0, captures: 0, changes: 0, stamps: 0, slots: 0, publications: 0 };
  expect(await leftovers(blue)).toEqual(none);
  expect(await leftovers(green)).toEqual(none);
});

test('a change from green waiting on blue while cleanup moves the table into the archive is applied there, without a pause', async () => {
  const blue = await h.db('bg_archive_race_blue');
  const green = await h.db('bg_archive_race_green');
  await seedBlue(blue, 100);
  const base = blueGreenPlan(blue, green, { stages: [{ percent: 100, soak: 100 }], archive: true });
  const plan = {
    ...base,
    lockTimeout: 60_000,
    approvals: ['cleanup' as const],
    cleanup: { ...base.cleanup!, dropAfter: 3_600_000 },
  };
  const { workflowId } = await h.client.start(plan, { autoApprove: false });
  await h.approvalPending(workflowId, 'cleanup');
  const waitingOnLocks = async (n: number) => {
    const [{ w }] = await blue.query<{ w: number }>(
      `SELECT count(*)::int AS w FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`,
    );
    return w >= n;
  };
  // A session holds blue's cameras: the archive waits for it first, then the applier with a change from green.
  const holder = new Pool({ connectionString: blue.url, max: 1 });
  const c = await holder.connect();
  try {
    await c.query(`BEGIN; LOCK TABLE cameras IN SHARE MODE`);
    await h.client.approve(workflowId, { by: 'test' });
    await eventually(() => waitingOnLocks(1), 'the archive waiting for the lock');
    await green.query(`UPDATE cameras SET name = 'written on green while blue moves' WHERE id = 5`);
    await eventually(() => waitingOnLocks(2), 'the applier waiting behind the archive');
    await c.query('COMMIT');
  } finally {
    c.release();
    await holder.end();
  }
  await eventually(
    async () => {
      const s = await h.client.status(workflowId);
      if (s.state !== 'running') throw new StopWaiting(`migration ${s.state}: ${s.paused?.reason ?? s.error}`);
      const [row] = await blue.query<{ name: string }>(`SELECT name FROM tidemark_archive.cameras WHERE id = 5`);
      return row?.name === 'written on green while blue moves';
    },
    'the change from green in the archived table',
    60_000,
  );
  await h.client.abort(workflowId, { reason: 'done looking' });
  expect((await h.client.waitForEnd(workflowId)).state).toBe('rolled-back');
});
