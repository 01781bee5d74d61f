// The migration (and revert) workflows on Temporal's time-skipping test server with stub activities: the runbook's
// logic (saga order, gates, approvals, validators) without a database, in seconds. Every activity call is recorded.
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { bundleWorkflowCode, DefaultLogger, Runtime, Worker, type WorkflowBundle } from '@temporalio/worker';
import { randomBytes } from 'node:crypto';
import { temporalTestServer } from '../../src/infra/tools';
import { WorkflowUpdateFailedError } from '@temporalio/client';
import {
  REVERT_WORKFLOW_TYPE,
  revertWorkflowIdFor,
  workflowIdFor,
  WORKFLOW_TYPE,
  type MigrationOptions,
  type MigrationStatus,
  type RevertOptions,
  statusQuery,
} from '../../src/migration/messages';
import { SEARCH_ATTRIBUTES } from '../../src/migration/search-attributes';
import type { Activities } from '../../src/phases/activities';
import type { ResolvedCopyJob, ResolvedPlan } from '../../src/plan/types';

type Stubs = { [K in keyof Activities]: (...args: never[]) => Promise<unknown> };

export interface Call {
  name: keyof Activities;
  input: Record<string, unknown>;
}

/** Activities that succeed at once with plausible results; `overrides` replace any of them. */
export function stubActivities(calls: Call[], overrides: Partial<Stubs> = {}): Stubs {
  const ok = (name: keyof Activities, result: (input: Record<string, unknown>) => unknown) => async (input: never) => {
    calls.push({ name, input: input as Record<string, unknown> });
    const o = overrides[name];
    return o ? o(input) : result(input);
  };
  const stubs: Stubs = {
    fenceRun: ok('fenceRun', () => undefined),
    runPreflight: ok('runPreflight', () => ({ ok: true, findings: [], serverVersion: '15' })),
    createBackup: ok('createBackup', () => ({ file: '/tmp/x.dump', sha256: 'ab', sizeBytes: 1 })),
    restoreBackup: ok('restoreBackup', () => ({ tables: [], durationMs: 0 })),
    applySchemaStep: ok('applySchemaStep', (i) => ({ step: (i.step as { id: string }).id, applied: true })),
    revertSchemaStep: ok('revertSchemaStep', () => 'down applied'),
    installSyncTriggers: ok('installSyncTriggers', () => ({ job: 'j', triggers: [], targetWasEmpty: true })),
    undoCopy: ok('undoCopy', () => 'sync triggers dropped'),
    dropReverseSync: ok('dropReverseSync', (i) => (i.jobs as { name: string }[]).map((j) => j.name)),
    planCopyRanges: ok('planCopyRanges', () => ({
      ranges: [{ index: 0, after: null, upTo: '10' }],
      estimatedRows: 10,
    })),
    copyRange: ok('copyRange', () => ({ rowsCopied: 10, batches: 1 })),
    settleCopy: ok('settleCopy', () => ({ cursor: null, chunks: 1, removed: 0 })),
    setCopyControl: ok('setCopyControl', () => undefined),
    runValidationCheck: ok('runValidationCheck', () => ({ check: 'c', kind: 'rowCount', ok: true, message: 'ok' })),
    recordReport: ok('recordReport', () => undefined),
    setFlag: ok('setFlag', (i) => ({ previous: 0, percent: i.percent, at: new Date().toISOString() })),
    resetFlag: ok('resetFlag', () => ({ previous: 10 })),
    readGates: ok('readGates', () => []),
    dropSyncTriggers: ok('dropSyncTriggers', () => []),
    archiveTables: ok('archiveTables', (i) => ({ archived: i.tables })),
    restoreArchivedTables: ok('restoreArchivedTables', () => 'moved back'),
    dropArchivedTables: ok('dropArchivedTables', (i) => ({ dropped: i.tables })),
    runCleanupSql: ok('runCleanupSql', () => 'cleanup.sql'),
    sendNotification: ok('sendNotification', () => ({ status: 200 })),
    readLedger: ok('readLedger', () => []),
    planRevert: ok('planRevert', () => ({ ok: true, findings: [], steps: [], items: [] })),
    installCapture: ok('installCapture', (i) => ({ job: 'j', direction: i.direction, stream: 's' })),
    undoCapture: ok('undoCapture', () => 'capture removed'),
    finishCapture: ok('finishCapture', () => ({ applied: 0 })),
    switchCaptureToTriggers: ok('switchCaptureToTriggers', () => ({ logged: 0 })),
    replicate: ok('replicate', () => undefined),
    replicationLag: ok('replicationLag', () => []),
    copyRangeAcross: ok('copyRangeAcross', () => ({ rowsCopied: 10, batches: 1 })),
  };
  return stubs;
}

const sql = (path: string) => ({ path, sql: `-- ${path}`, sha256: path.padEnd(64, '0') });

export const job: ResolvedCopyJob = {
  name: 'orders',
  from: 'orders',
  to: 'orders_v2',
  key: 'id',
  sync: 'bidirectional',
  batchSize: 100,
  targetBatchMs: 200,
  parallel: 1,
};

/** A plan touching every phase: two steps, one copy job, two stages, an archive with a drop a week later. */
export function fullPlan(overrides: Partial<ResolvedPlan> = {}): ResolvedPlan {
  return {
    name: `p-${randomBytes(3).toString('hex')}`,
    database: { urlEnv: 'DB' },
    approvals: [],
    approvalTimeout: 24 * 3_600_000,
    onApprovalTimeout: 'abort',
    lockTimeout: 2000,
    backup: { enabled: true, dir: '/tmp' },
    preflight: { maxTransactionAge: 300_000, checks: [] },
    schema: [
      { id: '001', transactional: true, up: sql('001.up.sql'), down: sql('001.down.sql') },
      { id: '002', transactional: true, up: sql('002.up.sql'), down: sql('002.down.sql') },
    ],
    copy: [job],
    validate: [{ rowCount: { copy: 'orders' } }],
    traffic: {
      flag: 'use_orders_v2',
      stages: [
        { percent: 10, soak: 3_600_000, approval: false },
        { percent: 100, soak: 3_600_000, approval: false },
      ],
      gates: [],
    },
    cleanup: { after: 0, archive: ['orders'], dropAfter: 7 * 86_400_000 },
    source: { path: 'plan.yaml', sha256: '0'.repeat(64) },
    ...overrides,
  } as ResolvedPlan;
}

let runtime = false;

/** One time-skipping server and one workflow bundle for a test file. */
export class StubEnv {
  env!: TestWorkflowEnvironment;
  private bundle!: WorkflowBundle;

  async start(): Promise<this> {
    if (!runtime) {
      runtime = true;
      try {
        Runtime.install({
          logger: new DefaultLogger('ERROR'),
          // The time-skipping server is older than the SDK's capability checks; its warnings say nothing here.
          telemetryOptions: { logging: { filter: { core: 'ERROR', other: 'ERROR' } } },
        });
      } catch {
        // installed already in this process
      }
    }
    this.env = await TestWorkflowEnvironment.createTimeSkipping({
      server: { executable: { type: 'existing-path', path: temporalTestServer() } },
    });
    await this.env.connection.operatorService.addSearchAttributes({
      namespace: 'default',
      searchAttributes: Object.fromEntries(SEARCH_ATTRIBUTES.map((s) => [s.name, 2])),
    });
    this.bundle = await bundleWorkflowCode({
      workflowsPath: require.resolve('../../src/migration'),
      logger: new DefaultLogger('WARN'),
    });
    return this;
  }

  async stop(): Promise<void> {
    await this.env?.teardown();
  }

  /**
   * Runs `plan` with the stubs on a fresh task queue while `drive` acts on its handle; returns what drive returns.
   * The worker stops when drive is done.
   */
  async run<T>(
    plan: ResolvedPlan,
    stubs: Stubs,
    drive: (h: Awaited<ReturnType<TestWorkflowEnvironment['client']['workflow']['start']>>) => Promise<T>,
    options: MigrationOptions = { autoApprove: true },
  ): Promise<T> {
    return this.runWorkflow(WORKFLOW_TYPE, workflowIdFor(plan.name), { plan, options }, stubs, drive);
  }

  /** The revert of `plan` (revertWorkflow), like run. */
  async runRevert<T>(
    plan: ResolvedPlan,
    stubs: Stubs,
    drive: (h: Awaited<ReturnType<TestWorkflowEnvironment['client']['workflow']['start']>>) => Promise<T>,
    options: RevertOptions = { autoApprove: true },
  ): Promise<T> {
    return this.runWorkflow(REVERT_WORKFLOW_TYPE, revertWorkflowIdFor(plan.name), { plan, options }, stubs, drive);
  }

  private async runWorkflow<T>(
    type: string,
    workflowId: string,
    input: unknown,
    stubs: Stubs,
    drive: (h: Awaited<ReturnType<TestWorkflowEnvironment['client']['workflow']['start']>>) => Promise<T>,
  ): Promise<T> {
    const taskQueue = `stub-${randomBytes(4).toString('hex')}`;
    const worker = await Worker.create({
      connection: this.env.nativeConnection,
      taskQueue,
      workflowBundle: this.bundle,
      activities: stubs,
      // The worker's metrics are not under test here.
      sinks: { metrics: { observe: { fn: () => undefined } } },
    });
    return worker.runUntil(async () => {
      const handle = await this.env.client.workflow.start(type, { taskQueue, workflowId, args: [input] });
      return drive(handle);
    });
  }
}

/**
 * The migration's final status, whether it completed, was aborted (the result) or rolled back on its own (the status
 * rides on the failure).
 */
export async function finalStatus(handle: { result(): Promise<unknown> }): Promise<MigrationStatus> {
  try {
    return (await handle.result()) as MigrationStatus;
  } catch (e) {
    const details = (e as { cause?: { details?: unknown[] } }).cause?.details;
    if (details?.[0]) return details[0] as MigrationStatus;
    throw e;
  }
}

/** A running workflow's handle, as StubEnv.run gives it to a test. */
export type StubHandle = Parameters<Parameters<StubEnv['run']>[2]>[0];

/** Polls the status query (wall time; the test server's clock does not move meanwhile) until `pred` holds. */
export async function until(
  h: StubHandle,
  pred: (s: MigrationStatus) => boolean,
  what: string,
): Promise<MigrationStatus> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const s = await h.query(statusQuery);
    if (pred(s)) return s;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; state ${s.state}, phase ${s.phase}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** The reason an update was refused with (fails the test if it was accepted). */
export async function rejection(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (e instanceof WorkflowUpdateFailedError) return e.cause?.message ?? e.message;
    throw e;
  }
  throw new Error('the update was accepted');
}
