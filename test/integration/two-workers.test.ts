// Several workers share one migration's copy: its key ranges are separate activities on one task queue, so each worker
// takes ranges as it has room, and the ranges of a worker that dies are retried (from their checkpoints) by another.
// Workers run as child processes (`tidemark worker`), each allowed three activities at once, so neither can hold all
// four ranges and both must copy.
import type { ChildProcess } from 'node:child_process';
import type { ResolvedPlan } from '../../src/plan/types';
import { exceptBothWays } from '../helpers/db-assert';
import { eventually, Harness, type TestDb } from '../helpers/env';
import { meetingsPlan } from '../helpers/plans';
import { killed, workerProcess } from '../helpers/worker-process';
import { MEETINGS_AS_V2, V2_COLUMNS } from '../helpers/writers';

const h = new Harness();
beforeAll(() => h.start({ worker: false }));
afterAll(() => h.stop());
jest.setTimeout(600_000);

async function fourRanges(db: TestDb, rows: number): Promise<ResolvedPlan> {
  const base = await meetingsPlan(db, { rows, approvals: ['copy'] });
  return {
    ...base,
    copy: [{ ...base.copy[0], sync: 'forward', batchSize: 1000, maxBatchSize: 1000, parallel: 4 }],
    validate: [{ rowCount: { copy: 'meetings' } }, { checksum: { copy: 'meetings', chunkSize: 10_000 } }],
    traffic: undefined,
    cleanup: undefined,
  };
}

test('two workers each copy ranges of one migration; when one dies, the other finishes its ranges and the copy is exact', async () => {
  const db = await h.db('twoworkers');
  const rows = 80_000;
  const plan = await fourRanges(db, rows);
  const env = { [db.urlEnv]: db.url, TIDEMARK_MAX_ACTIVITIES: '3' };
  const workers: ChildProcess[] = [
    workerProcess(h.client.address, h.taskQueue, env),
    workerProcess(h.client.address, h.taskQueue, env),
  ];
  const [a, b] = workers;
  const identity = (w: ChildProcess) => `${w.pid}@`;
  try {
    const { workflowId } = await h.client.start(plan, { autoApprove: false });
    await h.approvalPending(workflowId, 'copy');
    await h.client.throttle(workflowId, { delayMs: 30 });
    await h.client.approve(workflowId);
    const handle = await h.client.handle(workflowId);

    // Both workers run copy ranges at the same time.
    const running = await eventually(
      async () => {
        const d = await handle.describe();
        const ids = (d.raw.pendingActivities ?? [])
          .filter((p) => p.activityType?.name === 'copyRange' && p.lastWorkerIdentity)
          .map((p) => p.lastWorkerIdentity!);
        return [a, b].every((w) => ids.some((id) => id.startsWith(identity(w)))) ? ids : undefined;
      },
      'copy ranges running on both workers',
      180_000,
    );
    expect(running.length).toBeGreaterThanOrEqual(2);

    // Held at a batch boundary, so the ranges are certainly unfinished when one worker dies.
    await h.client.pause(workflowId, { reason: 'a worker is about to die' });
    await eventually(async () => (await h.client.status(workflowId)).copy[0]?.paused, 'every range paused', 180_000);
    // One dies mid-copy: its ranges time out (heartbeat) and the other worker resumes them from their checkpoints.
    await killed(a, 'SIGKILL');
    await h.client.resume(workflowId);
    const final = await h.client.waitForEnd(workflowId);
    expect(final.error).toBeNull();
    expect(final.state).toBe('completed');
    expect(final.copy[0]).toMatchObject({ rowsCopied: rows, done: true });
    expect(await exceptBothWays(db, MEETINGS_AS_V2, V2_COLUMNS)).toEqual({ onlyInA: 0, onlyInB: 0 });

    // The history keeps the last attempt of each range: those the dead worker held were retried on the survivor.
    const events = (await handle.fetchHistory()).events ?? [];
    const copyScheduled = new Set(
      events
        .filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'copyRange')
        .map((e) => String(e.eventId)),
    );
    const starts = events
      .map((e) => e.activityTaskStartedEventAttributes)
      .filter((s) => s && copyScheduled.has(String(s.scheduledEventId)))
      .map((s) => ({ identity: s!.identity ?? '', attempt: s!.attempt ?? 1 }));
    const retried = starts.filter((s) => s.attempt >= 2);
    expect(retried.length).toBeGreaterThanOrEqual(1);
    expect(starts.every((s) => s.identity.startsWith(identity(b)))).toBe(true);
    // The survivor is still running: losing a peer is not its problem.
    expect(b.exitCode).toBeNull();
  } finally {
    for (const w of workers) await killed(w, 'SIGTERM');
  }
});
