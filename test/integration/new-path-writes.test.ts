// Traffic never moves onto a path whose writes a rollback would silently lose: a plan moving traffic to a target that
// nothing syncs back is refused (also when started through the API), unless it accepts the loss — and then the
// rollback says how many rows written on the new path it discarded.
import type { ResolvedPlan } from '../../src/plan/types';
import { eventually, Harness, type TestDb } from '../helpers/env';
import { meetingsPlan } from '../helpers/plans';

const h = new Harness();
beforeAll(() => h.start());
afterAll(() => h.stop());

async function forwardOnly(db: TestDb, discardNewPathWrites?: boolean): Promise<ResolvedPlan> {
  const base = await meetingsPlan(db, { rows: 300 });
  return {
    ...base,
    copy: [{ ...base.copy[0], sync: 'forward', discardNewPathWrites }],
    validate: [{ rowCount: { copy: 'meetings' } }],
    traffic: {
      flagIn: 'source',
      flag: 'use_room_types',
      stages: [{ percent: 100, soak: 600_000, approval: false }],
      gates: [],
    },
    cleanup: undefined,
  };
}

test('a plan moving traffic onto a forward-only target is refused before it changes anything', async () => {
  const db = await h.db('fwdrefused');
  const { workflowId } = await h.client.start(await forwardOnly(db), { autoApprove: true });
  const final = await h.client.waitForEnd(workflowId);
  expect(final.state).toBe('rolled-back');
  expect(final.error).toContain(
    "copy meetings: rollback: traffic sends the application's writes to meetings_v2, and copy job meetings (sync: forward) syncs nothing back",
  );
  expect(final.events.at(-1)?.message).toBe('ended: nothing was changed');
});

test('a plan that accepts the loss: the rollback reports the rows written on the new path that it discarded', async () => {
  const db = await h.db('fwddiscard');
  const { workflowId } = await h.client.start(await forwardOnly(db, true), { autoApprove: true });
  await eventually(
    async () => (await h.client.status(workflowId)).traffic?.percent === 100,
    'traffic at 100%',
    120_000,
  );
  // The application, on the new path: three inserts in one statement, two updates, one delete.
  await db.query(`INSERT INTO meetings_v2 SELECT id + 100000, title, meeting_type, room_type, status, host_id, max_participants, created_at, updated_at
                    FROM meetings_v2 WHERE id <= 3`);
  await db.query(`UPDATE meetings_v2 SET title = 'new path' WHERE id IN (10, 11)`);
  await db.query(`DELETE FROM meetings_v2 WHERE id = 12`);
  // Writes on the old path reach the new table through the forward sync, and are not counted.
  await db.query(`UPDATE meetings SET title = 'old path' WHERE id = 20`);
  await h.client.abort(workflowId, { reason: 'test over' });
  const final = await h.client.waitForEnd(workflowId);
  expect(final.state).toBe('rolled-back');
  const undo = final.compensations.find((c) => c.phase === 'copy')!;
  expect(undo.description).toContain(
    "discarded the new path's writes to meetings_v2: 3 row(s) inserted, 2 updated, 1 deleted",
  );
});
