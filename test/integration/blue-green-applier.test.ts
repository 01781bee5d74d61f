// An applier that stops on its own (here: green refuses a change) pauses the migration and says why; once the cause
// is gone, the operator's resume starts it again, the changes that waited in the log meanwhile reach green, and the
// migration carries on to the end with both sides equal.
import { Pool } from 'pg';
import { checkTargetDatabase, runPreflightChecks } from '../../src/phases/preflight/activities';
import { eventOf, eventually, Harness, StopWaiting } from '../helpers/env';
import {
  BLUE_CAMERAS_AS_GREEN,
  blueGreenPlan,
  exceptAcross,
  GREEN_CAMERAS,
  leftovers,
  seedBlue,
} from '../helpers/blue-green';

const h = new Harness();
beforeAll(() => h.start());
afterAll(() => h.stop());
jest.setTimeout(420_000);

/** Blue seeded, green empty, and the example plan started on them, once traffic is at 50 % (both sides take writes). */
async function atHalf(label: string) {
  const blue = await h.db(`${label}_blue`);
  const green = await h.db(`${label}_green`);
  await seedBlue(blue, 300);
  const plan = blueGreenPlan(blue, green, {
    stages: [
      { percent: 50, soak: 600_000 },
      { percent: 100, soak: 100 },
    ],
  });
  const { workflowId } = await h.client.start(plan, { autoApprove: true });
  await eventOf(h.client, workflowId, /^flag use_green_database at 50%/, 240_000);
  return { blue, green, workflowId };
}

test('an applier stopped by an error pauses the migration; resume starts it again and nothing is lost', async () => {
  const { blue, green, workflowId } = await atHalf('bg_restart');
  // While it captures blue's cameras, another migration of them is refused before it changes anything.
  const another = blueGreenPlan(blue, green, { stages: [{ percent: 100, soak: 100 }] });
  const pool = new Pool({ connectionString: blue.url });
  const report = await runPreflightChecks(pool, { ...another, name: 'another-migration' }).finally(() => pool.end());
  expect(report.findings).toContainEqual(
    expect.objectContaining({
      status: 'fail',
      message: expect.stringMatching(
        /^migration blue-green-.* captures the changes of public\.cameras \(copy job cameras\)/,
      ),
    }),
  );
  const forward = async () =>
    (await h.client.status(workflowId)).replication?.find((r) => r.job === 'cameras' && r.direction === 'forward');
  await blue.query(`UPDATE cameras SET name = 'applied before the stop' WHERE id = 2`);
  await eventually(async () => ((await forward())?.applied ?? 0) >= 1, 'a first change applied', 120_000);
  const appliedBefore = (await forward())!.applied!;

  // Green refuses one change made on blue: the forward applier stops on it.
  await green.query(`ALTER TABLE cameras ADD CONSTRAINT not_yet CHECK (name <> 'refused on green')`);
  await blue.query(`UPDATE cameras SET name = 'refused on green' WHERE id = 3`);
  const stopped = /^applier of cameras \(source → target\) stopped: .*not_yet/;
  const held = await eventOf(h.client, workflowId, stopped, 120_000);
  expect(held.paused?.reason).toMatch(stopped);
  expect(held.replication?.find((r) => r.job === 'cameras' && r.direction === 'forward')).toMatchObject({
    state: 'stopped',
    error: expect.stringContaining('not_yet'),
  });
  // Meanwhile the application goes on writing on blue: its changes wait in the log.
  await blue.query(`UPDATE cameras SET name = 'waited in the log' WHERE id = 4`);

  await green.query(`ALTER TABLE cameras DROP CONSTRAINT not_yet`);
  await h.client.resume(workflowId, { by: 'operator' });
  await eventOf(h.client, workflowId, /^applier of cameras \(source → target\) started again/, 60_000);
  await eventually(
    async () => {
      const rows = await green.query<{ id: number; name: string }>(
        `SELECT id, name FROM cameras WHERE id IN (3, 4) ORDER BY id`,
      );
      return rows.map((r) => r.name).join(' / ') === 'refused on green / waited in the log';
    },
    'both changes applied to green',
    120_000,
  );
  expect((await forward())?.state).toBe('applying');
  // The count in status goes on from where the stopped applier left it, not from zero.
  await eventually(
    async () => ((await forward())?.applied ?? 0) >= appliedBefore + 2,
    'status counting the changes applied before and after the stop',
    120_000,
  );

  await h.client.promote(workflowId, { by: 'operator' });
  const final = await h.client.waitForEnd(workflowId);
  expect({ state: final.state, error: final.error ?? null }).toEqual({ state: 'completed', error: null });
  expect(await exceptAcross(blue, BLUE_CAMERAS_AS_GREEN, green, GREEN_CAMERAS)).toEqual({ onlyInA: [], onlyInB: [] });
  const none = { triggers: 0, functions: 0, captures: 0, changes: 0, stamps: 0, slots: 0, publications: 0 };
  expect(await leftovers(blue)).toEqual(none);
  expect(await leftovers(green)).toEqual(none);
});

test('two rows swapping a unique value through a third in one transaction: green follows, the applier keeps going', async () => {
  const { blue, green, workflowId } = await atHalf('bg_swap');
  for (const db of [blue, green]) await db.query(`CREATE UNIQUE INDEX cameras_name_unique ON cameras (name)`);
  const names = async (db: typeof blue) =>
    (await db.query<{ name: string }>(`SELECT name FROM cameras WHERE id IN (20, 21) ORDER BY id`)).map((r) => r.name);
  const [a, b] = await names(blue);
  await blue.query(`BEGIN;
    UPDATE cameras SET name = 'swapping' WHERE id = 20;
    UPDATE cameras SET name = '${a}' WHERE id = 21;
    UPDATE cameras SET name = '${b}' WHERE id = 20;
    COMMIT`);
  await eventually(async () => (await names(green)).join(' / ') === `${b} / ${a}`, 'the swap on green', 120_000);
  const s = await h.client.status(workflowId);
  expect({ state: s.state, paused: s.paused }).toEqual({ state: 'running', paused: null });
  await h.client.promote(workflowId, { by: 'operator' });
  const final = await h.client.waitForEnd(workflowId);
  expect({ state: final.state, error: final.error ?? null }).toEqual({ state: 'completed', error: null });
  expect(await exceptAcross(blue, BLUE_CAMERAS_AS_GREEN, green, GREEN_CAMERAS)).toEqual({ onlyInA: [], onlyInB: [] });
});

test('an abort after cut-over whose drain blue refuses holds the rollback; fixed and resumed, blue gets every write', async () => {
  const blue = await h.db('bg_held_blue');
  const green = await h.db('bg_held_green');
  await seedBlue(blue, 300);
  const plan = blueGreenPlan(blue, green, { stages: [{ percent: 100, soak: 600_000 }] });
  const { workflowId } = await h.client.start(plan, { autoApprove: true });
  await eventOf(h.client, workflowId, /^flag use_green_database at 100%/, 240_000);
  // Blue refuses one of the application's writes on green.
  await blue.query(`ALTER TABLE cameras ADD CONSTRAINT not_on_blue CHECK (name <> 'refused on blue')`);
  await green.query(`UPDATE cameras SET name = 'refused on blue' WHERE id = 13`);
  await green.query(`UPDATE cameras SET name = 'after it on green' WHERE id = 14`);
  await eventOf(h.client, workflowId, /^applier of cameras \(target → source\) stopped: .*not_on_blue/, 120_000);

  await h.client.abort(workflowId, { reason: 'back to blue' });
  const held = await eventOf(
    h.client,
    workflowId,
    /^rollback held: .*not_on_blue.*Fix the cause, then resume/,
    120_000,
  );
  expect(held.state).toBe('paused');
  await blue.query(`ALTER TABLE cameras DROP CONSTRAINT not_on_blue`);
  await h.client.resume(workflowId, { by: 'operator' });
  const final = await h.client.waitForEnd(workflowId);
  expect(final.state).toBe('rolled-back');
  const rows = await blue.query<{ id: number; name: string }>(
    `SELECT id, name FROM cameras WHERE id IN (13, 14) ORDER BY id`,
  );
  expect(rows.map((r) => r.name)).toEqual(['refused on blue', 'after it on green']);
  const none = { triggers: 0, functions: 0, captures: 0, changes: 0, stamps: 0, slots: 0, publications: 0 };
  expect(await leftovers(blue)).toEqual(none);
  expect(await leftovers(green)).toEqual(none);
});

test("an abort after cut-over keeps green's rows until its tables are gone: late writes there reach blue, later ones on blue stay", async () => {
  const blue = await h.db('bg_late_blue');
  const green = await h.db('bg_late_green');
  await seedBlue(blue, 300);
  const plan = blueGreenPlan(blue, green, { stages: [{ percent: 100, soak: 600_000 }] });
  const { workflowId } = await h.client.start(plan, { autoApprove: true });
  await eventOf(h.client, workflowId, /^flag use_green_database at 100%/, 240_000);
  // A view on green's cameras makes its schema undo (DROP TABLE) fail: the rollback holds after the copy's undo.
  await green.query(`CREATE VIEW camera_names AS SELECT id, name FROM cameras`);
  await h.client.abort(workflowId, { reason: 'back to blue' });
  const held = await eventually(async () => {
    const s = await h.client.status(workflowId);
    return s.paused?.rollbackHeld ? s : undefined;
  }, 'the rollback held on the failed drop');
  expect(held.events.map((e) => e.message).join('\n')).toMatch(/^rollback held: .*camera_names/m);

  // Late requests on green: an update and a delete, each acknowledged with one row.
  expect(await green.query(`UPDATE cameras SET name = 'late on green' WHERE id = 20 RETURNING id`)).toHaveLength(1);
  expect(await green.query(`DELETE FROM cameras WHERE id = 21 RETURNING id`)).toHaveLength(1);
  // Late writes on green, then later ones on blue (where traffic is now) to the same rows: blue's stay.
  await green.query(`UPDATE cameras SET name = 'stale on green' WHERE id IN (22, 23)`);
  await blue.query(`UPDATE cameras SET name = 'later on blue' WHERE id = 22`);
  await blue.query(`DELETE FROM cameras WHERE id = 23`);

  await green.query(`DROP VIEW camera_names`);
  await h.client.resume(workflowId, { by: 'operator' });
  const final = await h.client.waitForEnd(workflowId);
  expect(final.state).toBe('rolled-back');
  const rows = await blue.query<{ id: number; name: string }>(
    `SELECT id, name FROM cameras WHERE id IN (20, 21, 22, 23) ORDER BY id`,
  );
  expect(rows).toEqual([
    { id: 20, name: 'late on green' },
    { id: 22, name: 'later on blue' },
  ]);
  const none = { triggers: 0, functions: 0, captures: 0, changes: 0, stamps: 0, slots: 0, publications: 0 };
  expect(await leftovers(blue)).toEqual(none);
  expect(await leftovers(green)).toEqual(none);
});

test("a change whose row references one that another job's applier has not brought yet waits for it, without a pause", async () => {
  const { blue, green, workflowId } = await atHalf('bg_fk');
  await green.query(`ALTER TABLE counting_results ADD FOREIGN KEY (camera_id) REFERENCES cameras (id)`);
  const results = async () =>
    (await h.client.status(workflowId)).replication?.find(
      (r) => r.job === 'counting_results' && r.direction === 'forward',
    );
  const before = (await results())?.conflicts ?? 0;
  // A session holds green's cameras: their applier waits, while a new camera's result reaches the other applier.
  const holder = new Pool({ connectionString: green.url, max: 1 });
  const c = await holder.connect();
  try {
    await c.query(`BEGIN; LOCK TABLE cameras IN SHARE MODE`);
    await blue.query(`BEGIN;
      INSERT INTO cameras (id, name, ip_address) VALUES (5000, 'new camera', '10.9.9.9');
      INSERT INTO counting_results (id, camera_id, at, count_in, count_out) VALUES (900001, 5000, now(), 3, 1);
      COMMIT`);
    await eventually(async () => {
      const s = await h.client.status(workflowId);
      if (s.state !== 'running') throw new StopWaiting(`migration ${s.state}: ${s.paused?.reason ?? s.error}`);
      return ((await results())?.conflicts ?? 0) > before;
    }, 'the result waiting for its camera');
    await c.query('COMMIT');
  } finally {
    c.release();
    await holder.end();
  }
  await eventually(
    async () => {
      const s = await h.client.status(workflowId);
      if (s.state !== 'running') throw new StopWaiting(`migration ${s.state}: ${s.paused?.reason ?? s.error}`);
      return (await green.query(`SELECT 1 FROM counting_results WHERE id = 900001 AND camera_id = 5000`)).length === 1;
    },
    'the result on green, after its camera',
    120_000,
  );
  await h.client.abort(workflowId, { reason: 'done looking' });
  expect((await h.client.waitForEnd(workflowId)).state).toBe('rolled-back');
});

test('preflight warns of a foreign key between two captured tables, on either side, read from the schema steps too', async () => {
  const blue = await h.db('bg_fk_preflight_blue');
  const green = await h.db('bg_fk_preflight_green');
  await seedBlue(blue, 10);
  await blue.query(`ALTER TABLE counting_results ADD FOREIGN KEY (camera_id) REFERENCES cameras (id)`);
  const base = blueGreenPlan(blue, green, { stages: [{ percent: 100, soak: 100 }] });
  const sql = (text: string) => ({ path: 'fk.sql', sql: text, sha256: '0'.repeat(64) });
  const plan = {
    ...base,
    schema: [
      ...base.schema,
      {
        id: '003_fk',
        transactional: true,
        up: sql('ALTER TABLE counting_results ADD FOREIGN KEY (camera_id) REFERENCES cameras (id);'),
        down: sql('SELECT 1;'),
      },
    ],
  };
  const [source, target] = [new Pool({ connectionString: blue.url }), new Pool({ connectionString: green.url })];
  try {
    const warned = (await checkTargetDatabase(source, target, plan))
      .filter((f) => f.check.startsWith('foreign key'))
      .map((f) => [f.status, f.message.split(',')[0]]);
    expect(warned).toEqual([
      ['warn', 'on the source'],
      ['warn', 'on the target'],
    ]);
  } finally {
    await Promise.all([source.end(), target.end()]);
  }
});

test("the rollback's last drains get past a foreign key between two captured tables: a camera deleted on green with its results is gone from blue too", async () => {
  const blue = await h.db('bg_fk_drain_blue');
  const green = await h.db('bg_fk_drain_green');
  await seedBlue(blue, 300);
  await blue.query(`ALTER TABLE counting_results ADD FOREIGN KEY (camera_id) REFERENCES cameras (id)`);
  const [{ n }] = await blue.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM counting_results WHERE camera_id = 30`,
  );
  expect(n).toBeGreaterThan(0);
  const plan = blueGreenPlan(blue, green, { stages: [{ percent: 100, soak: 600_000 }] });
  const { workflowId } = await h.client.start(plan, { autoApprove: true });
  await eventOf(h.client, workflowId, /^flag use_green_database at 100%/, 240_000);
  // A view on green's results holds the rollback after the copy's undo (at the first schema undo, which drops them),
  // with the reverse captures still on.
  await green.query(`CREATE VIEW result_cameras AS SELECT camera_id FROM counting_results`);
  await h.client.abort(workflowId, { reason: 'back to blue' });
  await eventually(async () => (await h.client.status(workflowId)).paused?.rollbackHeld, 'the rollback held');
  // A late request on green deletes camera 30 with its results: on blue the camera's delete (cameras' log, drained
  // first) waits for the results' delete (the other job's log).
  await green.query(
    `BEGIN; DELETE FROM counting_results WHERE camera_id = 30; DELETE FROM cameras WHERE id = 30; COMMIT`,
  );
  await green.query(`DROP VIEW result_cameras`);
  await h.client.resume(workflowId, { by: 'operator' });
  const final = await h.client.waitForEnd(workflowId);
  expect(final.state).toBe('rolled-back');
  expect(final.events.map((e) => e.message).join('\n')).not.toMatch(/rollback held: ending the change captures/);
  expect(await blue.query(`SELECT id FROM cameras WHERE id = 30`)).toEqual([]);
  expect(await blue.query(`SELECT id FROM counting_results WHERE camera_id = 30`)).toEqual([]);
  const none = { triggers: 0, functions: 0, captures: 0, changes: 0, stamps: 0, slots: 0, publications: 0 };
  expect(await leftovers(blue)).toEqual(none);
  expect(await leftovers(green)).toEqual(none);
});
