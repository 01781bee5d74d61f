// The migration runbook as one durable workflow: seven phases in order, each change registering its undo before it is
// made, operator messages validated before they touch state (control.ts), and a rollback that always runs to its end
// or stops where going on could do harm.
import {
  allHandlersFinished,
  ApplicationFailure,
  CancellationScope,
  condition,
  ContinueAsNew,
  continueAsNew,
  isCancellation,
  patched,
  setHandler,
  workflowInfo,
} from '@temporalio/workflow';
import { PHASE_MODULES } from '../phases';
import type { Phase, PhaseContext } from '../phases/phase';
import { databasesOf } from '../plan/databases';
import { PHASES } from '../plan/schema';
import { withoutScriptText } from '../plan/scripts';
import type { ResolvedPlan } from '../plan/types';
import { Background } from './background';
import { OperatorControl } from './control';
import { F, failure } from './failures';
import {
  initialStatus,
  statusQuery,
  type CarryOver,
  type MigrationInput,
  type MigrationStatus,
  type RunRef,
  type SoakCarry,
} from './messages';
import { Notifier } from './notify';
import { undos } from './profiles';
import { errorMessage, Saga, type SagaEntry, type UndoAction } from './saga';
import { StatusBoard } from './status';

export async function migrationWorkflow(input: MigrationInput): Promise<MigrationStatus> {
  return new Runbook(input).execute();
}

/** Marks histories in which a failed undo holds the rollback for the operator (older ones ended it failed). */
const HOLD_FAILED_UNDO = 'hold-failed-undo';

class Runbook implements PhaseContext {
  /** The plan; once preflight stored its scripts, without their text (plan/scripts.ts). */
  plan: ResolvedPlan;
  readonly run: RunRef;
  readonly board: StatusBoard;
  readonly control: OperatorControl;
  readonly carried: CarryOver | undefined;
  readonly background: Background;
  private readonly saga: Saga;
  /** From the start of a rollback: background work that stopped does not run again. */
  private rollingBack = false;
  private readonly notifier: Notifier;

  constructor(private readonly input: MigrationInput) {
    const info = workflowInfo();
    this.plan = input.plan;
    this.carried = input.carry;
    this.run = { runKey: info.firstExecutionRunId, migration: this.plan.name, workflowId: info.workflowId };
    this.board = new StatusBoard(
      input.carry?.status ?? initialStatus(this.plan.name, info.workflowId, new Date().toISOString(), PHASES),
    );
    this.saga = new Saga((input.carry?.saga as SagaEntry[] | undefined) ?? []);
    this.control = new OperatorControl(this.board, this.plan, input.options, input.carry?.control);
    this.notifier = new Notifier(this.board, this.plan);
    this.board.announcer = (event, message) => this.notifier.send(event, message);
    this.background = new Background(
      (key, err) => {
        // Work that must keep running stopped: hold the migration where it is and tell the operator why.
        this.board.event(`${key} stopped: ${errorMessage(err)}`);
        this.control.pauseWith({ reason: `${key} stopped: ${errorMessage(err)}`, by: 'tidemark' });
        this.board.publish();
      },
      // Once resumed, unless the migration is rolling back meanwhile (its undos stop the background work).
      async () => {
        await condition(() => this.board.status.paused === null || this.rollingBack);
        return !this.rollingBack;
      },
    );
  }

  async execute(): Promise<MigrationStatus> {
    setHandler(statusQuery, () => this.board.status);
    this.control.install();
    const { startedBy, autoApprove, rerun } = this.input.options;
    if (this.carried) this.board.event('continued as a new run (history kept short)');
    else
      this.board.event(
        `started${rerun ? ' again' : ''}${startedBy ? ` by ${startedBy}` : ''}${autoApprove ? ' with auto-approval' : ''}`,
      );
    this.board.publish();
    try {
      await this.control.scope.run(() => this.forward());
    } catch (err) {
      if (err instanceof ContinueAsNew) throw err;
      return this.rollBack(err);
    }
    this.board.setState('completed');
    this.board.status.endedAt = this.board.now();
    this.board.announce('completed', 'completed');
    this.board.publish();
    await this.notifier.drain();
    return this.board.status;
  }

  /** The runbook. */
  private async forward(): Promise<void> {
    if (this.carried) for (const name of PHASES) PHASE_MODULES[name].resume?.(this);
    await this.phase(PHASE_MODULES.preflight);
    // Preflight stored the scripts: from here the plan carries their hashes, not their text.
    this.plan = withoutScriptText(this.plan);
    await this.phase(PHASE_MODULES.backup);
    await this.phase(PHASE_MODULES.schema);
    await this.phase(PHASE_MODULES.copy);
    await this.phase(PHASE_MODULES.validate);
    await this.phase(PHASE_MODULES.traffic);
    await this.phase(PHASE_MODULES.cleanup);
  }

  private async phase(p: Phase): Promise<void> {
    const rec = this.board.phase(p.name);
    // A continued run skips what its predecessors finished and re-enters the phase that was running.
    if (rec.status === 'completed' || rec.status === 'skipped') return;
    if (p.skip(this.plan)) {
      rec.status = 'skipped';
      p.whenSkipped?.(this);
      return;
    }
    if (rec.status !== 'running') {
      await this.control.safePoint();
      if (p.approvalAtStart && this.plan.approvals.includes(p.name)) {
        // Waiting for approval of a phase shows that phase (state waiting-approval), in status and in the Web UI.
        this.board.status.phase = p.name;
        await this.control.requireApproval(p.name);
      }
      rec.status = 'running';
      rec.startedAt = this.board.now();
      this.board.status.phase = p.name;
      this.board.announce('phase-started', `phase ${p.name} started`);
      this.board.publish();
    }
    try {
      rec.result = await p.run(this);
      rec.status = 'completed';
      rec.endedAt = this.board.now();
      this.board.announce('phase-finished', `phase ${p.name} completed`);
    } catch (err) {
      if (err instanceof ContinueAsNew) throw err;
      rec.status = isCancellation(err) ? 'cancelled' : 'failed';
      rec.error = this.reasonFor(err);
      rec.endedAt = this.board.now();
      throw err;
    } finally {
      this.board.publish();
    }
  }

  // ---- what phases use (PhaseContext) ----------------------------------------------------------------------------

  async changeWithUndo<T, U extends UndoAction>(description: string, undo: U, change: () => Promise<T>) {
    const phase = this.board.status.phase!;
    const undoId = this.saga.add(phase, description, undo);
    this.board.status.compensations = this.saga.records();
    return { value: await change(), undoId };
  }

  retire(undoId: string): void {
    this.saga.drop(undoId);
    this.board.status.compensations = this.saga.records();
  }

  async continueAsNew(soak: SoakCarry): Promise<never> {
    // Updates in flight finish first, so nothing an operator sent is lost between runs; notices too. Background work
    // stops here and the next run starts it again (Phase.resume).
    await this.background.stopAll();
    await condition(allHandlersFinished);
    await this.notifier.drain();
    const carry: CarryOver = {
      status: this.board.status,
      saga: this.saga.snapshot(),
      control: this.control.carry(),
      soak,
    };
    return continueAsNew<typeof migrationWorkflow>({ ...this.input, plan: this.plan, carry });
  }

  // ---- rollback ------------------------------------------------------------------------------------------------

  private reasonFor(err: unknown): string {
    const a = this.control.abortRequest;
    if (a) return `aborted${a.by ? ` by ${a.by}` : ''}${a.reason ? `: ${a.reason}` : ''}`;
    if (isCancellation(err)) return 'workflow cancelled';
    return errorMessage(err);
  }

  /**
   * Runs the compensations and ends the migration. An operator's abort is a deliberate end: the workflow completes with
   * its final status (state rolled-back). A rollback the migration decided on (a gate, a failed check, a timeout)
   * fails the workflow with the reason, the status riding along as the failure's details; either way `tidemark
   * status` reads the final status with no worker running.
   */
  private async rollBack(err: unknown): Promise<MigrationStatus> {
    const { board } = this;
    this.rollingBack = true;
    const reason = this.reasonFor(err);
    const changedNothing = !this.saga.pending;
    board.status.error = changedNothing ? `${reason}; nothing was changed` : reason;
    board.status.pendingApproval = null;
    board.status.paused = null;
    board.setState('rolling-back');
    board.announce('rollback', changedNothing ? `stopping: ${reason}` : `rolling back: ${reason}`);
    board.publish();
    const problem = await CancellationScope.nonCancellable(() => this.compensate());
    board.status.compensations = this.saga.records();
    board.status.endedAt = board.now();
    if (problem) {
      board.status.error = `${reason}; ${problem}`;
      board.setState('failed');
      board.announce('failed', `rollback stopped: ${problem}`);
    } else {
      board.setState('rolled-back');
      board.announce('rollback', changedNothing ? 'ended: nothing was changed' : 'rolled back');
    }
    board.publish();
    await CancellationScope.nonCancellable(() => this.notifier.drain());
    if (isCancellation(err) && !this.control.abortRequest) throw err;
    if (this.control.abortRequest && !problem) return board.status;
    const f = failure(problem ? F.RollbackFailed : F.MigrationRolledBack, board.status.error!, board.status);
    // An outcome, not a crash: the Web UI shows the reason without a stack trace of the runbook.
    f.stack = '';
    throw f as ApplicationFailure;
  }

  /** Fences the run, runs the undos newest first, then restores the backup if asked; says what went wrong, if anything. */
  private async compensate(): Promise<string | undefined> {
    if (this.saga.pending) {
      try {
        // From here no forward step of this run can still commit (db/fence.ts): the undos see everything there is.
        // Every database the run writes is fenced (a blue-green migration's target too).
        for (const urlEnv of databasesOf(this.plan)) {
          await undos.fenceRun.executeWithOptions({ summary: 'fence the run: no forward step may commit any more' }, [
            { urlEnv, run: this.run },
          ]);
        }
      } catch (e) {
        return `rollback not started: the run could not be fenced (${errorMessage(e)}); nothing was undone — run tidemark abort again once the database is reachable`;
      }
    }
    const undo = () =>
      this.saga.compensate(
        (e) => PHASE_MODULES[e.record.phase].undo!(this, e.action as never),
        () => this.board.now(),
      );
    let outcome = await undo();
    // An undo that failed (the database refused it: a dependent object, a constraint, a change the other side will
    // not take) holds the rollback for the operator instead of ending it half done: fixed, it runs again.
    while (outcome.failed && patched(HOLD_FAILED_UNDO)) {
      this.board.status.compensations = this.saga.records();
      if (!(await this.control.holdRollback(`${outcome.failed.description} failed (${outcome.failed.error})`))) break;
      this.saga.retryFailed();
      this.board.status.compensations = this.saga.records();
      this.board.event('rollback resumed: the failed undo runs again');
      this.board.publish();
      outcome = await undo();
    }
    if (outcome.failed) {
      const left = outcome.notRun.map((r) => r.description);
      return (
        `rollback stopped: ${outcome.failed.description} failed (${outcome.failed.error}). ` +
        (left.length
          ? `Left alone, because undoing them while this is not undone could do harm: ${left.join('; ')}. `
          : '') +
        'Fix the cause, undo it by hand, then the rest newest first'
      );
    }
    // What waits for the whole saga, newest phase first: the reverse sync stays until the new tables are gone, a
    // backup is reloaded last.
    for (const name of [...PHASES].reverse()) {
      const problem = await PHASE_MODULES[name].afterRollback?.(this);
      if (problem) return problem;
    }
    return undefined;
  }
}
