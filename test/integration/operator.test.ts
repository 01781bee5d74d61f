// Operator control through updates: approval gates hold the workflow, a needless approve is refused (exit 4),
// pause holds the copy at a batch boundary and resume finishes it.
import { tableExists } from '../helpers/db-assert';
import { runCli } from '../helpers/cli';
import { eventually, Harness } from '../helpers/env';
import { meetingsPlan, writePlan } from '../helpers/plans';
import { loadPlan } from '../../src/plan/load';

const h = new Harness();
beforeAll(() => h.start());
afterAll(() => h.stop());

test('an approval gate holds the workflow in waiting-approval until approve; approve with nothing pending exits 4', async () => {
  const db = await h.db('approval');
  const plan = await meetingsPlan(db, { rows: 200, approvals: ['schema'], soakMs: 60_000 });
  const { workflowId } = await h.client.start(plan, { autoApprove: false });
  const cli = (...args: string[]) => runCli(args, { TIDEMARK_TASK_QUEUE: h.taskQueue });

  const waiting = await eventually(async () => {
    const s = await h.client.status(workflowId);
    return s.state === 'waiting-approval' ? s : undefined;
  }, 'waiting-approval');
  expect(waiting.pendingApproval?.gate).toBe('schema');
  // Held: the workflow task that began the wait scheduled nothing of the schema phase.
  const scheduled = ((await (await h.client.handle(workflowId)).fetchHistory()).events ?? []).map(
    (e) => e.activityTaskScheduledEventAttributes?.activityType?.name,
  );
  expect(scheduled).not.toContain('applySchemaStep');
  expect(await tableExists(db, 'meetings_v2')).toBe(false);

  const status = await cli('status', plan.name);
  expect(status.stderr).toBe('');
  expect(status.code).toBe(0);
  expect(status.stdout).toContain('waiting for approval of schema');

  // Naming what one means to approve: the wrong gate is refused, nothing approved.
  const wrong = await cli('approve', plan.name, '--gate', 'traffic:10%');
  expect(wrong.code).toBe(4);
  expect(wrong.stderr.trim()).toBe('rejected: traffic:10% is not waiting for approval (schema is)');
  const approved = await cli('approve', plan.name, '--gate', 'schema', '--by', 'alice', '--comment', 'looks good');
  expect(approved.stderr).toBe('');
  expect(approved.code).toBe(0);
  expect(approved.stdout.trim()).toBe('approved schema (state: running)');

  await eventually(async () => (await h.client.status(workflowId)).traffic?.percent === 10, 'traffic at 10%');
  expect(await tableExists(db, 'meetings_v2')).toBe(true);
  const s = await h.client.status(workflowId);
  expect(s.approvals).toEqual([expect.objectContaining({ gate: 'schema', by: 'alice', comment: 'looks good' })]);

  // Nothing is pending now: the workflow refuses, the CLI says why on one line and exits 4.
  const again = await cli('approve', plan.name);
  expect(again.code).toBe(4);
  expect(again.stderr.trim()).toBe('rejected: nothing is waiting for approval');
  // A refused update changes nothing.
  expect((await h.client.status(workflowId)).approvals).toHaveLength(1);

  expect((await cli('status', 'no-such-plan')).code).toBe(3);
  await h.client.abort(workflowId, { reason: 'test over' });
  await h.client.waitForEnd(workflowId);
});

test('pause holds the copy at a batch boundary; resume finishes it', async () => {
  const db = await h.db('pause');
  const base = await meetingsPlan(db, { rows: 30_000, approvals: ['copy'] });
  const plan = {
    ...base,
    traffic: { ...base.traffic!, stages: base.traffic!.stages.map((s) => ({ ...s, approval: false })) },
  };
  const { workflowId } = await h.client.start(plan, { autoApprove: false });
  await eventually(async () => (await h.client.status(workflowId)).pendingApproval?.gate === 'copy', 'copy approval');
  // Slow the copy down (fixed batches, a delay between them) so it is still running when we pause it.
  await h.client.throttle(workflowId, { batchSize: 200, delayMs: 30 });
  await h.client.approve(workflowId, { by: 'test' });
  await eventually(
    async () => (await h.client.status(workflowId)).copy[0]?.rowsCopied > 1000,
    'some rows copied',
    60_000,
    50,
  );

  await h.client.pause(workflowId, { reason: 'maintenance window' });
  const copied = async () =>
    Number(
      (
        await db.query<{ n: string }>(`SELECT sum(rows_copied) AS n FROM tidemark.copy_progress WHERE job = 'meetings'`)
      )[0].n,
    );
  // The copy stops at its next batch boundary (every range says so in status) and stays there.
  const paused = await eventually(async () => {
    const s = await h.client.status(workflowId);
    return s.copy[0]?.paused ? s : undefined;
  }, 'status to show the pause');
  expect(paused.paused?.reason).toBe('maintenance window');
  expect(paused.copy[0].throttleReason).toBe('paused: maintenance window');
  const held = await copied();
  expect(held % 200).toBe(0);
  expect(held).toBeLessThan(30_000);
  // Nothing commits while paused: the count stays where it stopped.
  await new Promise((r) => setTimeout(r, 1000));
  expect(await copied()).toBe(held);

  await h.client.resume(workflowId);
  // Back to adaptive batches and no delay, from the command line.
  const adaptive = await runCli(['throttle', plan.name, '--adaptive', '--delay-ms', '0'], {
    TIDEMARK_TASK_QUEUE: h.taskQueue,
  });
  expect(adaptive.stderr).toBe('');
  expect(adaptive.stdout.trim()).toBe('batch size adaptive, delay 0ms (state: running)');
  expect((await h.client.status(workflowId)).throttle).toEqual({ delayMs: 0 });
  const final = await h.client.waitForEnd(workflowId);
  expect(final.state).toBe('completed');
  expect(final.copy[0]).toMatchObject({ job: 'meetings', rowsCopied: 30_000, done: true });
  const [{ n }] = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM meetings_v2`);
  expect(n).toBe(30_000);
});

test('tidemark abort returns once the rollback is held on a failed undo, saying how to go on', async () => {
  const db = await h.db('abortheld');
  await db.query(`CREATE TABLE t (id bigint PRIMARY KEY)`);
  const plan = loadPlan(
    writePlan(
      {
        name: 'abort-held',
        database: { urlEnv: db.urlEnv },
        backup: { enabled: false },
        approvals: ['cleanup'],
        schema: [{ id: '001', up: 'up.sql', down: 'down.sql' }],
        cleanup: {},
      },
      // The down the database refuses: the rollback is held on it.
      { 'up.sql': 'CREATE TABLE t_v2 (id bigint PRIMARY KEY);', 'down.sql': 'DROP TABLE not_there_at_all;' },
    ),
  );
  const { workflowId } = await h.client.start(plan, { autoApprove: false });
  await h.approvalPending(workflowId, 'cleanup');

  const aborted = await runCli(['abort', plan.name, '--reason', 'test'], { TIDEMARK_TASK_QUEUE: h.taskQueue });
  expect(aborted.code).toBe(1);
  expect(aborted.stdout).toMatch(/rollback held: .*not_there_at_all.*Fix the cause, then resume/);
  const s = await h.client.status(workflowId);
  expect({ state: s.state, held: s.paused?.rollbackHeld }).toEqual({ state: 'paused', held: true });

  // Given up on: the migration fails, the rest left to an operator.
  await h.client.abort(workflowId, { reason: 'leave it' });
  expect((await h.client.waitForEnd(workflowId)).state).toBe('failed');
});
