// Copy across two databases (blue-green), workflow side: each job's changes captured on the source (undo registered
// first) and applied to the target by a background applier from before the first row is copied; the reverse capture
// (target → source) from before traffic first moves; stages that wait for the lag; and how it all ends — in cleanup
// (drained, then dropped) or in a rollback (the target's writes applied to the source before anything is dropped).
import { ApplicationFailure, isCancellation, patched, sleep } from '@temporalio/workflow';
import type { ReplicationStatus } from '../../migration/messages';
import { changes, longRunning, quick, undos } from '../../migration/profiles';
import { errorMessage } from '../../migration/saga';
import type { ResolvedCopyJob } from '../../plan/types';
import type { PhaseContext } from '../phase';

type Direction = 'forward' | 'reverse';

export interface CaptureUndo {
  kind: 'undoCapture';
  job: ResolvedCopyJob;
  direction: Direction;
}

/** Jobs whose changes are captured (a job with sync none is copied once, nothing more). */
export const capturedJobs = (ctx: Pick<PhaseContext, 'plan'>) => ctx.plan.copy.filter((j) => j.sync !== 'none');

export function acrossArgs({ plan, run }: Pick<PhaseContext, 'plan' | 'run'>, job: ResolvedCopyJob) {
  return {
    sourceEnv: plan.database.urlEnv,
    targetEnv: plan.target!.urlEnv,
    run,
    job,
    lockTimeoutMs: plan.lockTimeout,
    capture: plan.target!.capture,
  };
}

const arrow = (d: Direction) => (d === 'forward' ? 'source → target' : 'target → source');
const applierKey = (job: string, d: Direction) => `applier of ${job} (${arrow(d)})`;

function record(ctx: PhaseContext, job: string, direction: Direction): ReplicationStatus {
  const list = (ctx.board.status.replication ??= []);
  let r = list.find((x) => x.job === job && x.direction === direction);
  if (!r) {
    r = { job, direction, state: 'applying' };
    list.push(r);
  }
  return r;
}

/**
 * Starts (or restarts) the applier of one direction: it runs until stopped, beside the phases. One that stops on its
 * own pauses the migration (see Runbook) and runs again when the operator resumes it.
 */
function startApplier(ctx: PhaseContext, job: ResolvedCopyJob, direction: Direction, afterResume = false): void {
  const r = record(ctx, job.name, direction);
  ctx.background.start(applierKey(job.name, direction), async () => {
    if (afterResume) {
      afterResume = false;
      if (!(await ctx.background.whenResumed())) return undefined;
    }
    // Again after it stopped on its own and the operator resumed the migration: its changes waited in the log.
    if (r.state === 'stopped') {
      ctx.board.event(`${applierKey(job.name, direction)} started again`);
      ctx.board.publish();
    }
    r.state = 'applying';
    delete r.error;
    try {
      return await longRunning.replicate.executeWithOptions(
        { summary: `apply ${job.name} changes, ${arrow(direction)}` },
        [{ ...acrossArgs(ctx, job), direction }],
      );
    } catch (e) {
      // Stopped on its own: status says so, instead of the last lag it read (its changes wait in the log).
      if (!isCancellation(e)) Object.assign(r, { state: 'stopped', error: errorMessage(e) });
      throw e;
    }
  });
}

/**
 * Installs one direction's capture, its undo registered first, and starts its applier. Returns how the changes are
 * captured: by triggers, or (forward, where the source allows it) by a logical slot until switchCapture.
 */
export async function startCapture(
  ctx: PhaseContext,
  job: ResolvedCopyJob,
  direction: Direction,
): Promise<'trigger' | 'logical'> {
  const description =
    direction === 'forward'
      ? `drop the change capture of ${job.name}; empty ${job.to} on the target if the copy filled it`
      : `apply the changes made to ${job.to} on the target to ${job.from} on the source`;
  const installed = await ctx.changeWithUndo(
    description,
    { kind: 'undoCapture', job, direction } satisfies CaptureUndo,
    () =>
      changes.installCapture.executeWithOptions({ summary: `capture ${job.name} changes, ${arrow(direction)}` }, [
        { ...acrossArgs(ctx, job), direction },
      ]),
  );
  const mode = installed.value?.mode ?? 'trigger';
  if (installed.value?.warning) ctx.board.event(`copy ${job.name}: WARNING: ${installed.value.warning}`);
  if (job.sync !== 'none') startApplier(ctx, job, direction);
  ctx.board.event(
    `change capture of ${job.name} (${arrow(direction)}) installed${mode === 'logical' ? ', by logical decoding' : ''}; applier started`,
  );
  ctx.board.publish();
  return mode;
}

/**
 * Once a job's copy is done: a forward capture fed by a logical slot switches to triggers, which stamp each write for
 * conflict resolution once both sides may take writes. Its applier stops meanwhile.
 */
export async function switchCapture(ctx: PhaseContext, job: ResolvedCopyJob): Promise<void> {
  // Installing the triggers needs a moment's lock on the table: application transactions that hold it longer than
  // lockTimeout make it try again (with back-off), so the switch can take a while beside long transactions.
  ctx.board.event(
    `switching the change capture of ${job.name} from logical decoding to triggers: needs a brief lock on ${job.from} ` +
      `(tried again while application transactions hold it longer than lockTimeout)`,
  );
  ctx.board.publish();
  await ctx.background.stop(applierKey(job.name, 'forward'));
  const { logged } = await changes.switchCaptureToTriggers.executeWithOptions(
    { summary: `switch the change capture of ${job.name} from its logical slot to triggers` },
    [{ ...acrossArgs(ctx, job), direction: 'forward' }],
  );
  if (job.sync !== 'none') startApplier(ctx, job, 'forward');
  ctx.board.event(
    `change capture of ${job.name} switched from logical decoding to triggers (${logged} last decoded change(s) logged)`,
  );
  ctx.board.publish();
}

/**
 * After a continue-as-new: the appliers that were running run again; one that had stopped on its own (the migration
 * paused for it) runs again once the operator resumes, as it would have in the run before.
 */
export function resumeAppliers(ctx: PhaseContext): void {
  for (const r of ctx.board.status.replication ?? []) {
    const stoppedOnItsOwn = r.state === 'stopped' && r.error !== undefined;
    if (r.state !== 'applying' && !(stoppedOnItsOwn && patched(RESTART_AFTER_CONTINUE))) continue;
    const job = ctx.plan.copy.find((j) => j.name === r.job);
    if (job) startApplier(ctx, job, r.direction, stoppedOnItsOwn);
  }
}

/** Marks runs that start a stopped applier again after a continue-as-new (older runs left it stopped). */
const RESTART_AFTER_CONTINUE = 'applier-restart-after-continue';

/** Marks runs that drain the jobs a foreign key holds up after the others (before: the first such failure was final). */
const DRAIN_ROUNDS = 'drain-in-rounds';
/** Rounds in a row in which no job's drain got through before drainInRounds gives up. */
const STALLED_ROUNDS = 10;

/** Whether an activity failed on a foreign key: a row of its job waiting for another job's changes. */
function refusedByForeignKey(e: unknown): boolean {
  const cause = (e as { cause?: unknown })?.cause;
  return (
    cause instanceof ApplicationFailure &&
    cause.type === 'SqlError' &&
    (cause.details?.[0] as { code?: string } | undefined)?.code === '23503'
  );
}

/**
 * Ends each job's capture with `finish`. Each job's log is drained on its own, so a foreign key between two captured
 * tables can refuse one job's change until another job's log is drained (a row inserted with the row it references,
 * a row deleted with the rows referencing it): that job is left for later, the others are drained, and it is tried
 * again — for as long as rounds get a job through.
 */
export async function drainInRounds(jobs: ResolvedCopyJob[], finish: (job: ResolvedCopyJob) => Promise<unknown>) {
  let pending = jobs;
  for (let stalled = 0; pending.length;) {
    const left: ResolvedCopyJob[] = [];
    let refusal: unknown;
    for (const job of pending) {
      try {
        await finish(job);
      } catch (e) {
        if (!refusedByForeignKey(e) || !patched(DRAIN_ROUNDS)) throw e;
        left.push(job);
        refusal = e;
      }
    }
    stalled = left.length === pending.length ? stalled + 1 : 0;
    if (stalled >= STALLED_ROUNDS) throw refusal;
    pending = left;
  }
}

/** Stops a direction's applier, then ends its capture: triggers dropped, the log drained, its record gone. */
export async function finishCapture(ctx: PhaseContext, job: ResolvedCopyJob, direction: Direction, last: boolean) {
  await ctx.background.stop(applierKey(job.name, direction));
  const { applied } = await changes.finishCapture.executeWithOptions(
    { summary: `end the change capture of ${job.name}, ${arrow(direction)}: drain, then drop` },
    [{ ...acrossArgs(ctx, job), direction, last }],
  );
  const r = record(ctx, job.name, direction);
  r.state = 'finished';
  delete r.error;
  ctx.board.event(`change capture of ${job.name} (${arrow(direction)}) ended; ${applied} last change(s) applied`);
  ctx.board.publish();
}

/** The undo of a capture (see across.ts undoCapture); its applier stopped first. */
export async function undoCapture(ctx: PhaseContext, { job, direction }: CaptureUndo): Promise<string> {
  await ctx.background.stop(applierKey(job.name, direction));
  if (direction === 'forward') record(ctx, job.name, direction).state = 'finished';
  else record(ctx, job.name, direction).state = 'stopped';
  return undos.undoCapture.executeWithOptions(
    {
      summary: `undo: ${direction === 'forward' ? 'drop' : 'drain'} the change capture of ${job.name}, ${arrow(direction)}`,
    },
    [{ ...acrossArgs(ctx, job), direction }],
  );
}

/**
 * The end of a blue-green rollback, once every undo ran (the target's tables dropped): the reverse capture, kept for
 * the application's last writes on the target, is drained into the source and dropped; row stamps go on both sides.
 */
export async function endCapturesAfterRollback(ctx: PhaseContext): Promise<string | undefined> {
  const undone = ctx.board.status.compensations.some((c) => c.phase === 'copy' && c.status === 'done');
  if (!undone) return undefined;
  try {
    await drainInRounds(capturedJobs(ctx), async (job) => {
      const { applied } = await undos.finishCapture.executeWithOptions(
        { summary: `undo: apply the target's last changes to ${job.from}, then drop the capture of ${job.name}` },
        [{ ...acrossArgs(ctx, job), direction: 'reverse', last: true, rollback: true }],
      );
      const r = ctx.board.status.replication?.find((x) => x.job === job.name && x.direction === 'reverse');
      if (r) {
        r.state = 'finished';
        delete r.error;
      }
      if (applied) ctx.board.event(`${applied} late change(s) made on the target applied to ${job.from}`);
    });
  } catch (e) {
    return `ending the change captures: ${errorMessage(e)}`;
  }
  ctx.board.publish();
  return undefined;
}

/**
 * Waits until every running capture's backlog is younger than target.maxLag, so traffic moves onto a side that holds
 * (nearly) everything. Pausable and abortable while it waits.
 */
export async function waitForLag(ctx: PhaseContext, before: string): Promise<void> {
  const jobs = capturedJobs(ctx);
  if (!jobs.length) return;
  const maxLag = ctx.plan.target!.maxLag;
  let said = false;
  for (let wait = 500; ; wait = Math.min(5000, wait * 2)) {
    await ctx.control.safePoint();
    const lag = await quick.replicationLag.executeWithOptions({ summary: `replication lag before ${before}` }, [
      { ...acrossArgs(ctx, jobs[0]), jobs },
    ]);
    for (const l of lag)
      Object.assign(record(ctx, l.job, l.direction), {
        lagRows: l.rows,
        lagSeconds: l.seconds,
        slotBytes: l.slotBytes,
      });
    const worst = lag.reduce((a, b) => (b.seconds > a.seconds ? b : a), {
      seconds: 0,
      rows: 0,
      job: '',
      direction: 'forward',
    });
    if (worst.seconds * 1000 <= maxLag) {
      if (said) ctx.board.event(`replication lag below ${maxLag / 1000}s: ${before}`);
      return;
    }
    if (!said) {
      ctx.board.event(
        `waiting before ${before}: ${worst.job} (${arrow(worst.direction)}) has ${worst.rows} change(s) to apply, the oldest ${worst.seconds.toFixed(1)}s old (maxLag ${maxLag / 1000}s)`,
      );
      ctx.board.publish();
      said = true;
    }
    await sleep(wait);
  }
}
