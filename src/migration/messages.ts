// Every message the migration workflow understands, defined once and imported by the workflow, the client and tests.
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { StepState } from '../plan/ledger';
import type { NotifyEvent, PhaseName, ResolvedPlan } from '../plan/types';

export const WORKFLOW_TYPE = 'migrationWorkflow';
/** Reverts a completed migration (`tidemark revert`), as its own workflow. */
export const REVERT_WORKFLOW_TYPE = 'revertWorkflow';
/** Reads the ledger on a worker, where the connection strings are (`tidemark history`). */
export const LEDGER_WORKFLOW_TYPE = 'ledgerWorkflow';
export const DEFAULT_TASK_QUEUE = 'tidemark';
export const workflowIdFor = (planName: string): string => `tidemark-${planName}`;
/** Plan names never start with `revert-` (plan/schema.ts), so this cannot be another plan's migration id. */
export const revertWorkflowIdFor = (planName: string): string => `tidemark-revert-${planName}`;

export type MigrationState =
  'running' | 'paused' | 'waiting-approval' | 'rolling-back' | 'rolled-back' | 'completed' | 'failed';

export const TERMINAL_STATES: readonly MigrationState[] = ['completed', 'rolled-back', 'failed'];

export interface MigrationOptions {
  /** Grant every approval automatically (recorded as approved by "auto"). */
  autoApprove: boolean;
  /** Who started the run (free text, shown in status). */
  startedBy?: string;
  /** Started again after an earlier run completed (`start --rerun`): steps the ledger holds are not applied again. */
  rerun?: boolean;
}

export interface MigrationInput {
  plan: ResolvedPlan;
  options: MigrationOptions;
  /** Set by the workflow itself when it continues as new (long gated soaks): where it was and what it had done. */
  carry?: CarryOver;
}

export interface RevertOptions extends MigrationOptions {
  /** Revert even though writes made on the new path since the sync was removed would be lost. */
  discardNewWrites?: boolean;
}

export interface RevertInput {
  plan: ResolvedPlan;
  options: RevertOptions;
}

export interface LedgerInput {
  urlEnv: string;
  /** One plan's steps; every plan's when omitted. */
  migration?: string;
}

/** The run a step works for: its bookkeeping rows and its fence (db/fence.ts) are keyed by `runKey`. */
export interface RunRef {
  /** The first run of the workflow's chain: stable across continue-as-new. */
  runKey: string;
  migration: string;
  workflowId: string;
}

/** The soak in progress: stage, when it ends (epoch ms), consecutive breaches and next reading per gate. */
export interface SoakCarry {
  stageIndex: number;
  endsAt: number;
  breaches: Record<string, number>;
  due: Record<string, number>;
}

/** Everything a run hands to the next one when it continues as new. Plain JSON. */
export interface CarryOver {
  status: MigrationStatus;
  saga: { record: CompensationRecord; action: unknown }[];
  control: { approvedGate: string | null; controlVersion: number };
  /** State of the phase that was running, for it to pick up where it was. */
  soak?: SoakCarry;
}

export type PhaseStatus = 'pending' | 'running' | 'completed' | 'failed' | 'skipped' | 'cancelled';

export interface PhaseRecord {
  name: PhaseName;
  status: PhaseStatus;
  startedAt?: string;
  endedAt?: string;
  result?: unknown;
  error?: string;
}

export interface CopyJobProgress {
  job: string;
  rowsCopied: number;
  estimatedTotal: number;
  rowsPerSecond: number;
  etaSeconds: number | null;
  batchSize: number;
  ranges: number;
  rangesDone: number;
  throttleReason: string | null;
  /**
   * While the copy shares the server with the application: the share of the time its latency budget lets it work, and
   * the increase of the probe's latency it measured while copying (0.1: 10 % slower than quiet).
   */
  duty?: number;
  latencyIncrease?: number;
  /** Lock timeouts and deadlocks the copy met and backed off from, and the last one. */
  lockConflicts: number;
  lastLockConflict: string | null;
  paused: boolean;
  /**
   * Once every range is copied, before the settle pass: the transactions it waits for (open since before the last
   * batch), while any is open.
   */
  waitingFor?: string | null;
  done: boolean;
}

export interface GateReading {
  gate: string;
  value: number | null;
  ok: boolean | null;
  error?: string;
  at: string;
  consecutiveBreaches: number;
}

export interface TrafficStatus {
  flag: string;
  percent: number;
  stageIndex: number | null;
  stages: { percent: number; soakMs: number; approval: boolean }[];
  soakEndsAt: string | null;
  gates: GateReading[];
}

export interface PendingApproval {
  /** What waits: a phase name or `traffic:<percent>%`. */
  gate: string;
  since: string;
  timeoutAt: string;
}

export interface ApprovalRecord {
  gate: string;
  by: string;
  comment?: string;
  at: string;
}

export interface CompensationRecord {
  id: string;
  phase: PhaseName;
  description: string;
  /** not-run: left alone because a newer compensation failed (running it could do harm); dropped: no longer possible. */
  status: 'registered' | 'running' | 'done' | 'failed' | 'not-run' | 'dropped';
  error?: string;
  at?: string;
}

export interface ValidationCheckResult {
  check: string;
  kind: 'rowCount' | 'checksum' | 'sql' | 'orphans';
  ok: boolean;
  message: string;
  details?: unknown;
}

export interface ValidationReport {
  ok: boolean;
  checks: ValidationCheckResult[];
  at: string;
}

/** One notice sent to one `notify` target, and how its delivery went. */
export interface NotificationRecord {
  event: NotifyEvent;
  /** The environment variable naming the target (never its URL). */
  target: string;
  state: 'sending' | 'sent' | 'failed';
  at: string;
  error?: string;
}

export interface MigrationStatus {
  plan: string;
  /** A migration, or the revert of one (revertWorkflow); missing means migration. */
  kind?: 'migration' | 'revert';
  workflowId: string;
  state: MigrationState;
  phase: PhaseName | null;
  startedAt: string;
  updatedAt: string;
  endedAt?: string;
  phases: PhaseRecord[];
  copy: CopyJobProgress[];
  /**
   * The operator's throttle settings: a fixed batch size, a delay between batches, and a latency budget in place of
   * the plan's (`impact.maxLatencyIncrease`: a fraction, or 'unlimited').
   */
  throttle: { batchSize?: number; delayMs?: number; maxLatencyIncrease?: number | 'unlimited' };
  traffic: TrafficStatus | null;
  pendingApproval: PendingApproval | null;
  approvals: ApprovalRecord[];
  /** Why the migration is paused; `rollbackHeld`: a rollback waits on a failed undo (resume retries it, abort gives up). */
  paused: { reason?: string; by?: string; at: string; rollbackHeld?: boolean } | null;
  validation: ValidationReport | null;
  backup: unknown;
  compensations: CompensationRecord[];
  /** Why the migration is rolling back or failed. */
  error: string | null;
  /** What the ledger says about each step of the plan (after preflight): applied, pending, reverted, drifted. */
  steps?: StepState[];
  /** Waiting for a durable timer (cleanup delay, drop delay), if any. */
  waitingUntil: { what: string; until: string } | null;
  /** The newest notices sent to the plan's `notify` targets (LIMITS.statusEvents), with their delivery outcome. */
  notifications?: NotificationRecord[];
  /**
   * Blue-green: each direction of each job's change capture — applying while it runs (live lag and counts come from
   * the applier's heartbeat), finished once cleanup or a rollback ended it.
   */
  replication?: ReplicationStatus[];
  /** The newest events (LIMITS.statusEvents); `seq` counts from 1 over the whole migration, so a reader can tell what is new. */
  events: { seq: number; at: string; message: string }[];
}

export interface ReplicationStatus {
  job: string;
  direction: 'forward' | 'reverse';
  state: 'applying' | 'stopped' | 'finished';
  /**
   * Why the applier stopped on its own (the migration is then paused): its changes wait in the log, and the lag read
   * before it stopped is no longer current.
   */
  error?: string;
  /** Changes applied (live, from the applier's heartbeat, in `tidemark status`). */
  applied?: number;
  /** Changes logged and not applied yet, and the age of the oldest (seconds). */
  lagRows?: number;
  lagSeconds?: number;
  /**
   * Captured by logical decoding (while the copy runs): WAL the replication slot still holds, not yet logged. Its age is
   * part of lagSeconds.
   */
  slotBytes?: number;
  /** Batches that waited and went in again: a row the application held, or a referenced row not applied yet. */
  conflicts?: number;
  /** What the applier's current batch waits for, while it waits. */
  waiting?: string;
}

export interface ApproveRequest {
  by?: string;
  comment?: string;
  /** Optional: the gate being approved; rejected if it is not the one pending. */
  gate?: string;
}
export interface PauseRequest {
  by?: string;
  reason?: string;
}
export interface ResumeRequest {
  by?: string;
}
export interface AbortRequest {
  by?: string;
  reason?: string;
  /** After compensations, restore the backed-up tables from the backup dump. */
  restoreBackup?: boolean;
}
export interface ThrottleRequest {
  by?: string;
  /** A fixed batch size; null goes back to the adaptive size. */
  batchSize?: number | null;
  delayMs?: number;
  /** The copy's latency budget in place of the plan's: a fraction (0.5: +50 %) or 'unlimited'; null goes back to it. */
  maxLatencyIncrease?: number | 'unlimited' | null;
}
export interface PromoteRequest {
  by?: string;
}
export interface UpdateAck {
  accepted: true;
  state: MigrationState;
  message: string;
}

/** A migration's status before anything has happened: every phase pending, nothing copied, no flag. */
export function initialStatus(
  plan: string,
  workflowId: string,
  at: string,
  phases: readonly PhaseName[],
): MigrationStatus {
  return {
    plan,
    workflowId,
    state: 'running',
    phase: null,
    startedAt: at,
    updatedAt: at,
    phases: phases.map((name) => ({ name, status: 'pending' })),
    copy: [],
    throttle: {},
    traffic: null,
    pendingApproval: null,
    approvals: [],
    paused: null,
    validation: null,
    backup: null,
    compensations: [],
    error: null,
    waitingUntil: null,
    notifications: [],
    events: [],
  };
}

export const approveUpdate = defineUpdate<UpdateAck, [ApproveRequest]>('approve');
export const pauseUpdate = defineUpdate<UpdateAck, [PauseRequest]>('pause');
export const resumeUpdate = defineUpdate<UpdateAck, [ResumeRequest]>('resume');
export const abortUpdate = defineUpdate<UpdateAck, [AbortRequest]>('abort');
export const throttleUpdate = defineUpdate<UpdateAck, [ThrottleRequest]>('throttle');
export const promoteUpdate = defineUpdate<UpdateAck, [PromoteRequest]>('promote');
export const statusQuery = defineQuery<MigrationStatus>('status');

// The same operator messages as signals (the Web UI's "Send a Signal", `temporal workflow signal`): same names, same
// arguments, same validation — a signal an update would refuse is recorded in the events and otherwise ignored.
export const approveSignal = defineSignal<[ApproveRequest?]>('approve');
export const pauseSignal = defineSignal<[PauseRequest?]>('pause');
export const resumeSignal = defineSignal<[ResumeRequest?]>('resume');
export const promoteSignal = defineSignal<[PromoteRequest?]>('promote');
export const abortSignal = defineSignal<[AbortRequest?]>('abort');
