// Typed start/approve/pause/abort/status over @temporalio/client: what the CLI, the demo and the tests use.
import {
  Client,
  Connection,
  WorkflowNotFoundError,
  WorkflowUpdateFailedError,
  type WorkflowHandle,
} from '@temporalio/client';
import {
  ApplicationFailure,
  defaultPayloadConverter,
  WorkflowExecutionAlreadyStartedError,
  type UpdateDefinition,
} from '@temporalio/common';
import { planDetails, planSummary } from './plan/summary';
import type { LedgerRow } from './plan/ledger';
import type { ResolvedPlan } from './plan/types';
import {
  abortSignal,
  abortUpdate,
  approveUpdate,
  DEFAULT_TASK_QUEUE,
  LEDGER_WORKFLOW_TYPE,
  pauseUpdate,
  REVERT_WORKFLOW_TYPE,
  revertWorkflowIdFor,
  promoteUpdate,
  resumeUpdate,
  statusQuery,
  TERMINAL_STATES,
  throttleUpdate,
  workflowIdFor,
  WORKFLOW_TYPE,
  type AbortRequest,
  type ApproveRequest,
  type LedgerInput,
  type MigrationInput,
  type MigrationOptions,
  type RevertInput,
  type RevertOptions,
  type MigrationStatus,
  type PauseRequest,
  type PromoteRequest,
  type ResumeRequest,
  type ThrottleRequest,
  type UpdateAck,
} from './migration/messages';
import { TidemarkPhase, TidemarkPlan, TidemarkState } from './migration/search-attributes';

/** No migration with that plan name or workflow id (exit code 3). */
export class MigrationNotFoundError extends Error {
  constructor(public readonly id: string) {
    super(`no migration "${id}" (looked for workflow ${toWorkflowId(id)})`);
    this.name = 'MigrationNotFoundError';
  }
}

/**
 * A workflow's input travels as one payload, and Temporal refuses payloads over its blob size limit (2 MiB by
 * default): a plan whose SQL does not fit is refused before it reaches the server, saying so.
 */
export const MAX_INPUT_BYTES = 1_900_000;

export class PlanTooLargeError extends Error {
  constructor(plan: string, bytes: number) {
    const mb = (n: number) => `${(n / 1_048_576).toFixed(1)} MB`;
    super(
      `plan ${plan} with its SQL files is ${mb(bytes)}; a workflow's input holds at most ${mb(MAX_INPUT_BYTES)} ` +
        "(Temporal's payload limit, limit.blobSize.error): move bulk data loads out of the schema steps (COPY from a " +
        'file, or a copy job) or split the migration into several plans',
    );
    this.name = 'PlanTooLargeError';
  }
}

/** The workflow (or the server, for a second start) refused the request (exit code 4). */
export class RejectedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RejectedError';
  }
}

/** No worker polls the task queue, so nothing would answer a request (exit code 1: the operation failed). */
export class NoWorkerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NoWorkerError';
  }
}

export interface ClientOptions {
  address?: string;
  namespace?: string;
  taskQueue?: string;
}

export interface MigrationSummary {
  /** A migration, or the revert of one. */
  kind: 'migration' | 'revert';
  workflowId: string;
  runId: string;
  plan: string;
  phase: string | null;
  state: string | null;
  status: string;
  startTime: string;
  closeTime: string | null;
}

/** Live progress of running activities, read from their last heartbeat. */
export interface LiveProgress {
  activity: string;
  attempt: number;
  details: unknown;
  /** Why the previous attempt failed (a lock timeout, a lost connection), while a later one runs or waits to. */
  lastFailure?: string;
}

export function toWorkflowId(id: string): string {
  return id.startsWith('tidemark-') ? id : workflowIdFor(id);
}

export class TidemarkClient {
  private constructor(
    readonly client: Client,
    private readonly connection: Connection,
    readonly taskQueue: string,
    readonly address: string,
    readonly namespace: string,
  ) {}

  static async connect(opts: ClientOptions = {}): Promise<TidemarkClient> {
    const address = opts.address ?? process.env.TEMPORAL_ADDRESS ?? 'localhost:7233';
    const namespace = opts.namespace ?? process.env.TEMPORAL_NAMESPACE ?? 'default';
    let connection: Connection;
    try {
      // connect() waits for the channel and asks the server for its system info: a server that answers is up.
      connection = await Connection.connect({ address, connectTimeout: 5000 });
    } catch (e) {
      throw new Error(
        `cannot reach Temporal at ${address} (${(e as Error).message.split('\n')[0]}); start one with \`tidemark dev\` or set TEMPORAL_ADDRESS`,
        { cause: e },
      );
    }
    const client = new Client({ connection, namespace });
    return new TidemarkClient(
      client,
      connection,
      opts.taskQueue ?? process.env.TIDEMARK_TASK_QUEUE ?? DEFAULT_TASK_QUEUE,
      address,
      namespace,
    );
  }

  async close(): Promise<void> {
    await this.connection.close();
  }

  /** A workflow's description, or undefined when the server knows no workflow of that id. */
  private async describeOrNone(workflowId: string) {
    try {
      return await this.client.workflow.getHandle(workflowId).describe();
    } catch (e) {
      if (e instanceof WorkflowNotFoundError) return undefined;
      throw e;
    }
  }

  /**
   * Starts a migration. Refused while one of the same plan runs or is being reverted, and — unless `rerun` — when the
   * plan's last run completed and was not reverted since: a completed plan is not started again by accident.
   */
  async start(plan: ResolvedPlan, options: MigrationOptions): Promise<{ workflowId: string; runId: string }> {
    const workflowId = workflowIdFor(plan.name);
    const bytes = Buffer.byteLength(JSON.stringify({ plan, options }));
    if (bytes > MAX_INPUT_BYTES) throw new PlanTooLargeError(plan.name, bytes);
    const [prior, revert] = await Promise.all([
      this.describeOrNone(workflowId),
      this.describeOrNone(revertWorkflowIdFor(plan.name)),
    ]);
    if (revert?.status.name === 'RUNNING') {
      throw new RejectedError(
        `migration ${plan.name} is being reverted (${revert.workflowId}); wait for the revert to end`,
      );
    }
    const revertedSince =
      revert?.status.name === 'COMPLETED' &&
      !!prior?.closeTime &&
      !!revert.closeTime &&
      revert.closeTime > prior.closeTime;
    // A rolled-back (or failed) migration's workflow completes too: its last state, kept in a search attribute, says
    // whether it completed as a migration (runs from before the attribute count as completed).
    const priorState = prior?.typedSearchAttributes.get(TidemarkState);
    const completed = prior?.status.name === 'COMPLETED' && (priorState === undefined || priorState === 'completed');
    if (completed && !revertedSince && !options.rerun) {
      const same = (prior.memo as { planSha256?: string } | undefined)?.planSha256 === plan.source.sha256;
      throw new RejectedError(
        `migration ${plan.name} already completed at ${prior.closeTime?.toISOString()} (${workflowId}); ` +
          (same
            ? 'this is the same plan file, so a re-run would apply nothing. '
            : 'the plan file has changed since: a re-run applies only the steps the ledger does not hold. ') +
          `Start it again with --rerun, or undo it with tidemark revert ${plan.name}`,
      );
    }
    // Said in the migration's events only when it does run again after a completed run.
    const { rerun, ...rest } = options;
    const again = rerun && completed && !revertedSince;
    const input: MigrationInput = { plan, options: again ? { ...rest, rerun: true } : rest };
    try {
      const handle = await this.client.workflow.start(WORKFLOW_TYPE, {
        taskQueue: this.taskQueue,
        workflowId,
        args: [input],
        typedSearchAttributes: [
          { key: TidemarkPlan, value: plan.name },
          { key: TidemarkPhase, value: 'pending' },
          { key: TidemarkState, value: 'running' },
        ],
        memo: { plan: plan.name, planSha256: plan.source.sha256 },
        staticSummary: planSummary(plan),
        staticDetails: planDetails(plan),
      });
      return { workflowId, runId: handle.firstExecutionRunId };
    } catch (e) {
      if (e instanceof WorkflowExecutionAlreadyStartedError) {
        throw new RejectedError(
          `migration ${plan.name} is already running (${workflowId}); abort it or wait for it to finish`,
        );
      }
      throw e;
    }
  }

  /** Starts the revert of a completed migration (its own workflow); refused while the migration or a revert runs. */
  async revert(plan: ResolvedPlan, options: RevertOptions): Promise<{ workflowId: string; runId: string }> {
    const workflowId = revertWorkflowIdFor(plan.name);
    const migration = await this.describeOrNone(workflowIdFor(plan.name));
    if (migration?.status.name === 'RUNNING') {
      throw new RejectedError(
        `migration ${plan.name} is still running: abort it instead (tidemark abort ${plan.name}); revert undoes completed migrations`,
      );
    }
    const input: RevertInput = { plan, options };
    const bytes = Buffer.byteLength(JSON.stringify(input));
    if (bytes > MAX_INPUT_BYTES) throw new PlanTooLargeError(plan.name, bytes);
    try {
      const handle = await this.client.workflow.start(REVERT_WORKFLOW_TYPE, {
        taskQueue: this.taskQueue,
        workflowId,
        args: [input],
        typedSearchAttributes: [
          { key: TidemarkPlan, value: plan.name },
          { key: TidemarkPhase, value: 'pending' },
          { key: TidemarkState, value: 'running' },
        ],
        memo: { plan: plan.name, planSha256: plan.source.sha256, revert: true },
        staticSummary: `revert of ${planSummary(plan)}`,
        staticDetails: planDetails(plan),
      });
      return { workflowId, runId: handle.firstExecutionRunId };
    } catch (e) {
      if (e instanceof WorkflowExecutionAlreadyStartedError) {
        throw new RejectedError(`a revert of ${plan.name} is already running (${workflowId})`);
      }
      throw e;
    }
  }

  /**
   * The plan a migration (or revert) ran, from its newest run's start event: the audit record of exactly what ran.
   * A run continued as new carries its scripts' hashes only; they are in the database's tidemark.scripts.
   */
  async planOf(id: string): Promise<ResolvedPlan> {
    const h = this.client.workflow.getHandle(toWorkflowId(id));
    let history;
    try {
      history = await h.fetchHistory();
    } catch (e) {
      if (e instanceof WorkflowNotFoundError) throw new MigrationNotFoundError(id);
      throw e;
    }
    const payload = history.events?.[0]?.workflowExecutionStartedEventAttributes?.input?.payloads?.[0];
    const input = payload ? (defaultPayloadConverter.fromPayload(payload) as { plan?: ResolvedPlan }) : undefined;
    if (!input?.plan) throw new MigrationNotFoundError(id);
    return input.plan;
  }

  /**
   * Reads the ledger through a worker (which holds the connection strings), in a short-lived workflow whose one
   * activity reads tidemark.history.
   */
  async readLedger(input: LedgerInput): Promise<LedgerRow[]> {
    if (!(await this.hasWorkers())) {
      throw new Error(
        `no worker polls task queue "${this.taskQueue}" to read the ledger (start one: tidemark worker), or set ${input.urlEnv} here to read it directly`,
      );
    }
    try {
      return await this.client.workflow.execute(LEDGER_WORKFLOW_TYPE, {
        taskQueue: this.taskQueue,
        workflowId: `tidemark-ledger-${input.migration ?? 'all'}-${Date.now().toString(36)}`,
        args: [input],
        workflowExecutionTimeout: '2m',
      });
    } catch (e) {
      const cause = (e as { cause?: { cause?: Error; message?: string } }).cause;
      throw new Error(`cannot read the ledger: ${cause?.cause?.message ?? cause?.message ?? (e as Error).message}`, {
        cause: e,
      });
    }
  }

  /** The newest run of a migration, or MigrationNotFoundError. */
  async handle(id: string): Promise<WorkflowHandle> {
    return (await this.described(id)).handle;
  }

  private async described(id: string) {
    const handle = this.client.workflow.getHandle(toWorkflowId(id));
    try {
      return { handle, description: await handle.describe() };
    } catch (e) {
      if (e instanceof WorkflowNotFoundError) throw new MigrationNotFoundError(id);
      throw e;
    }
  }

  /** Whether any worker polls the task queue (a start with none would sit waiting). */
  async hasWorkers(taskQueue = this.taskQueue): Promise<boolean> {
    const r = await this.client.workflowService.describeTaskQueue({
      namespace: this.namespace,
      taskQueue: { name: taskQueue },
      taskQueueType: 1, // workflow task queue
    });
    return (r.pollers ?? []).length > 0;
  }

  /**
   * Status from the workflow's query, with running activities' heartbeat progress merged in. A finished migration's
   * status comes from its result (or its failure's details), so it needs no worker.
   */
  async status(id: string): Promise<MigrationStatus & { live: LiveProgress[] }> {
    const { handle: h, description: first } = await this.described(id);
    if (first.status.name !== 'RUNNING') {
      const final = await finalStatus(h);
      if (final) return { ...final, live: [] };
    }
    let status: MigrationStatus;
    let desc: Awaited<ReturnType<WorkflowHandle['describe']>>;
    try {
      // The server holds a query until a worker answers it (about 30 s): say sooner that none does.
      let timer: NodeJS.Timeout | undefined;
      const slow = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`no worker answered within ${STATUS_QUERY_TIMEOUT_MS / 1000}s`)),
          STATUS_QUERY_TIMEOUT_MS,
        );
      });
      // The query and a fresh description (for the heartbeats of running activities) in one round trip's time.
      [status, desc] = await Promise.race([Promise.all([h.query(statusQuery), h.describe()]), slow]).finally(() =>
        clearTimeout(timer),
      );
    } catch (e) {
      // A query is answered by a worker: none running, or a workflow task failing, leaves it unanswered.
      const queue = first.taskQueue;
      const hint = (await this.hasWorkers(queue).catch(() => true))
        ? ''
        : `; no worker polls task queue "${queue}" (start one: tidemark worker)`;
      throw new Error(`cannot read the status of ${h.workflowId}: ${(e as Error).message}${hint}`, { cause: e });
    }
    const live: LiveProgress[] = (desc.raw.pendingActivities ?? []).map((a) => ({
      activity: a.activityType?.name ?? 'unknown',
      attempt: a.attempt ?? 1,
      details: a.heartbeatDetails?.payloads?.length
        ? defaultPayloadConverter.fromPayload(a.heartbeatDetails.payloads[0])
        : null,
      ...(a.lastFailure?.message ? { lastFailure: a.lastFailure.message } : {}),
    }));
    mergeCopyProgress(status, live);
    mergeReplication(status, live);
    return { ...status, live };
  }

  async list(): Promise<MigrationSummary[]> {
    const out: MigrationSummary[] = [];
    const query = `WorkflowType = '${WORKFLOW_TYPE}' OR WorkflowType = '${REVERT_WORKFLOW_TYPE}'`;
    for await (const w of this.client.workflow.list({ query })) {
      const sa = w.typedSearchAttributes;
      const kind = w.type === REVERT_WORKFLOW_TYPE ? 'revert' : 'migration';
      out.push({
        kind,
        workflowId: w.workflowId,
        runId: w.runId,
        plan: sa.get(TidemarkPlan) ?? w.workflowId.replace(/^tidemark-(revert-)?/, ''),
        phase: sa.get(TidemarkPhase) ?? null,
        state: sa.get(TidemarkState) ?? null,
        status: w.status.name,
        startTime: w.startTime.toISOString(),
        closeTime: w.closeTime?.toISOString() ?? null,
      });
      if (out.length >= 200) break;
    }
    return out;
  }

  private async update<A>(
    id: string,
    def: UpdateDefinition<UpdateAck, [A]>,
    arg: A,
    { needWorker = true, instead = 'then try again' } = {},
  ): Promise<UpdateAck> {
    const h = await this.handle(id);
    // A worker answers an update; with none polling, the server would hold it (and the command) until one starts, and
    // carry it out then, long after the operator gave up on it. Refused before it is sent, nothing is left pending.
    const idle = needWorker ? await this.idleQueue(h, id) : undefined;
    if (idle) {
      throw new NoWorkerError(
        `no worker polls task queue "${idle}" to answer it: start one (tidemark worker), ${instead}; nothing was sent`,
      );
    }
    try {
      return await h.executeUpdate(def, { args: [arg] });
    } catch (e) {
      if (e instanceof WorkflowUpdateFailedError) throw new RejectedError(e.cause?.message ?? e.message);
      if (e instanceof WorkflowNotFoundError || /workflow execution already completed/i.test((e as Error).message)) {
        throw new RejectedError(`migration ${id} has already finished`);
      }
      throw e;
    }
  }

  /**
   * The task queue of a running workflow when no worker polls it (its updates would wait for one); undefined when one
   * does, or when that cannot be told. A finished workflow is refused here, as the update would be.
   */
  private async idleQueue(h: WorkflowHandle, id: string): Promise<string | undefined> {
    const d = await h.describe().catch(() => undefined);
    if (!d) return undefined;
    if (d.status.name !== 'RUNNING') throw new RejectedError(`migration ${id} has already finished`);
    return (await this.hasWorkers(d.taskQueue).catch(() => true)) ? undefined : d.taskQueue;
  }

  approve(id: string, req: ApproveRequest = {}) {
    return this.update(id, approveUpdate, req);
  }
  pause(id: string, req: PauseRequest = {}) {
    return this.update(id, pauseUpdate, req);
  }
  resume(id: string, req: ResumeRequest = {}) {
    return this.update(id, resumeUpdate, req);
  }
  abort(id: string, req: AbortRequest = {}) {
    return this.update(id, abortUpdate, req, {
      instead: 'or use abort --no-wait to leave the abort for the next worker',
    });
  }
  /**
   * The abort for an operator who will not wait: the update when a worker answers within `answerMs`; otherwise (no
   * worker running) the abort signal, kept in the history and carried out, after the same checks, once a worker runs.
   * With no worker polling at all, it signals at once. A string (why) when it was signalled.
   */
  async abortOrSignal(id: string, req: AbortRequest, answerMs: number): Promise<UpdateAck | string> {
    const h = await this.handle(id);
    const idle = await this.idleQueue(h, id);
    if (idle) {
      await h.signal(abortSignal, req);
      return `no worker polls task queue "${idle}"`;
    }
    const update = this.update(id, abortUpdate, req, { needWorker: false });
    // Left waiting, the update is refused by the signal's abort if a worker comes later ("already under way").
    update.catch(() => undefined);
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), answerMs)));
    try {
      const ack = await Promise.race([update, late]);
      if (ack) return ack;
    } finally {
      clearTimeout(timer);
    }
    await h.signal(abortSignal, req);
    return `no worker answered in ${answerMs / 1000} s`;
  }
  throttle(id: string, req: ThrottleRequest) {
    return this.update(id, throttleUpdate, req);
  }
  promote(id: string, req: PromoteRequest = {}) {
    return this.update(id, promoteUpdate, req);
  }

  /**
   * Polls status until the migration reaches a terminal state; calls onStatus on every poll. A status that cannot be
   * read for a while (worker restarting, server briefly away) is retried for up to `patienceMs`, told to onRetry.
   */
  async waitForEnd(
    id: string,
    onStatus?: (s: MigrationStatus & { live: LiveProgress[] }) => void,
    pollMs = 1000,
    {
      onRetry,
      patienceMs = 10 * 60_000,
      until,
    }: {
      onRetry?: (e: Error) => void;
      patienceMs?: number;
      /** Returns early with the first status this holds for (a state only an operator can leave, say). */
      until?: (s: MigrationStatus) => boolean;
    } = {},
  ): Promise<MigrationStatus> {
    let failingSince: number | undefined;
    for (;;) {
      let s: (MigrationStatus & { live: LiveProgress[] }) | undefined;
      try {
        s = await this.status(id);
        failingSince = undefined;
      } catch (e) {
        if (e instanceof MigrationNotFoundError) throw e;
        failingSince ??= Date.now();
        if (Date.now() - failingSince > patienceMs) throw e;
        onRetry?.(e as Error);
      }
      if (s) {
        onStatus?.(s);
        if (until?.(s)) return s;
        // A terminal state is set before the workflow lets its notices in flight finish: the end is when it closes,
        // and the status it closed with is the final one.
        if (TERMINAL_STATES.includes(s.state)) {
          const closed = await this.described(id)
            .then((d) => d.description.status.name !== 'RUNNING')
            .catch(() => false);
          if (closed) return this.status(id);
        }
      }
      await new Promise((r) => setTimeout(r, s ? pollMs : Math.max(pollMs, 2000)));
    }
  }
}

const STATUS_QUERY_TIMEOUT_MS = 10_000;

/** The status a closed migration left: its result, or the details of the failure it ended with. */
async function finalStatus(h: WorkflowHandle): Promise<MigrationStatus | undefined> {
  try {
    return (await h.result()) as MigrationStatus;
  } catch (e) {
    const cause = (e as { cause?: unknown }).cause;
    if (cause instanceof ApplicationFailure && cause.details?.[0]) return cause.details[0] as MigrationStatus;
    return undefined;
  }
}

interface CopyBeat {
  job: string;
  rowsCopied: number;
  rowsPerSecond: number;
  batchSize: number;
  throttleReason: string | null;
  duty?: number;
  latencyIncrease?: number;
  lockConflicts?: number;
  lastLockConflict?: string | null;
  paused: boolean;
}

/** The settle pass's heartbeat while it waits for transactions to end (SettleBeat in phases/copy/activities.ts). */
interface SettleBeat {
  job: string;
  waitingFor?: string;
}

/** Folds the copy activities' heartbeats into the status's per-job progress (rows, rate, ETA, batch, throttle). */
export function mergeCopyProgress(status: MigrationStatus, live: LiveProgress[]): void {
  for (const job of status.copy) {
    if (job.done) continue;
    const settling = live.find((l) => l.activity === 'settleCopy' && (l.details as SettleBeat | null)?.job === job.job)
      ?.details as SettleBeat | undefined;
    if (settling?.waitingFor) job.waitingFor = settling.waitingFor;
    const beats = live
      .filter(
        (l) =>
          (l.activity === 'copyRange' || l.activity === 'copyRangeAcross') &&
          (l.details as CopyBeat | null)?.job === job.job,
      )
      .map((l) => l.details as CopyBeat);
    if (!beats.length) continue;
    const running = beats.reduce((n, b) => n + b.rowsCopied, 0);
    job.rowsCopied += running;
    job.rowsPerSecond = beats.reduce((n, b) => n + b.rowsPerSecond, 0);
    job.batchSize = beats[0].batchSize;
    job.throttleReason = beats.find((b) => b.throttleReason)?.throttleReason ?? null;
    const sharing = beats.find((b) => b.duty !== undefined);
    job.duty = sharing?.duty;
    job.latencyIncrease = sharing?.latencyIncrease;
    job.lockConflicts = (job.lockConflicts ?? 0) + beats.reduce((n, b) => n + (b.lockConflicts ?? 0), 0);
    job.lastLockConflict = beats.find((b) => b.lastLockConflict)?.lastLockConflict ?? job.lastLockConflict ?? null;
    // Paused once every running range has stopped at a batch boundary: from then on nothing of the job commits.
    job.paused = beats.every((b) => b.paused);
    if (job.paused) job.rowsPerSecond = 0;
    // Past the estimate (a table never analysed is estimated from its size) the time left is unknown, not zero.
    const remaining = job.estimatedTotal - job.rowsCopied;
    job.etaSeconds = job.rowsPerSecond > 0 && remaining > 0 ? Math.round(remaining / job.rowsPerSecond) : null;
  }
}

/** Folds the blue-green appliers' heartbeats (applied, lag) into the status's replication list. */
export function mergeReplication(status: MigrationStatus, live: LiveProgress[]): void {
  for (const l of live) {
    if (l.activity !== 'replicate' || !l.details) continue;
    const b = l.details as {
      job: string;
      direction: string;
      applied: number;
      lagRows: number;
      lagSeconds: number;
      slotBytes?: number;
      conflicts?: number;
      waiting?: string;
    };
    const r = status.replication?.find((x) => x.job === b.job && x.direction === b.direction);
    if (r) {
      const { applied, lagRows, lagSeconds, slotBytes, conflicts, waiting } = b;
      Object.assign(r, { applied, lagRows, lagSeconds, slotBytes, conflicts, waiting });
    }
  }
}
