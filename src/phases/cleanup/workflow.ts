// Cleanup, workflow side: after the retention delay and approval, drop the sync triggers, move the old tables into
// tidemark_archive (undo: move them back, registered first), run the cleanup steps — compatibility objects under the
// old names, each with its undo registered first, so a rollback drops them before the tables they shadow move back —
// then cleanup SQL, and after dropAfter drop the archived tables: the one step with no way back.
import { isCancellation, patched } from '@temporalio/workflow';
import { errorMessage } from '../../migration/saga';
import { changes, undos } from '../../migration/profiles';
import { isBlueGreen } from '../../plan/databases';
import type { ResolvedCopyJob, ResolvedPlan, SchemaStep } from '../../plan/types';
import { capturedJobs, drainInRounds, finishCapture } from '../copy/across-workflow';
import type { Phase } from '../phase';
import { applyStep, revertStep } from '../schema/workflow';

/** With an archive, syncs end with the move or after it (before: in steps of their own just before it). */
const SYNC_ENDS_WITH_ARCHIVE = 'sync-ends-with-archive';
/** A failed drop of the archived tables holds for the operator (before: it rolled back, though abort was refused). */
const DROP_HOLDS = 'archive-drop-holds';
/** Blue-green: the forward capture also stays until the drop (before: it ended at the archive). */
const FORWARD_UNTIL_DROP = 'forward-capture-until-drop';

export type CleanupUndo =
  | { kind: 'restoreArchivedTables'; tables: string[]; followers: ResolvedCopyJob[] }
  | { kind: 'revertCleanupStep'; step: SchemaStep };

/**
 * Bidirectional jobs whose source table is archived while a drop is still to come. Until the drop, an abort must find
 * every write made on the new path in the old table: their sync stays and follows the table into the archive (and
 * back out of it on a restore).
 */
export function archiveFollowers(plan: ResolvedPlan): ResolvedCopyJob[] {
  const c = plan.cleanup;
  if (c?.dropAfter === undefined || isBlueGreen(plan)) return [];
  const oldTables = (j: (typeof plan.copy)[number]) => (j.from ? [j.from] : (j.writeBack ?? []).map((w) => w.table));
  return plan.copy.filter((j) => j.sync === 'bidirectional' && oldTables(j).some((t) => c.archive.includes(t)));
}

export const cleanupPhase: Phase<CleanupUndo> = {
  name: 'cleanup',
  // Cleanup asks for its approval after its retention delay, not before it.
  approvalAtStart: false,
  skip: (plan) => !plan.cleanup,
  whenSkipped({ plan, board }) {
    if (plan.copy.some((j) => j.sync !== 'none')) {
      board.event(
        'no cleanup section: sync triggers left in place, so both tables stay in step; a plan with a cleanup section removes them',
      );
    }
  },

  async run(ctx) {
    const { plan, run, board, control } = ctx;
    const c = plan.cleanup!;
    const urlEnv = plan.database.urlEnv;
    const lockTimeoutMs = plan.lockTimeout;
    if (c.after) await control.hold('cleanup delay', c.after, true);
    await control.safePoint();
    if (plan.approvals.includes('cleanup')) await control.requireApproval('cleanup');

    const followers = archiveFollowers(plan);
    const across = isBlueGreen(plan);
    const dropping = across ? [] : plan.copy.filter((j) => !followers.includes(j));
    const synced = dropping.filter((j) => j.sync !== 'none');
    const result: Record<string, unknown> = { syncTriggersDropped: synced.map((j) => j.name) };
    // Blue-green: the reverse capture follows the old tables into the archive until they are dropped, so an abort
    // until then still finds every write made on the target in them.
    const reverseUntilDrop = across && c.archive.length > 0 && c.dropAfter !== undefined;
    // And so does the forward capture: an abort before the drop moves traffic back to blue, and blue's writes from
    // then on must keep their stamps, or the target's last writes, applied to blue at the rollback's end, would
    // overwrite them (or bring back rows deleted on blue). Blue takes no writes meanwhile, so it logs nothing.
    const forwardUntilDrop = reverseUntilDrop && patched(FORWARD_UNTIL_DROP);
    // With an archive, the old tables stop taking writes before their sync ends: a write on an old table between the
    // end of its sync and its move would be acknowledged and never reach the new table. Within one database the sync
    // triggers are dropped in the archive's transaction; across two, the capture ends after the move (its triggers
    // follow the table into the archive, and what they logged until then is applied).
    const withArchive = c.archive.length > 0 && (across || dropping.length > 0) && patched(SYNC_ENDS_WITH_ARCHIVE);
    const endCaptures = async () => {
      if (!forwardUntilDrop) await drainInRounds(capturedJobs(ctx), (job) => finishCapture(ctx, job, 'forward', false));
      if (!reverseUntilDrop) await drainInRounds(capturedJobs(ctx), (job) => finishCapture(ctx, job, 'reverse', true));
      result.captureEnded = capturedJobs(ctx).map((j) => j.name);
    };
    if (across && !withArchive) await endCaptures();
    if (dropping.length && !withArchive) {
      // No undo: the copy's own undo drops these triggers anyway, and from here the old path takes no writes.
      await changes.dropSyncTriggers.executeWithOptions(
        { summary: `drop sync triggers of ${dropping.map((j) => j.name).join(', ')}` },
        [{ urlEnv, run, jobs: dropping, lockTimeoutMs }],
      );
      // Said in the log: from here these jobs' tables drift apart (followers, kept until the drop, are not among them).
      if (synced.length) {
        board.event(
          `sync triggers dropped: ${synced.map((j) => j.name).join(', ')} (old and new tables no longer kept in step)`,
        );
      }
    }

    let restoreId: string | undefined;
    if (c.archive.length) {
      const args = { urlEnv, run, tables: c.archive, lockTimeoutMs, followers };
      const undo: CleanupUndo = { kind: 'restoreArchivedTables', tables: c.archive, followers };
      const { value, undoId } = await ctx.changeWithUndo(
        `move ${c.archive.join(', ')} back from tidemark_archive`,
        undo,
        () =>
          changes.archiveTables.executeWithOptions(
            { summary: `archive ${c.archive.join(', ')} into tidemark_archive` },
            [{ ...args, dropAfterMs: c.dropAfter, ...(withArchive ? { dropping } : {}) }],
          ),
      );
      restoreId = undoId;
      board.event(
        `archived ${value.archived.join(', ')}` +
          (withArchive && !across && synced.length
            ? `; sync triggers dropped with it: ${synced.map((j) => j.name).join(', ')} (old and new tables no longer kept in step)`
            : ''),
      );
      result.archived = value.archived;
      if (across && withArchive) await endCaptures();
    }
    const steps = c.steps ?? [];
    if (steps.length) {
      const applied: string[] = [];
      for (const step of steps) {
        await control.safePoint();
        if (await applyStep(ctx, step, 'cleanup', { kind: 'revertCleanupStep', step })) applied.push(step.id);
      }
      result.steps = applied;
    }
    if (c.sql) {
      result.sql = await changes.runCleanupSql.executeWithOptions({ summary: `cleanup SQL ${c.sql.path}` }, [
        { urlEnv, run, sql: c.sql, lockTimeoutMs },
      ]);
      // It has no down: an abort or a revert from here leaves what it did (cleanup steps are the undoable kind).
      board.event(`cleanup SQL ${c.sql.path} ran; a rollback or revert does not undo it`);
    }

    if (c.archive.length && c.dropAfter !== undefined) {
      // Never shortened by promote: after this drop there is no way back.
      await control.hold('drop of archived tables', c.dropAfter, false);
      await control.safePoint();
      control.passPointOfNoReturn();
      const drop = async () => {
        if (forwardUntilDrop)
          await drainInRounds(capturedJobs(ctx), (job) => finishCapture(ctx, job, 'forward', false));
        if (reverseUntilDrop) await drainInRounds(capturedJobs(ctx), (job) => finishCapture(ctx, job, 'reverse', true));
        return changes.dropArchivedTables.executeWithOptions(
          { summary: `drop archived ${c.archive.join(', ')} (no way back)` },
          [{ urlEnv, run, tables: c.archive, lockTimeoutMs, followers }],
        );
      };
      let outcome: Awaited<ReturnType<typeof drop>>;
      for (;;) {
        try {
          outcome = await drop();
          break;
        } catch (e) {
          // Past the point of no return an abort is refused, so a drop that fails does not roll back either (before
          // DROP_HOLDS it did, days after cut-over, on a lock timeout): it holds for the operator and runs again.
          if (isCancellation(e) || !patched(DROP_HOLDS)) throw e;
          control.pauseWith({
            reason: `dropping the archived tables failed (${errorMessage(e)}); there is no way back: fix the cause, then resume to drop them`,
            by: 'tidemark',
          });
          board.publish();
          await control.safePoint();
        }
      }
      const { dropped } = outcome;
      ctx.retire(restoreId!);
      result.dropped = dropped;
      board.event(`archived tables dropped: ${c.archive.join(', ')}`);
    }
    return result;
  },

  undo(ctx, action) {
    if (action.kind === 'revertCleanupStep') return revertStep(ctx, action.step, 'cleanup');
    const { tables, followers } = action;
    return undos.restoreArchivedTables.executeWithOptions(
      { summary: `undo: move ${tables.join(', ')} back from tidemark_archive` },
      [{ urlEnv: ctx.plan.database.urlEnv, run: ctx.run, tables, lockTimeoutMs: ctx.plan.lockTimeout, followers }],
    );
  },
};
