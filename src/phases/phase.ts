// The contract every phase keeps (workflow side). A phase is a module under src/phases/<name>/: `workflow.ts`
// orchestrates it (what it runs, the undo it registers, what it shows in status) and `activities.ts` does its I/O,
// forward steps and their undos side by side — the way pgroll keeps an operation's Start and Rollback in one file.
import type { Background } from '../migration/background';
import type { OperatorControl } from '../migration/control';
import type { CarryOver, RunRef, SoakCarry } from '../migration/messages';
import type { UndoAction } from '../migration/saga';
import type { StatusBoard } from '../migration/status';
import type { PhaseName, ResolvedPlan } from '../plan/types';

/** What the runbook gives a phase. */
export interface PhaseContext {
  readonly plan: ResolvedPlan;
  /** The run this migration's bookkeeping rows and fence are keyed by. */
  readonly run: RunRef;
  /** Status, events, Web UI columns. */
  readonly board: StatusBoard;
  /** Safe points, approvals, durable waits, pause and throttle settings. */
  readonly control: OperatorControl;
  /** What the previous run of this workflow's chain carried over, when it continued as new in the middle of a phase. */
  readonly carried: CarryOver | undefined;
  /**
   * Makes a change whose undo is registered first: an abort can land while `change` runs, and the rollback must then
   * undo whatever it left — so every undo is correct whether its change never ran, stopped half-way or committed.
   * Returns the undo's id (to retire it with `retire` once the change can no longer be undone).
   */
  changeWithUndo<T, U extends UndoAction>(
    description: string,
    undo: U,
    change: () => Promise<T>,
  ): Promise<{ value: T; undoId: string }>;
  /** Retires an undo whose objects are gone for good. */
  retire(undoId: string): void;
  /** Work running beside the phases until stopped (blue-green appliers); stopped before a continue-as-new. */
  readonly background: Background;
  /** Ends this run and continues as a new one, handing `soak` to the phase that resumes there. */
  continueAsNew(soak: SoakCarry): Promise<never>;
}

export interface Phase<U extends UndoAction = UndoAction> {
  readonly name: PhaseName;
  /** True when the plan gives this phase nothing to do. */
  skip(plan: ResolvedPlan): boolean;
  /** Whether an approval listed for this phase is asked for before it starts (cleanup asks after its delay). */
  readonly approvalAtStart: boolean;
  /** Says in the log what skipping the phase means, when that is worth saying. */
  whenSkipped?(ctx: PhaseContext): void;
  /**
   * In a run that continued as new: restarts what this phase had running in the background (called before the
   * phases, whether this one finished or not).
   */
  resume?(ctx: PhaseContext): void;
  /** The forward step; its result is kept in the phase's status record. */
  run(ctx: PhaseContext): Promise<unknown>;
  /** Undoes one change this phase registered; a note for the compensation record, if any. */
  undo?(ctx: PhaseContext, action: U): Promise<string | void>;
  /**
   * Runs once every undo of a rollback has succeeded (phases newest first): what must wait until the whole saga is
   * done. Returns what went wrong, if anything (the migration then ends failed).
   */
  afterRollback?(ctx: PhaseContext): Promise<string | undefined>;
}
