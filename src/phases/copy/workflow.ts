// Copy, workflow side: for each job, sync triggers (their undo registered first), then its key ranges copied by
// parallel activities while pause and throttle settings are pushed to where the running copy reads them.
import { condition, isCancellation, patched } from '@temporalio/workflow';
import type { CopyJobProgress } from '../../migration/messages';
import { changes, longRunning, operatorSettings, quick, undos } from '../../migration/profiles';
import { errorMessage } from '../../migration/saga';
import type { ResolvedCopyJob } from '../../plan/types';
import { isBlueGreen } from '../../plan/databases';
import type { Phase, PhaseContext } from '../phase';
import {
  acrossArgs,
  endCapturesAfterRollback,
  resumeAppliers,
  startCapture,
  switchCapture,
  undoCapture,
  type CaptureUndo,
} from './across-workflow';

export type CopyUndo = { kind: 'undoCopy'; job: ResolvedCopyJob } | CaptureUndo;

export const copyPhase: Phase<CopyUndo> = {
  name: 'copy',
  approvalAtStart: true,
  skip: (plan) => plan.copy.length === 0,

  async run(ctx) {
    // Settings given before the copy began (a throttle while waiting for approval) apply from the first batch.
    await writeCopyControl(ctx);
    const stop = { done: false };
    // The pusher's wait rejects the moment an abort cancels the scope, while the copy is still winding down: its
    // rejection must be handled from the start, or the workflow task fails and the abort is lost.
    let pushFailure: unknown;
    const pusher = pushCopyControl(ctx, stop).catch((err) => {
      if (!isCancellation(err)) pushFailure = err;
    });
    try {
      for (const job of ctx.plan.copy) {
        await ctx.control.safePoint();
        await copyJob(ctx, job);
      }
    } finally {
      stop.done = true;
      await pusher;
    }
    if (pushFailure)
      ctx.board.event(`pause/throttle settings could not be passed to the copy: ${errorMessage(pushFailure)}`);
    return { jobs: ctx.board.status.copy.map((c) => ({ job: c.job, rows: c.rowsCopied })) };
  },

  undo: (ctx, action) =>
    action.kind === 'undoCapture'
      ? undoCapture(ctx, action)
      : undos.undoCopy.executeWithOptions({ summary: `undo copy ${action.job.name}: drop its sync triggers` }, [
          { urlEnv: ctx.plan.database.urlEnv, run: ctx.run, job: action.job, lockTimeoutMs: ctx.plan.lockTimeout },
        ]),

  resume(ctx) {
    if (isBlueGreen(ctx.plan)) resumeAppliers(ctx);
  },

  async afterRollback(ctx) {
    if (isBlueGreen(ctx.plan)) return endCapturesAfterRollback(ctx);
    const { plan, run, board } = ctx;
    // Only when a copy undo ran: otherwise there is no reverse sync to remove.
    const undone = board.status.compensations.some((c) => c.phase === 'copy' && c.status === 'done');
    const jobs = plan.copy.filter((j) => j.sync === 'bidirectional');
    if (!undone || !jobs.length) return undefined;
    try {
      await undos.dropReverseSync.executeWithOptions(
        { summary: `undo: drop the reverse sync of ${jobs.map((j) => j.name).join(', ')}` },
        [{ urlEnv: plan.database.urlEnv, run, jobs, lockTimeoutMs: plan.lockTimeout }],
      );
      return undefined;
    } catch (e) {
      return `dropping the reverse sync of ${jobs.map((j) => j.name).join(', ')}: ${errorMessage(e)}`;
    }
  },
};

async function copyJob(ctx: PhaseContext, job: ResolvedCopyJob): Promise<void> {
  const { plan, run, board } = ctx;
  const base = { urlEnv: plan.database.urlEnv, run, job, lockTimeoutMs: plan.lockTimeout };
  // Blue-green: changes are captured on the source and applied to the target (another database) from here on.
  const across = isBlueGreen(plan);
  let mode: 'trigger' | 'logical' = 'trigger';
  if (across) mode = await startCapture(ctx, job, 'forward');
  else {
    const installed = await ctx.changeWithUndo(
      `drop sync triggers of ${job.name}; empty ${job.to} if the copy filled it`,
      { kind: 'undoCopy', job },
      () =>
        changes.installSyncTriggers.executeWithOptions(
          { summary: `sync triggers for ${job.name} (${job.from ?? 'query'} → ${job.to}, ${job.sync})` },
          [base],
        ),
    );
    if (installed.value.warning) board.event(`copy ${job.name}: WARNING: ${installed.value.warning}`);
  }
  const { ranges, estimatedRows } = await quick.planCopyRanges.executeWithOptions(
    { summary: `plan the key ranges of ${job.name}` },
    [across ? { ...base, targetEnv: plan.target!.urlEnv } : base],
  );
  const progress: CopyJobProgress = {
    job: job.name,
    rowsCopied: 0,
    estimatedTotal: estimatedRows,
    rowsPerSecond: 0,
    etaSeconds: null,
    batchSize: job.batchSize,
    ranges: ranges.length,
    rangesDone: 0,
    throttleReason: null,
    lockConflicts: 0,
    lastLockConflict: null,
    paused: false,
    done: false,
  };
  board.status.copy.push(progress);
  board.event(`copy ${job.name}: ${ranges.length} range(s), about ${estimatedRows} rows`);
  board.publish();
  const started = Date.now();
  let rows = 0;
  let format: string | undefined;
  // allSettled, not all: on an abort every range's activity must have stopped (its cancellation completed) before
  // the compensations touch the tables it writes.
  const outcomes = await Promise.allSettled(
    ranges.map(async (range) => {
      const summary = { summary: `copy ${job.name} range ${range.index + 1}/${ranges.length}` };
      const share = Math.ceil(estimatedRows / ranges.length);
      const r = across
        ? await longRunning.copyRangeAcross.executeWithOptions(summary, [
            { ...acrossArgs(ctx, job), range, estimatedRows: share },
          ])
        : await longRunning.copyRange.executeWithOptions(summary, [{ ...base, range, estimatedRows: share }]);
      rows += r.rowsCopied;
      format ??= r.format;
      progress.rangesDone++;
      progress.rowsCopied = rows;
      board.publish();
    }),
  );
  const failed = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected');
  if (failed) throw failed.reason;
  if (mode === 'logical') await switchCapture(ctx, job);
  if (job.sync !== 'none' && !across) {
    // No batch runs any more: rows a batch wrote after they had left the source can now be found and removed.
    const settled = await longRunning.settleCopy.executeWithOptions(
      { summary: `settle ${job.name}: remove rows that left the source` },
      [base],
    );
    if (settled.removed) {
      // How the pass found them: among the keys the triggers logged as leaving the source, or in the whole table.
      const looked =
        settled.keysLooked === undefined
          ? 'the whole table looked at'
          : `${settled.keysLooked} logged key(s) looked at`;
      board.event(
        `copy ${job.name}: settled, ${settled.removed} row(s) that left the source while it was copied removed (${looked})`,
      );
    }
  }
  progress.done = true;
  progress.etaSeconds = 0;
  progress.estimatedTotal = Math.max(progress.estimatedTotal, rows);
  progress.rowsPerSecond = Math.round((rows * 1000) / Math.max(1, Date.now() - started));
  board.event(`copy ${job.name}: ${rows} rows copied${format ? ` (${format} COPY format)` : ''}`);
  board.publish();
}

/** Keeps the copy's control row (pause, throttle) in the database in step with the workflow's state. */
async function pushCopyControl(ctx: PhaseContext, stop: { done: boolean }): Promise<void> {
  let pushed = ctx.control.version;
  while (!stop.done) {
    await condition(() => ctx.control.version !== pushed || stop.done);
    if (stop.done) break;
    const version = ctx.control.version;
    await writeCopyControl(ctx);
    pushed = version;
  }
}

/** Patch: copy settings are written by a local activity (see `operatorSettings` in migration/profiles.ts). */
const COPY_CONTROL_LOCAL = 'copy-control-local-activity';

function writeCopyControl({ plan, run, control }: PhaseContext): Promise<void> {
  const c = control.copyControl();
  const summary = `copy settings: ${c.paused ? 'paused' : 'running'}, batch ${c.batchSize ?? 'adaptive'}, delay ${c.delayMs ?? 0}ms`;
  const args: Parameters<typeof quick.setCopyControl> = [{ urlEnv: plan.database.urlEnv, run, ...c }];
  // Migrations started before this change recorded an ordinary activity here; they replay as they ran.
  if (patched(COPY_CONTROL_LOCAL)) return operatorSettings.setCopyControl.executeWithOptions({ summary }, args);
  return quick.setCopyControl.executeWithOptions({ summary }, args);
}
