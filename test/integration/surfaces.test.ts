// What operators see and do outside tidemark's own status: the Web UI's summary, details and activity summaries (read
// with `temporal workflow describe` / `show`, as the Web UI reads them), an abort sent as a signal with the Temporal
// CLI, and `--watch` written to a file.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { temporalCli } from '../../src/infra/tools';
import { runCli } from '../helpers/cli';
import { eventually, Harness } from '../helpers/env';
import { meetingsPlan } from '../helpers/plans';

const h = new Harness();
beforeAll(() => h.start());
afterAll(() => h.stop());

const temporal = async (...args: string[]) =>
  JSON.parse(
    (
      await promisify(execFile)(temporalCli(), [...args, '--address', h.client.address, '--output', 'json'], {
        maxBuffer: 64 * 1024 * 1024,
      })
    ).stdout,
  );

/** A payload as the Temporal CLI prints it (JSON-encoded data, base64 or already decoded). */
function text(p: unknown): string {
  if (typeof p === 'string') return p;
  const data = (p as { data?: unknown })?.data;
  if (typeof data === 'string') {
    try {
      return JSON.parse(Buffer.from(data, 'base64').toString('utf8'));
    } catch {
      return data;
    }
  }
  return JSON.stringify(p);
}

test('the Web UI gets a summary, details, current details and a summary per activity and timer; abort as a signal ends it as a deliberate rollback', async () => {
  const db = await h.db('ui');
  const plan = await meetingsPlan(db, { rows: 500, soakMs: 120_000 });
  const { workflowId } = await h.client.start(plan, { autoApprove: true });
  await eventually(async () => (await h.client.status(workflowId)).traffic?.percent === 10, 'traffic at 10%');

  const described = await temporal('workflow', 'describe', '--workflow-id', workflowId);
  const meta = described.executionConfig?.userMetadata ?? described.workflowExtendedInfo?.userMetadata;
  expect(text(meta.summary)).toBe(
    `tidemark ${plan.name} · meetings → meetings_v2, query → room_states · flag use_room_types 10% → 50% → 100%`,
  );
  expect(text(meta.details)).toContain('**tables** meetings, meetings_v2');
  expect(text(meta.details)).toContain(`**database** the worker's \`$${db.urlEnv}\``);
  // Current details: phase and what the migration waits for, as the workflow last set them.
  const current = await temporal('workflow', 'metadata', '--workflow-id', workflowId);
  expect(current.queryResult[0].currentDetails).toContain('flag `use_room_types` at 10%, soaking until');

  // Abort, sent the way the Web UI's "Send a Signal" sends it.
  await promisify(execFile)(temporalCli(), [
    'workflow',
    'signal',
    '--address',
    h.client.address,
    '--workflow-id',
    workflowId,
    '--name',
    'abort',
    '--input',
    JSON.stringify({ by: 'oncall', reason: 'latency budget' }),
  ]);
  const final = await h.client.waitForEnd(workflowId);
  expect(final.state).toBe('rolled-back');
  expect(final.error).toBe('aborted by oncall: latency budget');
  const closed = await temporal('workflow', 'describe', '--workflow-id', workflowId);
  expect(closed.workflowExecutionInfo.status).toMatch(/COMPLETED/);

  // Every activity and timer carries a summary.
  const history = await temporal('workflow', 'show', '--workflow-id', workflowId);
  const summaries = (history.events as Record<string, unknown>[])
    .filter((e) => e.activityTaskScheduledEventAttributes || e.timerStartedEventAttributes)
    .map((e) => ({
      kind: e.activityTaskScheduledEventAttributes ? 'activity' : 'timer',
      summary: text((e.userMetadata as { summary?: unknown })?.summary),
    }));
  expect(summaries.length).toBeGreaterThan(10);
  expect(summaries.filter((s) => !s.summary || s.summary === 'undefined')).toEqual([]);
  expect(summaries.map((s) => s.summary)).toEqual(
    expect.arrayContaining([
      'copy meetings range 1/1',
      'flag use_room_types → 10%',
      expect.stringMatching(/^soak at 10% until /),
      'undo: flag use_room_types → 0%',
    ]),
  );

  // The final status is there with no worker asked: tidemark status says how it ended, and exits 0.
  const status = await runCli(['status', plan.name], { TIDEMARK_TASK_QUEUE: h.taskQueue });
  expect(status.code).toBe(0);
  expect(status.stdout).toContain('ROLLED-BACK');
  expect(status.stdout).toContain('reason: aborted by oncall: latency budget');
});

test('--watch written to a file prints a progress line at a steady interval, with the copy, the flag and the soak', async () => {
  const db = await h.db('watch');
  const base = await meetingsPlan(db, { rows: 20_000, soakMs: 3000, approvals: ['copy'] });
  const plan = {
    ...base,
    traffic: { ...base.traffic!, stages: base.traffic!.stages.map((s) => ({ ...s, approval: false })) },
  };
  const { workflowId } = await h.client.start(plan, { autoApprove: false });
  await h.approvalPending(workflowId, 'copy');
  // Slow enough that the copy lasts a few progress lines.
  await h.client.throttle(workflowId, { batchSize: 500, delayMs: 100 });
  const watching = runCli(['status', plan.name, '--watch', '--progress-every', '1s'], {
    TIDEMARK_TASK_QUEUE: h.taskQueue,
  });
  await h.client.approve(workflowId, { by: 'test' });
  const r = await watching;
  if (r.code !== 0) throw new Error(`watch ended ${r.code}:\n${r.stdout}\n${r.stderr}`);
  const lines = r.stdout.split('\n');
  const progress = lines.filter((l) => / {2}progress: /.test(l));
  expect(progress.length).toBeGreaterThanOrEqual(3);
  expect(progress.some((l) => /copy meetings: \d+% [\d,]+\/~[\d,]+ rows, [\d,]+ rows\/s, ETA /.test(l))).toBe(true);
  expect(progress.some((l) => /flag use_room_types at \d+%, soak \S+ left/.test(l))).toBe(true);
  // Plain text for a file: no escape codes.
  expect(r.stdout).not.toContain('\u001b[');
  expect(lines.some((l) => /^\d\d:\d\d:\d\dZ {2}completed$/.test(l))).toBe(true);
});
