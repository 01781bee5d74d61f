// The migration runbook as one durable workflow: seven phases in order, each change registering its undo, operator
// messages validated before they touch state, and a rollback that always runs to the end.
import {
  ActivityCancellationType,
  allHandlersFinished,
  ApplicationFailure,
  CancellationScope,
  condition,
  ContinueAsNew,
  continueAsNew,
  isCancellation,
  proxyActivities,
  setHandler,
  upsertSearchAttributes,
  workflowInfo,
  type ActivityOptions,
} from '@temporalio/workflow';
import type { Activities } from '../activities';
import { formatDuration } from '../plan/durations';
import type { Gate, PhaseName, ResolvedCopyJob, ResolvedPlan, Stage, ValidationCheck } from '../plan/types';
import {
  abortUpdate,
  approveUpdate,
  initialStatus,
  pauseUpdate,
  promoteUpdate,
  resumeUpdate,
  statusQuery,
  TERMINAL_STATES,
  throttleUpdate,
  type AbortRequest,
  type CopyJobProgress,
  type GateReading,
  type MigrationInput,
  type MigrationState,
  type MigrationStatus,
  type ResumeState,
  type UpdateAck,
  type ValidationCheckResult,
} from './messages';
import { errorMessage, Saga, type CompensationAction, type SagaEntry } from './saga';
import { TidemarkPhase, TidemarkPlan, TidemarkState } from './search-attributes';

/** Failure types never retried (activities also mark them non-retryable themselves). */
const NON_RETRYABLE = [
  'PlanRuntimeError',
  'SqlError',
  'PreflightFailed',
  'ValidationFailed',
  'MissingDatabaseUrl',
  'BackupFailed',
  'InternalError',
];

const retry = (o: Partial<NonNullable<ActivityOptions['retry']>> = {}): ActivityOptions['retry'] => ({
  initialInterval: '1s',
  backoffCoefficient: 2,
  maximumInterval: '1m',
  maximumAttempts: 10,
  nonRetryableErrorTypes: NON_RETRYABLE,
  ...o,
});

/** Short steps: catalog reads, DDL (lock timeouts retried with backoff), flag writes. */
const acts = proxyActivities<Activities>({ startToCloseTimeout: '15m', retry: retry() });
/** The flag must move fast: short timeout, quick retries. */
const flagActs = proxyActivities<Activities>({
  startToCloseTimeout: '20s',
  retry: retry({ initialInterval: '200ms', maximumInterval: '5s', maximumAttempts: 20 }),
});
/** Long, heartbeating work: the copy and the checksum resume from their checkpoint on a new attempt. */
const longActs = proxyActivities<Activities>({
  startToCloseTimeout: '30d',
  heartbeatTimeout: '15s',
  retry: retry({ maximumAttempts: undefined }),
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
});
/**
 * Schema steps can run for hours (CREATE INDEX CONCURRENTLY on a big table): they heartbeat, and an abort waits for
 * the running step to be cancelled in the server before the rollback starts.
 */
const schemaActs = proxyActivities<Activities>({
  startToCloseTimeout: '24h',
  heartbeatTimeout: '30s',
  retry: retry(),
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
});
const backupActs = proxyActivities<Activities>({
  startToCloseTimeout: '12h',
  heartbeatTimeout: '1m',
  retry: retry({ maximumAttempts: 3 }),
});
const gateActs = proxyActivities<Activities>({ startToCloseTimeout: '2m', retry: retry({ maximumAttempts: 2 }) });
/** Compensations retry patiently: giving up leaves objects behind. */
const undoActs = proxyActivities<Activities>({
  startToCloseTimeout: '15m',
  retry: retry({ maximumAttempts: 12, maximumInterval: '30s' }),
});

const PHASES: PhaseName[] = ['preflight', 'backup', 'schema', 'copy', 'validate', 'traffic', 'cleanup'];
const MAX_EVENTS = 100;
/** Continue as new past this many history events even if the server does not suggest it yet. */
const HISTORY_EVENTS_LIMIT = 10_000;

/** Thrown inside the workflow when it must roll back for a reason of its own (a gate, an approval timeout). */
class RollbackRequested extends Error {}

const nowIso = () => new Date().toISOString();

export async function migrationWorkflow(input: MigrationInput): Promise<MigrationStatus> {
  return new MigrationRun(input).run();
}

class MigrationRun {
  private readonly plan: ResolvedPlan;
  private readonly status: MigrationStatus;
  private readonly saga: Saga;
  private readonly resumed: ResumeState | undefined;
  /** The first run of this workflow's chain: the key of its bookkeeping rows, stable across continue-as-new. */
  private readonly runKey = workflowInfo().firstExecutionRunId;
  private readonly mainScope = new CancellationScope();
  private abortRequest: (AbortRequest & { at: string }) | null = null;
  private approvedGate: string | null = null;
  private controlVersion = 0;
  private promoteRequested = false;
  private soaking = false;
  private lastSearchAttributes = '';

  constructor(private readonly input: MigrationInput) {
    this.plan = input.plan;
    const info = workflowInfo();
    this.resumed = input.resume;
    this.saga = new Saga((input.resume?.saga as SagaEntry[] | undefined) ?? []);
    if (input.resume) {
      this.approvedGate = input.resume.approvedGate;
      this.controlVersion = input.resume.controlVersion;
    }
    this.status = input.resume?.status ?? initialStatus(this.plan.name, info.workflowId, nowIso(), PHASES);
  }

  // ---- the runbook -------------------------------------------------------------------------------------------

  async run(): Promise<MigrationStatus> {
    this.installHandlers();
    if (this.resumed) this.event('continued as a new run (history kept short)');
    else
      this.event(
        `started${this.input.options.startedBy ? ` by ${this.input.options.startedBy}` : ''}${this.input.options.autoApprove ? ' with auto-approval' : ''}`,
      );
    this.publish();
    try {
      await this.mainScope.run(() => this.forward());
    } catch (err) {
      if (err instanceof ContinueAsNew) throw err;
      return this.rollBack(err);
    }
    this.setState('completed');
    this.status.endedAt = nowIso();
    this.event('completed');
    this.publish();
    return this.status;
  }

  private async forward(): Promise<void> {
    const p = this.plan;
    await this.phase('preflight', async () => {
      const report = await acts.runPreflight({ plan: p });
      for (const f of report.findings.filter((x) => x.status === 'warn'))
        this.event(`preflight warning — ${f.check}: ${f.message}`);
      return report;
    });
    await this.phase('backup', async () => {
      if (!p.backup.enabled) return undefined;
      const b = await backupActs.createBackup({ plan: p });
      this.status.backup = b;
      return b;
    });
    await this.phase('schema', () => this.schemaPhase(), p.schema.length === 0);
    await this.phase('copy', () => this.copyPhase(), p.copy.length === 0);
    await this.phase('validate', () => this.validatePhase(), this.validationChecks().length === 0);
    await this.phase('traffic', () => this.trafficPhase(), !p.traffic);
    // Without a cleanup section nothing is archived or dropped: the sync triggers stay, keeping the tables in step.
    await this.phase('cleanup', () => this.cleanupPhase(), !p.cleanup);
    if (!p.cleanup && p.copy.some((j) => j.sync !== 'none')) {
      this.event(
        'no cleanup section: sync triggers left in place, so both tables stay in step; a plan with a cleanup section removes them',
      );
    }
  }

  private async phase(name: PhaseName, body: () => Promise<unknown>, skip = false): Promise<void> {
    const rec = this.status.phases.find((x) => x.name === name)!;
    // A continued run skips what its predecessors finished and resumes the phase that was running.
    if (rec.status === 'completed' || rec.status === 'skipped') return;
    const continuing = rec.status === 'running';
    if (skip) {
      rec.status = 'skipped';
      return;
    }
    if (!continuing) {
      await this.safePoint();
      // Cleanup asks for its approval after its retention delay, not before it.
      if (name !== 'cleanup' && this.plan.approvals.includes(name)) {
        // Waiting for approval of a phase shows that phase (state waiting-approval), in status and in the Web UI.
        this.status.phase = name;
        await this.requireApproval(name);
      }
      rec.status = 'running';
      rec.startedAt = nowIso();
      this.status.phase = name;
      this.event(`phase ${name} started`);
      this.publish();
    }
    try {
      rec.result = await body();
      rec.status = 'completed';
      rec.endedAt = nowIso();
      this.event(`phase ${name} completed`);
    } catch (err) {
      if (err instanceof ContinueAsNew) throw err;
      rec.status = isCancellation(err) ? 'cancelled' : 'failed';
      rec.error = this.reasonFor(err);
      rec.endedAt = nowIso();
      throw err;
    } finally {
      this.publish();
    }
  }

  private async schemaPhase(): Promise<unknown> {
    const applied: string[] = [];
    for (const step of this.plan.schema) {
      await this.safePoint();
      const args = {
        urlEnv: this.plan.database.urlEnv,
        migration: this.plan.name,
        runId: this.runKey,
        step,
        lockTimeoutMs: this.plan.lockTimeout,
      };
      // The undo is registered before the step runs: an abort can land while it runs, and the rollback must then
      // undo whatever it left. A transactional step's history row commits with it, so its undo runs `down` only if
      // the step committed; a non-transactional one can stop half-way (CREATE INDEX CONCURRENTLY leaves an invalid
      // index), so its `down` always runs.
      this.register('schema', `run ${step.down.path} (undo ${step.id})`, { kind: 'revertSchemaStep', stepId: step.id });
      await schemaActs.applySchemaStep(args);
      applied.push(step.id);
      this.event(`schema step ${step.id} applied`);
    }
    return { applied };
  }

  private async copyPhase(): Promise<unknown> {
    // Settings given before the copy began (a throttle while waiting for approval) apply from the first batch.
    await this.writeCopyControl();
    const stop = { done: false };
    // The pusher's wait rejects the moment an abort cancels the scope, while the copy is still winding down: its
    // rejection must be handled from the start, or the workflow task fails and the abort is lost.
    let pushFailure: unknown;
    const pusher = this.pushCopyControl(stop).catch((err) => {
      if (!isCancellation(err)) pushFailure = err;
    });
    try {
      for (const job of this.plan.copy) {
        await this.safePoint();
        await this.copyJob(job);
      }
    } finally {
      stop.done = true;
      await pusher;
    }
    if (pushFailure)
      this.event(`pause/throttle settings could not be passed to the copy: ${errorMessage(pushFailure)}`);
    return { jobs: this.status.copy.map((c) => ({ job: c.job, rows: c.rowsCopied })) };
  }

  private async copyJob(job: ResolvedCopyJob): Promise<void> {
    const base = { urlEnv: this.plan.database.urlEnv, job, lockTimeoutMs: this.plan.lockTimeout };
    const sync = await acts.installSyncTriggers(base);
    this.register('copy', `drop sync triggers of ${job.name}${sync.targetWasEmpty ? ` and empty ${job.to}` : ''}`, {
      kind: 'undoCopy',
      job: job.name,
      emptyTarget: sync.targetWasEmpty,
    });
    const { ranges, estimatedRows } = await acts.planCopyRanges(base);
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
    this.status.copy.push(progress);
    this.event(`copy ${job.name}: ${ranges.length} range(s), about ${estimatedRows} rows`);
    const started = Date.now();
    let rows = 0;
    // allSettled, not all: on an abort every range's activity must have stopped (its cancellation completed) before
    // the compensations touch the tables it writes.
    const outcomes = await Promise.allSettled(
      ranges.map(async (range) => {
        const r = await longActs.copyRange({ ...base, range, estimatedRows: Math.ceil(estimatedRows / ranges.length) });
        rows += r.rowsCopied;
        progress.rangesDone++;
        progress.rowsCopied = rows;
      }),
    );
    const failed = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected');
    if (failed) throw failed.reason;
    progress.done = true;
    progress.etaSeconds = 0;
    progress.estimatedTotal = Math.max(progress.estimatedTotal, rows);
    progress.rowsPerSecond = Math.round((rows * 1000) / Math.max(1, Date.now() - started));
    this.event(`copy ${job.name}: ${rows} rows copied`);
  }

  /** Keeps the copy's control row (pause, throttle) in the database in step with the workflow's state. */
  private async pushCopyControl(stop: { done: boolean }): Promise<void> {
    let pushed = this.controlVersion;
    while (!stop.done) {
      await condition(() => this.controlVersion !== pushed || stop.done);
      if (stop.done) break;
      const version = this.controlVersion;
      await this.writeCopyControl();
      pushed = version;
    }
  }

  private writeCopyControl(): Promise<void> {
    return acts.setCopyControl({
      urlEnv: this.plan.database.urlEnv,
      paused: this.status.paused !== null,
      reason: this.status.paused?.reason,
      batchSize: this.status.throttle.batchSize,
      delayMs: this.status.throttle.delayMs,
    });
  }

  private validationChecks(): ValidationCheck[] {
    if (this.plan.validate.length) return this.plan.validate;
    // No checks declared: every copy job is still compared exactly (row count and checksum).
    return this.plan.copy.flatMap((j) => [
      { rowCount: { copy: j.name } },
      { checksum: { copy: j.name, chunkSize: 10_000 } },
    ]);
  }

  private async validatePhase(): Promise<unknown> {
    const results: ValidationCheckResult[] = [];
    for (const check of this.validationChecks()) {
      await this.safePoint();
      const ref = check.rowCount?.copy ?? check.checksum?.copy;
      const job = ref ? this.plan.copy.find((j) => j.name === ref) : undefined;
      if (ref && !job)
        throw ApplicationFailure.nonRetryable(
          `validation refers to copy job "${ref}", which the plan does not have`,
          'PlanRuntimeError',
        );
      const args = { urlEnv: this.plan.database.urlEnv, check, job };
      const r = check.checksum ? await longActs.runValidationCheck(args) : await acts.runValidationCheck(args);
      results.push(r);
      this.status.validation = { ok: results.every((x) => x.ok), checks: results, at: nowIso() };
      this.event(`validation ${r.check}: ${r.ok ? 'ok' : 'FAILED'} (${r.message})`);
    }
    const report = this.status.validation!;
    await acts.recordReport({
      urlEnv: this.plan.database.urlEnv,
      migration: this.plan.name,
      kind: 'validation',
      report,
    });
    if (!report.ok) {
      const failed = report.checks.filter((c) => !c.ok).map((c) => `${c.check}: ${c.message}`);
      throw ApplicationFailure.nonRetryable(`validation failed — ${failed.join('; ')}`, 'ValidationFailed');
    }
    return { checks: report.checks.length, ok: true };
  }

  private async trafficPhase(): Promise<unknown> {
    const t = this.plan.traffic!;
    const carried = this.resumed?.soak;
    if (!carried) {
      this.status.traffic = {
        flag: t.flag,
        percent: 0,
        stageIndex: null,
        stages: t.stages.map((s) => ({ percent: s.percent, soakMs: s.soak, approval: s.approval })),
        soakEndsAt: null,
        gates: [],
      };
      // Registered before the first change: whatever happens next, a rollback puts traffic back on the old path.
      this.register('traffic', `set flag ${t.flag} to 0%`, { kind: 'resetFlag', flag: t.flag });
    }
    const traffic = this.status.traffic!;
    for (const [i, stage] of t.stages.entries()) {
      if (carried && i < carried.stageIndex) continue;
      if (carried && i === carried.stageIndex) {
        // The flag is already at this stage's percentage: pick the soak up where the previous run left it.
        await this.soak(i, stage, t.gates, carried);
        continue;
      }
      await this.safePoint();
      if (stage.approval) await this.requireApproval(`traffic:${stage.percent}%`);
      await flagActs.setFlag({
        urlEnv: this.plan.database.urlEnv,
        flag: t.flag,
        percent: stage.percent,
        by: this.status.workflowId,
      });
      traffic.percent = stage.percent;
      traffic.stageIndex = i;
      this.event(`flag ${t.flag} at ${stage.percent}%`);
      this.publish();
      await this.soak(i, stage, t.gates);
    }
    return { flag: t.flag, percent: traffic.percent };
  }

  /**
   * Holds a stage for its soak on a durable timer, reading gates on their intervals; promote ends it early. A long
   * gated soak continues as new when the history grows, carrying the soak's end, breaches and schedule along.
   */
  private async soak(stageIndex: number, stage: Stage, gates: Gate[], carried?: ResumeState['soak']): Promise<void> {
    const traffic = this.status.traffic!;
    const end = carried?.endsAt ?? Date.now() + stage.soak;
    traffic.soakEndsAt = new Date(end).toISOString();
    this.promoteRequested = false;
    this.soaking = true;
    const breaches = new Map<string, number>(Object.entries(carried?.breaches ?? {}));
    const due = new Map(
      gates.map((g) => [g.name, carried?.due[g.name] ?? Date.now() + Math.min(g.interval, stage.soak)]),
    );
    try {
      while (Date.now() < end && !this.promoteRequested) {
        const info = workflowInfo();
        if (info.continueAsNewSuggested || info.historyLength >= HISTORY_EVENTS_LIMIT) {
          await this.continueAsNew({
            stageIndex,
            endsAt: end,
            breaches: Object.fromEntries(breaches),
            due: Object.fromEntries(due),
          });
        }
        const next = Math.min(end, ...due.values());
        await condition(() => this.promoteRequested, Math.max(1, next - Date.now()));
        if (this.promoteRequested) break;
        const toRead = gates.filter((g) => due.get(g.name)! <= Date.now());
        if (!toRead.length) continue;
        const values = await gateActs.readGates({ urlEnv: this.plan.database.urlEnv, gates: toRead });
        for (const g of toRead) {
          due.set(g.name, Date.now() + g.interval);
          const v = values.find((x) => x.gate === g.name)!;
          await this.judgeGate(g, v.value, v.error, breaches);
        }
      }
    } finally {
      this.soaking = false;
      traffic.soakEndsAt = null;
    }
    if (this.promoteRequested) this.event(`soak at ${stage.percent}% ended early by promote`);
  }

  private async continueAsNew(soak: ResumeState['soak']): Promise<never> {
    // Updates in flight finish first, so nothing an operator sent is lost between runs.
    await condition(allHandlersFinished);
    const resume: ResumeState = {
      status: this.status,
      saga: this.saga.snapshot(),
      approvedGate: this.approvedGate,
      controlVersion: this.controlVersion,
      soak,
    };
    return continueAsNew<typeof migrationWorkflow>({ ...this.input, resume });
  }

  private async judgeGate(
    g: Gate,
    value: number | null,
    error: string | undefined,
    breaches: Map<string, number>,
  ): Promise<void> {
    const traffic = this.status.traffic!;
    const ok =
      value === null ? null : (g.max === undefined || value <= g.max) && (g.min === undefined || value >= g.min);
    const count = ok === false ? (breaches.get(g.name) ?? 0) + 1 : 0;
    breaches.set(g.name, count);
    const reading: GateReading = { gate: g.name, value, ok, error, at: nowIso(), consecutiveBreaches: count };
    traffic.gates = [...traffic.gates.filter((r) => r.gate !== g.name), reading];
    if (ok === false) {
      const bound = g.max !== undefined && value! > g.max ? `max ${g.max}` : `min ${g.min}`;
      this.event(`gate "${g.name}" read ${value} (${bound}), breach ${count}/${g.failureLimit}`);
      if (count >= g.failureLimit) {
        throw new RollbackRequested(
          `gate "${g.name}" breached ${count} time(s) in a row: read ${value}, ${bound}, at ${traffic.percent}%`,
        );
      }
    } else if (ok === null) {
      // A gate that cannot be read says nothing either way: hold the rollout and ask a human instead of guessing.
      this.event(`gate "${g.name}" unreadable: ${error}; rollout paused`);
      this.pauseWith({ reason: `gate "${g.name}" could not be read: ${error}`, by: 'tidemark' });
      await this.safePoint();
    }
  }

  private async cleanupPhase(): Promise<unknown> {
    const c = this.plan.cleanup;
    const urlEnv = this.plan.database.urlEnv;
    const lockTimeoutMs = this.plan.lockTimeout;
    if (c?.after) await this.durableWait('cleanup delay', c.after, true);
    await this.safePoint();
    if (this.plan.approvals.includes('cleanup')) await this.requireApproval('cleanup');
    // Until archived tables are dropped, an abort must still find every write made on the new path in the old table:
    // bidirectional jobs whose source is archived keep their sync (it follows the table into the archive).
    const synced = this.plan.copy.filter((j) => j.sync !== 'none');
    const followers =
      c?.dropAfter !== undefined
        ? synced.filter((j) => j.sync === 'bidirectional' && j.from && c.archive.includes(j.from))
        : [];
    const dropping = synced.filter((j) => !followers.includes(j));
    const dropNow = dropping.map((j) => ({ name: j.name, querySources: j.syncFrom?.length ?? 0 }));
    if (dropNow.length) {
      // New tables first, then what feeds them: the order the application's writes lock them in (see cleanup.ts).
      const lockFirst = [
        ...dropping.map((j) => j.to),
        ...dropping.flatMap((j) => (j.from ? [j.from] : (j.syncFrom ?? []).map((f) => f.table))),
      ];
      await acts.dropSyncTriggers({ urlEnv, jobs: dropNow, lockTimeoutMs, lockFirst });
      // Said in the log: from here these jobs' tables drift apart (followers, kept until the drop, are not among them).
      this.event(
        `sync triggers dropped: ${dropNow.map((j) => j.name).join(', ')} (old and new tables no longer kept in step)`,
      );
    }
    const result: Record<string, unknown> = { syncTriggersDropped: dropNow.map((j) => j.name) };
    if (c?.archive.length) {
      const args = {
        urlEnv,
        migration: this.plan.name,
        runId: this.runKey,
        tables: c.archive,
        lockTimeoutMs,
        dropAfterMs: c.dropAfter,
        followers,
      };
      const { archived } = await acts.archiveTables(args);
      this.register('cleanup', `move ${c.archive.join(', ')} back from tidemark_archive`, {
        kind: 'restoreArchivedTables',
        tables: c.archive,
      });
      this.event(`archived ${archived.join(', ')}`);
      result.archived = archived;
    }
    if (c?.sql) result.sql = await acts.runCleanupSql({ urlEnv, sql: c.sql, lockTimeoutMs });
    if (c?.archive.length && c.dropAfter !== undefined) {
      // Never shortened by promote: after this drop there is no way back.
      await this.durableWait('drop of archived tables', c.dropAfter, false);
      await this.safePoint();
      if (followers.length) {
        const lockFirst = [
          ...followers.map((j) => j.to),
          ...followers.map((j) => `tidemark_archive.${j.from!.split('.').pop()}`),
        ];
        await acts.dropSyncTriggers({
          urlEnv,
          jobs: followers.map((j) => ({ name: j.name, querySources: 0 })),
          lockTimeoutMs,
          lockFirst,
        });
      }
      const args = { urlEnv, migration: this.plan.name, runId: this.runKey, tables: c.archive, lockTimeoutMs };
      result.dropped = (await acts.dropArchivedTables(args)).dropped;
      this.saga.drop((a) => a.kind === 'restoreArchivedTables');
      this.event(`archived tables dropped: ${c.archive.join(', ')}`);
    }
    return result;
  }

  private async durableWait(what: string, ms: number, promotable: boolean): Promise<void> {
    const until = new Date(Date.now() + ms).toISOString();
    this.status.waitingUntil = { what, until };
    this.event(`waiting ${formatDuration(ms)} for ${what} (until ${until})`);
    this.publish();
    this.promoteRequested = false;
    this.soaking = promotable;
    try {
      await condition(() => promotable && this.promoteRequested, ms);
    } finally {
      this.soaking = false;
      this.status.waitingUntil = null;
    }
  }

  // ---- approvals, pause, rollback ----------------------------------------------------------------------------

  private async requireApproval(gate: string): Promise<void> {
    if (this.input.options.autoApprove) {
      this.status.approvals.push({ gate, by: 'auto', at: nowIso() });
      this.event(`${gate} approved automatically`);
      return;
    }
    for (;;) {
      const since = nowIso();
      const timeout = this.plan.approvalTimeout;
      this.status.pendingApproval = { gate, since, timeoutAt: new Date(Date.now() + timeout).toISOString() };
      this.approvedGate = null;
      this.setState('waiting-approval');
      this.event(`waiting for approval of ${gate}`);
      this.publish();
      const approved = await condition(() => this.approvedGate === gate, timeout);
      this.status.pendingApproval = null;
      if (approved) break;
      const why = `approval of ${gate} timed out after ${formatDuration(timeout)}`;
      if (this.plan.onApprovalTimeout === 'abort') throw new RollbackRequested(why);
      this.pauseWith({ reason: why, by: 'tidemark' });
      await this.safePoint();
    }
    this.setState(this.status.paused ? 'paused' : 'running');
    this.publish();
  }

  /** Waits here while paused: between phases, steps, jobs and stages. */
  private async safePoint(): Promise<void> {
    if (!this.status.paused) return;
    this.setState('paused');
    this.publish();
    await condition(() => this.status.paused === null);
    this.setState('running');
    this.publish();
  }

  private pauseWith(req: { reason?: string; by?: string }): void {
    this.status.paused = { reason: req.reason, by: req.by, at: nowIso() };
    this.controlVersion++;
    if (this.status.state === 'running') this.setState('paused');
    this.event(`paused${req.by ? ` by ${req.by}` : ''}${req.reason ? `: ${req.reason}` : ''}`);
  }

  private register(phase: PhaseName, description: string, action: CompensationAction): void {
    this.saga.add(phase, description, action);
    this.status.compensations = this.saga.records();
  }

  private reasonFor(err: unknown): string {
    if (this.abortRequest) {
      const a = this.abortRequest;
      return `aborted${a.by ? ` by ${a.by}` : ''}${a.reason ? `: ${a.reason}` : ''}`;
    }
    if (isCancellation(err)) return 'workflow cancelled';
    return errorMessage(err);
  }

  private async rollBack(err: unknown): Promise<never> {
    const reason = this.reasonFor(err);
    this.status.error = reason;
    this.status.pendingApproval = null;
    this.status.paused = null;
    this.setState('rolling-back');
    this.event(`rolling back: ${reason}`);
    this.publish();
    const failures = await CancellationScope.nonCancellable(async () => {
      const failed = await this.saga.compensate((a) => this.compensate(a), nowIso);
      this.status.compensations = this.saga.records();
      if (this.abortRequest?.restoreBackup) {
        const backup = this.status.backup as { file: string; sha256: string } | null;
        if (!backup) failed.push('restore-backup requested, but this run made no backup');
        else {
          try {
            const r = await undoActs.restoreBackup({ plan: this.plan, file: backup.file, sha256: backup.sha256 });
            this.event(`backup restored into ${r.tables.join(', ')}`);
          } catch (e) {
            failed.push(`restoring the backup: ${errorMessage(e)}`);
          }
        }
      }
      return failed;
    });
    this.status.endedAt = nowIso();
    if (failures.length) {
      this.status.error = `${reason}; rollback incomplete: ${failures.join('; ')}`;
      this.setState('failed');
      this.event(`rollback failed: ${failures.join('; ')}`);
    } else {
      this.setState('rolled-back');
      this.event('rolled back');
    }
    this.publish();
    if (isCancellation(err) && !this.abortRequest) throw err;
    // The final status rides along as the failure's details: `tidemark status` can show it with no worker running.
    throw ApplicationFailure.nonRetryable(
      this.status.error!,
      failures.length ? 'RollbackFailed' : 'MigrationRolledBack',
      this.status,
    );
  }

  private async compensate(a: CompensationAction): Promise<string | void> {
    const urlEnv = this.plan.database.urlEnv;
    const lockTimeoutMs = this.plan.lockTimeout;
    switch (a.kind) {
      case 'resetFlag': {
        await flagActs.setFlag({ urlEnv, flag: a.flag, percent: 0, by: `${this.status.workflowId} (rollback)` });
        if (this.status.traffic) this.status.traffic.percent = 0;
        this.event(`flag ${a.flag} back to 0%`);
        this.publish();
        return;
      }
      case 'undoCopy': {
        const job = this.plan.copy.find((j) => j.name === a.job)!;
        return undoActs.undoCopy({ urlEnv, job, emptyTarget: a.emptyTarget, lockTimeoutMs });
      }
      case 'revertSchemaStep': {
        const step = this.plan.schema.find((s) => s.id === a.stepId)!;
        return undoActs.revertSchemaStep({
          urlEnv,
          migration: this.plan.name,
          runId: this.runKey,
          step,
          lockTimeoutMs,
        });
      }
      case 'restoreArchivedTables': {
        const followers = this.plan.copy.filter(
          (j) => j.sync === 'bidirectional' && j.from && a.tables.includes(j.from),
        );
        return undoActs.restoreArchivedTables({
          urlEnv,
          migration: this.plan.name,
          runId: this.runKey,
          tables: a.tables,
          lockTimeoutMs,
          followers,
        });
      }
    }
  }

  // ---- messages ------------------------------------------------------------------------------------------------

  /** `state`: what the migration is now heading to, when the update changes it (approve → running, abort → rolling-back). */
  private ack(message: string, state: MigrationState = this.status.state): UpdateAck {
    return { accepted: true, state, message };
  }

  private rejectIfFinished(): void {
    if (TERMINAL_STATES.includes(this.status.state)) throw new Error(`the migration is already ${this.status.state}`);
    if (this.status.state === 'rolling-back') throw new Error('the migration is rolling back');
  }

  private installHandlers(): void {
    setHandler(statusQuery, () => this.status);

    setHandler(
      approveUpdate,
      (req) => {
        const gate = this.status.pendingApproval!.gate;
        this.approvedGate = gate;
        this.status.approvals.push({ gate, by: req.by ?? 'unknown', comment: req.comment, at: nowIso() });
        this.event(`${gate} approved by ${req.by ?? 'unknown'}${req.comment ? `: ${req.comment}` : ''}`);
        return this.ack(`approved ${gate}`, this.status.paused ? 'paused' : 'running');
      },
      {
        validator: (req) => {
          this.rejectIfFinished();
          const pending = this.status.pendingApproval;
          if (!pending) throw new Error('nothing is waiting for approval');
          if (req.gate && req.gate !== pending.gate)
            throw new Error(`${req.gate} is not waiting for approval (${pending.gate} is)`);
        },
      },
    );

    setHandler(
      pauseUpdate,
      (req) => {
        this.pauseWith(req);
        this.publish();
        return this.ack('pausing at the next safe point');
      },
      {
        validator: (_req) => {
          this.rejectIfFinished();
          if (this.status.paused) throw new Error('the migration is already paused');
        },
      },
    );

    setHandler(
      resumeUpdate,
      (req) => {
        this.status.paused = null;
        this.controlVersion++;
        if (this.status.state === 'paused') this.setState('running');
        this.event(`resumed${req.by ? ` by ${req.by}` : ''}`);
        this.publish();
        return this.ack('resumed');
      },
      {
        validator: (_req) => {
          this.rejectIfFinished();
          if (!this.status.paused) throw new Error('the migration is not paused');
        },
      },
    );

    setHandler(
      throttleUpdate,
      (req) => {
        const t = this.status.throttle;
        if (req.batchSize === null) delete t.batchSize;
        else if (req.batchSize !== undefined) t.batchSize = req.batchSize;
        if (req.delayMs !== undefined) t.delayMs = req.delayMs;
        this.controlVersion++;
        this.event(
          `throttle set${req.by ? ` by ${req.by}` : ''}: batch size ${t.batchSize ?? 'adaptive'}, delay ${t.delayMs ?? 0}ms`,
        );
        return this.ack(`batch size ${t.batchSize ?? 'adaptive'}, delay ${t.delayMs ?? 0}ms`);
      },
      {
        validator: (req) => {
          this.rejectIfFinished();
          if (req.batchSize === undefined && req.delayMs === undefined) throw new Error('give a batch size or a delay');
          if (
            req.batchSize != null &&
            (!Number.isInteger(req.batchSize) || req.batchSize < 1 || req.batchSize > 1_000_000)
          )
            throw new Error('batch size must be an integer from 1 to 1000000');
          if (req.delayMs !== undefined && (!Number.isInteger(req.delayMs) || req.delayMs < 0 || req.delayMs > 600_000))
            throw new Error('delay must be an integer from 0 to 600000 ms');
        },
      },
    );

    setHandler(
      promoteUpdate,
      (req) => {
        this.promoteRequested = true;
        this.event(`promoted${req.by ? ` by ${req.by}` : ''}`);
        return this.ack('soak ended early');
      },
      {
        validator: (_req) => {
          this.rejectIfFinished();
          if (!this.soaking) throw new Error('no soak or delay is in progress');
        },
      },
    );

    setHandler(
      abortUpdate,
      (req) => {
        this.abortRequest = { ...req, at: nowIso() };
        this.event(`abort requested${req.by ? ` by ${req.by}` : ''}${req.reason ? `: ${req.reason}` : ''}`);
        this.mainScope.cancel();
        return this.ack('rolling back', 'rolling-back');
      },
      {
        validator: (req) => {
          this.rejectIfFinished();
          if (this.abortRequest) throw new Error('an abort is already under way');
          if (req.restoreBackup && !this.plan.backup.enabled) throw new Error('this plan makes no backup to restore');
        },
      },
    );
  }

  // ---- visibility --------------------------------------------------------------------------------------------

  private setState(state: MigrationState): void {
    this.status.state = state;
  }

  private event(message: string): void {
    const seq = (this.status.events.at(-1)?.seq ?? 0) + 1;
    this.status.events.push({ seq, at: nowIso(), message });
    if (this.status.events.length > MAX_EVENTS) this.status.events.splice(0, this.status.events.length - MAX_EVENTS);
    this.status.updatedAt = nowIso();
  }

  /** Mirrors plan, phase and state into search attributes (only when they change: each upsert is a history event). */
  private publish(): void {
    const key = `${this.status.phase}|${this.status.state}`;
    if (key === this.lastSearchAttributes) return;
    this.lastSearchAttributes = key;
    upsertSearchAttributes([
      { key: TidemarkPlan, value: this.plan.name },
      { key: TidemarkPhase, value: this.status.phase ?? 'pending' },
      { key: TidemarkState, value: this.status.state },
    ]);
  }
}
