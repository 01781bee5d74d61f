// Rollback: an abort mid-traffic and a failed validation both return the database to exactly where it started.
import { allTableContents, flagPercent, schemaDump, tableExists } from '../helpers/db-assert';
import { eventually, Harness } from '../helpers/env';
import { meetingsPlan } from '../helpers/plans';

const h = new Harness();
beforeAll(() => h.start());
afterAll(() => h.stop());

test('an abort during the traffic phase restores the schema and every table, and puts the flag back to 0', async () => {
  const db = await h.db('abort');
  const plan = await meetingsPlan(db, { rows: 2000, soakMs: 60_000 });
  const schemaBefore = schemaDump(db);
  const contentsBefore = await allTableContents(db);

  const { workflowId } = await h.client.start(plan, { autoApprove: true });
  await eventually(async () => (await h.client.status(workflowId)).traffic?.percent === 10, 'flag at 10%');
  expect(await flagPercent(db, 'use_room_types')).toBe(10);
  // Writes keep arriving on the old table while the new path is live; rollback must keep them.
  await db.query(`UPDATE meetings SET title = 'renamed during rollout' WHERE id = 7`);
  contentsBefore['public.meetings'] = JSON.stringify(await db.query(`SELECT * FROM meetings ORDER BY 1`));

  const ack = await h.client.abort(workflowId, { by: 'test', reason: 'error rate too high' });
  expect(ack.accepted).toBe(true);
  const final = await h.client.waitForEnd(workflowId);

  expect(final.state).toBe('rolled-back');
  expect(final.error).toBe('aborted by test: error rate too high');
  expect(final.compensations.map((c) => [c.phase, c.status])).toEqual([
    ['schema', 'done'],
    ['schema', 'done'],
    ['copy', 'done'],
    ['copy', 'done'],
    ['traffic', 'done'],
  ]);
  expect(await flagPercent(db, 'use_room_types')).toBe(0);
  expect(schemaDump(db)).toBe(schemaBefore);
  expect(await allTableContents(db)).toEqual(contentsBefore);
  const history = await db.query<{ status: string }>(`SELECT status FROM tidemark.history WHERE workflow_id = $1`, [workflowId]);
  expect(history.map((r) => r.status)).toEqual(['rolled-back', 'rolled-back']);
});

test('a failing validation assertion rolls the migration back on its own', async () => {
  const db = await h.db('badcheck');
  const base = await meetingsPlan(db, { rows: 500 });
  const plan = {
    ...base,
    validate: [
      { rowCount: { copy: 'meetings' } },
      { sql: { name: 'no ended meetings', query: `SELECT count(*) FROM meetings_v2 WHERE status = 'ended'`, expect: 0 } },
    ],
  };
  const schemaBefore = schemaDump(db);
  const { workflowId } = await h.client.start(plan, { autoApprove: true });
  const final = await h.client.waitForEnd(workflowId);

  expect(final.state).toBe('rolled-back');
  expect(final.phases.find((p) => p.name === 'validate')?.status).toBe('failed');
  expect(final.phases.find((p) => p.name === 'traffic')?.status).toBe('pending');
  expect(final.error).toMatch(/validation failed — no ended meetings: got 125, expected 0/);
  expect(final.validation?.checks.map((c) => [c.check, c.ok])).toEqual([
    ['rowCount meetings', true],
    ['no ended meetings', false],
  ]);
  expect(await tableExists(db, 'meetings_v2')).toBe(false);
  expect(await tableExists(db, 'room_states')).toBe(false);
  expect(schemaDump(db)).toBe(schemaBefore);
});
