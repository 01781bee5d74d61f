// Operator control: the update handlers (approve, pause, resume, throttle, promote, abort) with the validators that
// refuse a request before it reaches history, the same messages as signals (validated the same way), and the places the runbook waits for people — safe points, approvals,
// durable waits that promote may end. One method per message, as in Temporal's safe-message-handlers sample.
import { CancellationScope, condition, patched, setHandler, type SignalDefinition } from '@temporalio/workflow';
import { formatDuration } from '../plan/durations';
import type { ResolvedPlan } from '../plan/types';
import { budgetFraction, budgetText } from '../phases/copy/budget';
import { LIMITS, outOfBounds } from './limits';
import { utc } from './readable';
import {
  abortSignal,
  abortUpdate,
  approveSignal,
  approveUpdate,
  pauseSignal,
  pauseUpdate,
  promoteSignal,
  promoteUpdate,
  resumeSignal,
  resumeUpdate,
  TERMINAL_STATES,
  throttleUpdate,
  type AbortRequest,
  type ApproveRequest,
  type CarryOver,
  type MigrationOptions,
  type MigrationState,
  type PauseRequest,
  type PromoteRequest,
  type ResumeRequest,
  type ThrottleRequest,
  type UpdateAck,
} from './messages';
import { cliId, type StatusBoard } from './status';

/** Patch: a pause asked for during an approval wait holds once the approval comes (it let the next change run). */
const HOLD_AFTER_APPROVAL = 'pause-holds-after-approval';
const SIGNAL_INPUT_CHECKED = 'signal-input-checked';
const LATE_APPROVAL = 'approval-after-timeout';

/** Thrown inside the workflow when it must roll back for a reason of its own (a gate, an approval timeout). */
export class RollbackRequested extends Error {}

/** What the copy reads between batches: pause and throttle settings. */
export interface CopyControl {
  paused: boolean;
  reason?: string;
  batchSize?: number;
  delayMs?: number;
  /** The operator's latency budget for the copy, in place of the plan's (a fraction, or 'unlimited'). */
  maxLatencyIncrease?: number | 'unlimited';
}

export class OperatorControl {
  /** The scope of the forward phases: an abort cancels it. */
  readonly scope = new CancellationScope();
  abortRequest: (AbortRequest & { at: string }) | null = null;
  private approvedGate: string | null;
  /** The gate whose approval timed out into a pause: approving it is still accepted, and ends that pause. */
  private timedOut: string | null = null;
  private controlVersion: number;
  private promoteRequested = false;
  private promotable = false;
  /** Why an abort is refused from here on, once the workflow is past its point of no return. */
  private beyondReturn: string | null = null;

  constructor(
    private readonly board: StatusBoard,
    private readonly plan: ResolvedPlan,
    private readonly options: MigrationOptions,
    carried?: CarryOver['control'],
  ) {
    this.approvedGate = carried?.approvedGate ?? null;
    this.controlVersion = carried?.controlVersion ?? 0;
  }

  private get status() {
    return this.board.status;
  }

  carry(): CarryOver['control'] {
    return { approvedGate: this.approvedGate, controlVersion: this.controlVersion };
  }

  // ---- what the phases use -------------------------------------------------------------------------------------

  get isPaused(): boolean {
    return this.status.paused !== null;
  }

  /** Waits here while paused: between phases, steps, jobs and stages. */
  async safePoint(): Promise<void> {
    if (!this.status.paused) return;
    this.board.setState('paused');
    this.board.publish();
    await condition(() => this.status.paused === null);
    this.board.setState('running');
    this.board.publish();
  }

  /** Holds until `gate` is approved (or auto-approved); on timeout rolls back or pauses, as the plan says. */
  async requireApproval(gate: string): Promise<void> {
    if (this.options.autoApprove) {
      this.status.approvals.push({ gate, by: 'auto', at: this.board.now() });
      this.board.event(`${gate} approved automatically`);
      return;
    }
    for (;;) {
      const timeout = this.plan.approvalTimeout;
      this.status.pendingApproval = {
        gate,
        since: this.board.now(),
        timeoutAt: new Date(Date.now() + timeout).toISOString(),
      };
      this.approvedGate = null;
      this.board.setState('waiting-approval');
      this.board.announce(
        'approval-needed',
        `waiting for approval of ${gate}: tidemark approve ${cliId(this.status)} (or signal approve)`,
      );
      this.board.publish();
      const approved = await condition(() => this.approvedGate === gate, timeout, {
        summary: `approval of ${gate} (${this.plan.onApprovalTimeout} when it times out)`,
      });
      this.status.pendingApproval = null;
      if (approved) break;
      const why = `approval of ${gate} timed out after ${formatDuration(timeout)}`;
      if (this.plan.onApprovalTimeout === 'abort') throw new RollbackRequested(why);
      this.pauseWith({ reason: why, by: 'tidemark' });
      // Paused, the gate still takes an approval: the operator who comes back to it approves (which also lifts this
      // pause), or resumes to wait again. Before LATE_APPROVAL the approval was refused: nothing was waiting.
      this.timedOut = patched(LATE_APPROVAL) ? gate : null;
      try {
        await this.safePoint();
      } finally {
        this.timedOut = null;
      }
      if (this.approvedGate === gate) break;
    }
    this.board.setState(this.status.paused ? 'paused' : 'running');
    this.board.publish();
    // A pause asked for while it waited for the approval holds what the approval lets through until resume.
    if (this.status.paused && patched(HOLD_AFTER_APPROVAL)) await this.safePoint();
  }

  pauseWith(req: { reason?: string; by?: string }): void {
    this.status.paused = { reason: req.reason, by: req.by, at: this.board.now() };
    this.controlVersion++;
    if (this.status.state === 'running') this.board.setState('paused');
    this.board.event(`paused${req.by ? ` by ${req.by}` : ''}${req.reason ? `: ${req.reason}` : ''}`);
  }

  /** Bumped by every pause, resume and throttle: the copy pushes its settings to the database when it changes. */
  get version(): number {
    return this.controlVersion;
  }

  copyControl(): CopyControl {
    return {
      paused: this.status.paused !== null,
      reason: this.status.paused?.reason,
      batchSize: this.status.throttle.batchSize,
      delayMs: this.status.throttle.delayMs,
      maxLatencyIncrease: this.status.throttle.maxLatencyIncrease,
    };
  }

  /** A durable wait shown in status; `promotable` lets promote end it early. */
  async hold(what: string, ms: number, promotable: boolean): Promise<void> {
    const until = new Date(Date.now() + ms).toISOString();
    this.status.waitingUntil = { what, until };
    this.board.event(`waiting ${formatDuration(ms)} for ${what} (until ${utc(until)})`);
    this.board.publish();
    try {
      const summary = `${what} until ${utc(until)}`;
      if (promotable) await this.promotableWindow(() => this.untilPromoted(ms, `${summary} (promote ends it)`));
      else await condition(() => false, ms, { summary });
    } finally {
      this.status.waitingUntil = null;
    }
  }

  /** Runs `fn` while promote is accepted (a soak, a cleanup delay); promote requests before it are forgotten. */
  async promotableWindow<T>(fn: () => Promise<T>): Promise<T> {
    this.promoteRequested = false;
    this.promotable = true;
    try {
      return await fn();
    } finally {
      this.promotable = false;
    }
  }

  /** Waits up to `ms` (its timer shown in the Web UI as `summary`); true when promote ended the wait. Only inside promotableWindow. */
  untilPromoted(ms: number, summary: string): Promise<boolean> {
    return condition(() => this.promoteRequested, Math.max(1, ms), { summary });
  }

  get promoted(): boolean {
    return this.promoteRequested;
  }

  /** From here on an abort is refused, saying `why`: what is about to run cannot be undone (dropping archived tables). */
  passPointOfNoReturn(why = 'the archived tables are being dropped: there is no way back any more'): void {
    this.beyondReturn = why;
  }

  // ---- messages ------------------------------------------------------------------------------------------------

  install(): void {
    setHandler(approveUpdate, (req) => this.approve(req), { validator: (req) => this.validateApprove(req) });
    setHandler(pauseUpdate, (req) => this.pause(req), { validator: (_req) => this.validatePause() });
    setHandler(resumeUpdate, (req) => this.resume(req), { validator: (_req) => this.validateResume() });
    setHandler(throttleUpdate, (req) => this.throttle(req), { validator: (req) => this.validateThrottle(req) });
    setHandler(promoteUpdate, (req) => this.promote(req), { validator: (_req) => this.validatePromote() });
    setHandler(abortUpdate, (req) => this.abort(req), { validator: (req) => this.validateAbort(req) });
    this.onSignal(
      approveSignal,
      'approve what waits for approval; input (optional): {"by": "…", "comment": "…"}',
      (req) => this.validateApprove(req),
      (req) => this.approve(req),
    );
    this.onSignal(
      pauseSignal,
      'hold at the next safe point; input (optional): {"by": "…", "reason": "…"}',
      () => this.validatePause(),
      (req) => this.pause(req),
    );
    this.onSignal(
      resumeSignal,
      'go on after a pause',
      () => this.validateResume(),
      (req) => this.resume(req),
    );
    this.onSignal(
      promoteSignal,
      'end the current soak or cleanup delay early',
      () => this.validatePromote(),
      (req) => this.promote(req),
    );
    this.onSignal(
      abortSignal,
      'roll back; input (optional): {"by": "…", "reason": "…", "restoreBackup": false}',
      (req) => this.validateAbort(req),
      (req) => this.abort(req),
    );
  }

  /**
   * A signal does what the update of the same name does, after the same validation. A signal cannot be refused to its
   * sender, so one the update would reject is recorded in the events and ignored. Its argument is optional, and
   * anything but an object (a bare string typed into the Web UI) counts as none.
   */
  private onSignal<R extends { by?: string }>(
    def: SignalDefinition<[R?]>,
    description: string,
    validate: (req: R) => void,
    apply: (req: R) => UpdateAck,
  ): void {
    setHandler(
      def,
      (arg?: R) => {
        const req = { by: 'signal', ...(arg && typeof arg === 'object' ? arg : {}) } as R;
        try {
          // An input that is not an object says nothing an operator meant (a bare string in the Web UI's input box):
          // ignored, as a request an update would refuse (before SIGNAL_INPUT_CHECKED it counted as one with no fields).
          const shapeless = arg !== undefined && arg !== null && (typeof arg !== 'object' || Array.isArray(arg));
          if (shapeless && patched(SIGNAL_INPUT_CHECKED)) {
            throw new Error(`its input must be a JSON object or empty, got ${JSON.stringify(arg).slice(0, 60)}`);
          }
          validate(req);
        } catch (e) {
          this.board.event(
            `${def.name} signal${req.by !== 'signal' ? ` from ${req.by}` : ''} ignored: ${(e as Error).message}`,
          );
          this.board.publish();
          return;
        }
        apply(req);
        this.board.publish();
      },
      { description },
    );
  }

  /** `state`: what the migration is now heading to, when the update changes it (approve → running, abort → rolling-back). */
  private ack(message: string, state: MigrationState = this.status.state): UpdateAck {
    return { accepted: true, state, message };
  }

  private rejectIfFinished(): void {
    if (TERMINAL_STATES.includes(this.status.state)) throw new Error(`the migration is already ${this.status.state}`);
    if (this.status.state === 'rolling-back') throw new Error('the migration is rolling back');
  }

  private validateApprove(req: ApproveRequest): void {
    this.rejectIfFinished();
    const pending = this.status.pendingApproval?.gate ?? this.timedOut;
    if (!pending) throw new Error('nothing is waiting for approval');
    if (req.gate && req.gate !== pending) {
      throw new Error(`${req.gate} is not waiting for approval (${pending} is)`);
    }
  }

  private approve(req: ApproveRequest): UpdateAck {
    const gate = this.status.pendingApproval?.gate ?? this.timedOut!;
    this.approvedGate = gate;
    this.status.approvals.push({ gate, by: req.by ?? 'unknown', comment: req.comment, at: this.board.now() });
    const late = this.timedOut === gate && this.status.paused?.by === 'tidemark';
    this.board.event(
      `${gate} approved by ${req.by ?? 'unknown'}${req.comment ? `: ${req.comment}` : ''}${late ? ' after its approval timed out: resuming' : ''}`,
    );
    if (late) {
      this.status.paused = null;
      this.controlVersion++;
    }
    return this.ack(`approved ${gate}`, this.status.paused ? 'paused' : 'running');
  }

  private validatePause(): void {
    this.rejectIfFinished();
    if (this.status.paused) throw new Error('the migration is already paused');
  }

  private pause(req: PauseRequest): UpdateAck {
    this.pauseWith(req);
    this.board.publish();
    return this.ack('pausing at the next safe point');
  }

  private validateResume(): void {
    this.rejectIfFinished();
    if (!this.status.paused) throw new Error('the migration is not paused');
  }

  private resume(req: ResumeRequest): UpdateAck {
    this.status.paused = null;
    this.controlVersion++;
    if (this.status.state === 'paused') this.board.setState('running');
    this.board.event(`resumed${req.by ? ` by ${req.by}` : ''}`);
    this.board.publish();
    return this.ack('resumed');
  }

  private validateThrottle(req: ThrottleRequest): void {
    this.rejectIfFinished();
    if (req.batchSize === undefined && req.delayMs === undefined && req.maxLatencyIncrease === undefined)
      throw new Error('give a batch size, a delay or a latency budget');
    const budget = req.maxLatencyIncrease;
    const bad =
      (req.batchSize != null ? outOfBounds('batch size', req.batchSize, LIMITS.batchSize) : undefined) ??
      (req.delayMs !== undefined ? outOfBounds('delay', req.delayMs, LIMITS.delayMs, ' ms') : undefined) ??
      (budget != null && budget !== 'unlimited' && !(typeof budget === 'number' && budget >= 0.01 && budget <= 10)
        ? `latency budget ${String(budget)} must be between 0.01 and 10 (1% and 1000%), or 'unlimited'`
        : undefined);
    if (bad) throw new Error(bad);
  }

  private throttle(req: ThrottleRequest): UpdateAck {
    const t = this.status.throttle;
    if (req.batchSize === null) delete t.batchSize;
    else if (req.batchSize !== undefined) t.batchSize = req.batchSize;
    if (req.delayMs !== undefined) t.delayMs = req.delayMs;
    if (req.maxLatencyIncrease === null) delete t.maxLatencyIncrease;
    else if (req.maxLatencyIncrease !== undefined) t.maxLatencyIncrease = req.maxLatencyIncrease;
    this.controlVersion++;
    // The budget is named once an operator has set one (or just gave the plan's back).
    const budget =
      t.maxLatencyIncrease !== undefined
        ? `, latency budget ${budgetText(budgetFraction(t.maxLatencyIncrease))}`
        : req.maxLatencyIncrease === null
          ? ", the plan's latency budget"
          : '';
    const now = `batch size ${t.batchSize ?? 'adaptive'}, delay ${t.delayMs ?? 0}ms${budget}`;
    this.board.event(`throttle set${req.by ? ` by ${req.by}` : ''}: ${now}`);
    // Accepted (a setting, harmless), but said: nothing is left for it to slow down.
    const copy = this.status.phases.find((p) => p.name === 'copy')?.status;
    const over = copy === 'completed' || copy === 'skipped' ? ' (the copy is over: this changes nothing now)' : '';
    return this.ack(`${now}${over}`);
  }

  private validatePromote(): void {
    this.rejectIfFinished();
    if (this.promotable) return;
    const waiting = this.status.waitingUntil;
    if (waiting) throw new Error(`the wait for ${waiting.what} cannot be ended early`);
    throw new Error('no soak or delay is in progress');
  }

  private promote(req: PromoteRequest): UpdateAck {
    this.promoteRequested = true;
    this.board.event(`promoted${req.by ? ` by ${req.by}` : ''}`);
    const waiting = this.status.waitingUntil;
    return this.ack(waiting && !this.status.traffic?.soakEndsAt ? `${waiting.what}: ended early` : 'soak ended early');
  }

  /** A rollback held on a failed undo (holdRollback): whether the operator gave up on it. */
  private heldRollback: { gaveUp: boolean } | null = null;

  /**
   * Holds a rollback whose undo failed, paused, until the operator either fixes the cause and resumes (true: run it
   * again) or aborts once more (false: the rest is left to be undone by hand, and the migration fails).
   */
  async holdRollback(problem: string): Promise<boolean> {
    const held = (this.heldRollback = { gaveUp: false });
    this.status.paused = {
      reason:
        `rollback held: ${problem}. Fix the cause, then resume to try it again ` +
        `(or abort again to leave the rest to be undone by hand)`,
      by: 'tidemark',
      at: this.board.now(),
      rollbackHeld: true,
    };
    this.controlVersion++;
    this.board.setState('paused');
    this.board.announce('rollback', this.status.paused.reason!);
    this.board.publish();
    await condition(() => this.status.paused === null || held.gaveUp);
    this.heldRollback = null;
    this.status.paused = null;
    this.board.setState('rolling-back');
    this.board.publish();
    return !held.gaveUp;
  }

  private validateAbort(req: AbortRequest): void {
    if (this.heldRollback) return;
    this.rejectIfFinished();
    if (this.abortRequest) throw new Error('an abort is already under way');
    if (this.beyondReturn) throw new Error(this.beyondReturn);
    if (req.restoreBackup && !this.plan.backup.enabled) throw new Error('this plan makes no backup to restore');
  }

  private abort(req: AbortRequest): UpdateAck {
    if (this.heldRollback) {
      this.heldRollback.gaveUp = true;
      this.board.event(
        `abort requested${req.by ? ` by ${req.by}` : ''}: the rest of the rollback is left to an operator`,
      );
      return this.ack('leaving the rest of the rollback to be undone by hand', 'failed');
    }
    this.abortRequest = { ...req, at: this.board.now() };
    this.board.event(`abort requested${req.by ? ` by ${req.by}` : ''}${req.reason ? `: ${req.reason}` : ''}`);
    this.scope.cancel();
    return this.ack('rolling back', 'rolling-back');
  }
}
