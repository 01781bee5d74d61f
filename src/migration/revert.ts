// Reverting a completed migration (`tidemark revert`) as its own durable workflow: take stock and refuse up front what
// can no longer be reverted, back up, wait for approval (`--auto-approve` grants it), then run the phases' own undos —
// compatibility objects dropped, archived tables moved back, the flag to 0, sync triggers dropped, each step's `down`
// newest first — with the same status, events and Web UI columns as a migration. Past its first change a revert is
// not undone half-way: one that stops says what it reverted and what is left, and runs again from there.
import { Background } from './background';
import {
  ApplicationFailure,
  CancellationScope,
  isCancellation,
  patched,
  setHandler,
  workflowInfo,
} from '@temporalio/workflow';
import { PHASE_MODULES } from '../phases';
import type { RevertItem } from '../phases/ledger-activities';
import type { PhaseContext } from '../phases/phase';
import { withoutScriptText } from '../plan/scripts';
import type { PhaseName, ResolvedCopyJob, ResolvedPlan } from '../plan/types';
import { OperatorControl } from './control';
import { Notifier } from './notify';
import { F, failure } from './failures';
import { initialStatus, statusQuery, type MigrationStatus, type RevertInput, type RunRef } from './messages';
import { backups, quick, undos } from './profiles';
import { errorMessage, Saga, type UndoAction } from './saga';
import { StatusBoard } from './status';

const ALWAYS_APPROVED = 'revert-always-approved';

/** A revert's phases: preflight and backup, then the migration's phases backwards, each running its own undos. */
export const REVERT_PHASES: readonly PhaseName[] = ['preflight', 'backup', 'cleanup', 'traffic', 'copy', 'schema'];

export async function revertWorkflow(input: RevertInput): Promise<MigrationStatus> {
  return new Revert(input).execute();
}

class Revert {
  private plan: ResolvedPlan;
  private readonly run: RunRef;
  private readonly board: StatusBoard;
  private readonly control: OperatorControl;
  private readonly saga = new Saga();
  private changing = false;
  private readonly notifier: Notifier;

  constructor(private readonly input: RevertInput) {
    const info = workflowInfo();
    this.plan = input.plan;
    this.run = { runKey: info.firstExecutionRunId, migration: this.plan.name, workflowId: info.workflowId };
    const status = initialStatus(this.plan.name, info.workflowId, new Date().toISOString(), REVERT_PHASES);
    this.board = new StatusBoard({ ...status, kind: 'revert' });
    this.control = new OperatorControl(this.board, this.plan, input.options);
    // The plan's notify targets hear of a revert as of a migration: its approval, its end.
    this.notifier = new Notifier(this.board, this.plan);
    this.board.announcer = (event, message) => this.notifier.send(event, message);
  }

  async execute(): Promise<MigrationStatus> {
    setHandler(statusQuery, () => this.board.status);
    this.control.install();
    const { startedBy, autoApprove } = this.input.options;
    this.board.event(
      `revert of ${this.plan.name} started${startedBy ? ` by ${startedBy}` : ''}${autoApprove ? ' with auto-approval' : ''}`,
    );
    this.board.publish();
    try {
      await this.control.scope.run(() => this.revert());
    } catch (err) {
      return await this.stopped(err);
    }
    this.board.setState('completed');
    this.board.status.endedAt = this.board.now();
    this.board.announce(
      'completed',
      this.saga.records().length ? `reverted ${this.plan.name}` : 'completed: nothing to revert',
    );
    this.board.publish();
    await this.notifier.drain();
    return this.board.status;
  }

  private async revert(): Promise<void> {
    const { plan, board, control } = this;
    const inv = await this.inPhase('preflight', () =>
      quick.planRevert.executeWithOptions({ summary: 'revert: take stock of what the migration left' }, [
        { plan, discardNewWrites: this.input.options.discardNewWrites },
      ]),
    );
    board.status.steps = inv.steps;
    for (const f of inv.findings.filter((x) => x.status === 'warn'))
      board.event(`preflight warning — ${f.check}: ${f.message}`);
    // The scripts are stored: from here the plan carries their hashes only, as in a migration.
    this.plan = withoutScriptText(plan);
    for (const item of inv.items) {
      const action: UndoAction & { run: RunItem } = { ...item.action, run: item.run };
      this.saga.add(item.phase, item.description, action);
    }
    board.status.compensations = this.saga.records();
    const phasesToRun = new Set<PhaseName>(inv.items.map((i) => i.phase));
    for (const name of REVERT_PHASES.slice(2)) if (!phasesToRun.has(name)) board.phase(name).status = 'skipped';
    if (!inv.items.length) {
      board.phase('backup').status = 'skipped';
      return;
    }

    if (this.plan.backup.enabled) {
      // The whole database: the downs drop the new tables, with whatever was written to them.
      const whole = { ...this.plan, backup: { ...this.plan.backup, tables: undefined } };
      board.status.backup = await this.inPhase('backup', () =>
        backups.createBackup.executeWithOptions({ summary: `pg_dump the whole database into ${whole.backup.dir}` }, [
          { plan: whole, run: this.run },
        ]),
      );
    } else {
      board.phase('backup').status = 'skipped';
      board.event('backup skipped: the plan disables backups');
    }
    await control.safePoint();
    // The revert drops the new tables with whatever was written to them: someone says yes first, whatever the plan
    // asked of its migration (before ALWAYS_APPROVED, only when the plan listed any approval).
    if (this.plan.approvals.length || patched(ALWAYS_APPROVED)) {
      board.status.phase = REVERT_PHASES.find((p) => phasesToRun.has(p))!;
      await control.requireApproval('revert');
    }

    control.passPointOfNoReturn(
      'the revert is under way and is not undone half-way: let it finish (a revert that stops says what is left, and runs again from there)',
    );
    this.changing = true;
    // An abort is refused from here; a cancellation from the Web UI must not stop it half-way either.
    const outcome = await CancellationScope.nonCancellable(() =>
      this.saga.compensate(
        async (e) => {
          this.enterPhase(e.record.phase);
          await control.safePoint();
          const { run, ...action } = e.action as UndoAction & { run: RunItem };
          return PHASE_MODULES[e.record.phase].undo!(this.contextFor(run), action as never);
        },
        () => board.now(),
      ),
    );
    board.status.compensations = this.saga.records();
    const current = board.status.phase && board.phase(board.status.phase);
    if (outcome.failed) {
      if (current) Object.assign(current, { status: 'failed', endedAt: board.now(), error: outcome.failed.error });
      // In the order they ran: the newest registered first.
      const done = this.saga
        .records()
        .filter((r) => r.status === 'done')
        .reverse()
        .map((r) => r.description);
      const left = [outcome.failed, ...outcome.notRun].map((r) => r.description);
      throw failure(
        F.RevertFailed,
        `revert stopped: ${outcome.failed.description} failed (${outcome.failed.error}). ` +
          `${done.length ? `Reverted: ${done.join('; ')}. ` : ''}Left as they are: ${left.join('; ')}. ` +
          `Fix the cause and run tidemark revert ${this.plan.name} again: what is reverted stays reverted`,
      );
    }
    // As a migration's rollback does once its saga is done: the reverse sync of a bidirectional job, kept by its copy
    // undo while writes could still land on the new path, goes once the new tables are gone.
    const problem = await CancellationScope.nonCancellable(() => this.dropReverseSyncs(inv.items));
    if (problem) {
      if (current) Object.assign(current, { status: 'failed', endedAt: board.now(), error: problem });
      const done = this.saga
        .records()
        .filter((r) => r.status === 'done')
        .reverse()
        .map((r) => r.description);
      throw failure(
        F.RevertFailed,
        `revert stopped: ${problem}. Reverted: ${done.join('; ')}. ` +
          `Left as it is: that reverse sync (still recorded). Fix the cause and run tidemark revert ${this.plan.name} ` +
          'again: what is reverted stays reverted',
      );
    }
    if (current) Object.assign(current, { status: 'completed', endedAt: board.now() });
  }

  /**
   * Drops the reverse sync that the copy undos kept for bidirectional jobs, for each run that installed one; what went
   * wrong, if anything.
   */
  private async dropReverseSyncs(items: RevertItem[]): Promise<string | undefined> {
    const byRun = new Map<string, { run: RunItem; jobs: ResolvedCopyJob[] }>();
    for (const item of items) {
      if (item.phase !== 'copy' || item.action.job.sync !== 'bidirectional') continue;
      const g = byRun.get(item.run.runKey) ?? { run: item.run, jobs: [] };
      g.jobs.push(item.action.job);
      byRun.set(item.run.runKey, g);
    }
    for (const { run, jobs } of byRun.values()) {
      const names = jobs.map((j) => j.name).join(', ');
      try {
        await undos.dropReverseSync.executeWithOptions({ summary: `undo: drop the reverse sync of ${names}` }, [
          { urlEnv: this.plan.database.urlEnv, run, jobs, lockTimeoutMs: this.plan.lockTimeout },
        ]);
      } catch (e) {
        return `dropping the reverse sync of ${names} failed (${errorMessage(e)})`;
      }
      this.board.event(`reverse sync of ${names} dropped (kept until the new tables were gone)`);
    }
    return undefined;
  }

  /** Runs one of the revert's own phases (preflight, backup), recorded in status like a migration's. */
  private async inPhase<T>(name: PhaseName, fn: () => Promise<T>): Promise<T> {
    const rec = this.enterPhase(name);
    try {
      const result = await fn();
      Object.assign(rec, { status: 'completed', endedAt: this.board.now(), result });
      this.board.event(`phase ${name} completed`);
      return result;
    } catch (err) {
      Object.assign(rec, {
        status: isCancellation(err) ? 'cancelled' : 'failed',
        endedAt: this.board.now(),
        error: errorMessage(err),
      });
      throw err;
    } finally {
      this.board.publish();
    }
  }

  /** Marks `name` running (the previous phase, if another, completed). */
  private enterPhase(name: PhaseName) {
    const { board } = this;
    if (board.status.phase && board.status.phase !== name) {
      const prev = board.phase(board.status.phase);
      if (prev.status === 'running') Object.assign(prev, { status: 'completed', endedAt: board.now() });
    }
    const rec = board.phase(name);
    if (rec.status !== 'running') {
      Object.assign(rec, { status: 'running', startedAt: board.now() });
      board.status.phase = name;
      board.event(name === 'preflight' || name === 'backup' ? `phase ${name} started` : `reverting ${name}`);
      board.publish();
    }
    return rec;
  }

  /** What a phase's undo needs, for the run that made the change: the undo finds that run's objects by it. */
  private contextFor(run: RunItem): PhaseContext {
    return {
      plan: this.plan,
      run,
      board: this.board,
      control: this.control,
      carried: undefined,
      // A revert starts no background work; undos stop what a migration started (nothing here).
      background: new Background(() => undefined),
      changeWithUndo: () => Promise.reject(new Error('a revert makes no changes of its own')),
      retire: () => undefined,
      continueAsNew: () => Promise.reject(new Error('a revert does not continue as new')),
    };
  }

  private async stopped(err: unknown): Promise<never> {
    const { board } = this;
    const a = this.control.abortRequest;
    const reason = a
      ? `revert aborted${a.by ? ` by ${a.by}` : ''}${a.reason ? `: ${a.reason}` : ''}; nothing was changed`
      : isCancellation(err)
        ? 'revert cancelled; nothing was changed'
        : errorMessage(err);
    board.status.error = this.changing || a || isCancellation(err) ? reason : withNothingChanged(reason);
    board.status.pendingApproval = null;
    board.status.endedAt = board.now();
    board.setState('failed');
    board.announce('failed', board.status.error);
    board.publish();
    await CancellationScope.nonCancellable(() => this.notifier.drain());
    if (isCancellation(err) && !a) throw err;
    // The final status rides along as the failure's details: `tidemark status` can show it with no worker running.
    const f = failure(F.RevertFailed, board.status.error, board.status);
    // An outcome, not a crash: the Web UI shows the reason without a stack trace of the revert.
    f.stack = '';
    throw f as ApplicationFailure;
  }
}

type RunItem = RevertItem['run'];

const withNothingChanged = (reason: string) =>
  /nothing was changed/.test(reason) ? reason : `${reason}; nothing was changed`;
