// Test fixtures over real services: a fresh database per test, a worker per test file on its own task queue, a client.
import { bundleWorkflowCode, DefaultLogger, Runtime, type WorkflowBundle } from '@temporalio/worker';
import { randomBytes } from 'node:crypto';
import { Client } from 'pg';
import { TidemarkClient } from '../../src/client';
import type { MigrationStatus } from '../../src/migration/messages';
import { dropDatabase, recreateDatabase } from '../../src/infra/postgres';
import { createLogger } from '../../src/logger';
import { startWorker, type RunningWorker, type WorkerOptions } from '../../src/worker';

export const temporalAddress = (): string => process.env.TIDEMARK_TEST_TEMPORAL_ADDRESS!;
export const pgAdmin = (): string => process.env.TIDEMARK_TEST_PG_ADMIN!;

let runtimeInstalled = false;
function quietRuntime() {
  if (runtimeInstalled) return;
  runtimeInstalled = true;
  try {
    Runtime.install({
      logger: new DefaultLogger('ERROR'),
      telemetryOptions: { logging: { filter: { core: 'ERROR', other: 'ERROR' } } },
    });
  } catch {
    // already installed in this process
  }
}

export interface TestDb {
  name: string;
  url: string;
  /** The env var a plan's database.urlEnv names to reach this database. */
  urlEnv: string;
  query<T = Record<string, unknown>>(sql: string, values?: unknown[]): Promise<T[]>;
  drop(): Promise<void>;
}

/** Everything a test file needs: a worker on its own task queue, a client, and fresh databases on demand. */
export class Harness {
  readonly taskQueue = `test-${randomBytes(4).toString('hex')}`;
  readonly env: NodeJS.ProcessEnv = { ...process.env };
  client!: TidemarkClient;
  worker?: RunningWorker;
  private dbs: TestDb[] = [];
  private static bundle?: Promise<WorkflowBundle>;

  /** Starts the in-process worker (unless `worker: false`: the test runs its own, e.g. as a child process) and a client. */
  async start(opts: Partial<WorkerOptions> & { worker?: boolean } = {}): Promise<this> {
    quietRuntime();
    if (opts.worker !== false) this.worker = await this.startWorker(opts);
    this.client = await TidemarkClient.connect({ address: temporalAddress(), taskQueue: this.taskQueue });
    return this;
  }

  async startWorker(opts: Partial<WorkerOptions> = {}): Promise<RunningWorker> {
    Harness.bundle ??= bundleWorkflowCode({
      workflowsPath: require.resolve('../../src/migration'),
      logger: new DefaultLogger('WARN'),
    });
    return startWorker({
      address: temporalAddress(),
      taskQueue: this.taskQueue,
      env: this.env,
      logger: createLogger({ name: 'test-worker', level: process.env.TEST_LOG_LEVEL ?? 'warn' }),
      workflowBundle: await Harness.bundle,
      ...opts,
    });
  }

  /** A fresh database, on the machine's server unless `adminUrl` names another (a private cluster). */
  async db(label = 'db', adminUrl = pgAdmin()): Promise<TestDb> {
    const name = `tm_${label.replace(/[^a-z0-9]/g, '_')}_${randomBytes(3).toString('hex')}`;
    const url = await recreateDatabase(adminUrl, name);
    const urlEnv = `TM_${name.toUpperCase()}`;
    this.env[urlEnv] = url;
    const db: TestDb = {
      name,
      url,
      urlEnv,
      query: async <T>(sql: string, values?: unknown[]) => {
        const c = new Client({ connectionString: url });
        await c.connect();
        try {
          return (await c.query(sql, values)).rows as T[];
        } finally {
          await c.end();
        }
      },
      drop: () => dropDatabase(adminUrl, name),
    };
    this.dbs.push(db);
    return db;
  }

  /** Waits until the migration asks for approval of `gate` (see `approvalOf`). */
  approvalPending(workflowId: string, gate: string, stallMs = 120_000) {
    return approvalOf(this.client, workflowId, gate, stallMs);
  }

  async stop(): Promise<void> {
    await this.client?.close().catch(() => undefined);
    await this.worker?.shutdown().catch(() => undefined);
    if (!process.env.TIDEMARK_KEEP_TEST_DBS) for (const d of this.dbs) await d.drop().catch(() => undefined);
  }
}

/** Thrown inside an `eventually` check: stop waiting at once, the awaited state can no longer come. */
export class StopWaiting extends Error {}

export async function eventually<T>(
  fn: () => Promise<T | undefined | false>,
  what: string,
  timeoutMs = 60_000,
  everyMs = 200,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v as T;
    } catch (e) {
      if (e instanceof StopWaiting) throw e;
      last = e;
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
}

/** What moves while a migration works: its events, rows copied, checks done, flag stage. */
export function progressOf(s: MigrationStatus): string {
  return JSON.stringify([
    s.events.length,
    s.phase,
    s.copy.map((c) => c.rowsCopied),
    s.validation?.checks.length ?? 0,
    s.traffic?.percent ?? null,
  ]);
}

/**
 * Like `eventually`, but the time limit is on standing still: it resets whenever `progress()` returns something new.
 * For waits whose length depends on how busy the machine is (a copy under load), not on whether the thing happens.
 */
export async function whileProgressing<T>(
  fn: () => Promise<T | undefined | false>,
  progress: () => Promise<string>,
  what: string,
  stallMs = 120_000,
  everyMs = 200,
): Promise<T> {
  let seen = '';
  let deadline = Date.now() + stallMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v as T;
      const now = await progress();
      if (now !== seen) {
        seen = now;
        deadline = Date.now() + stallMs;
      }
    } catch (e) {
      if (e instanceof StopWaiting) throw e;
      last = e;
    }
    if (Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(
    `timed out waiting for ${what}: nothing moved for ${stallMs} ms${last ? `: ${(last as Error).message}` : ''}`,
  );
}

/**
 * Waits until `reached` holds for the migration's status and returns that status; fails at once if the migration
 * ends without it, and only after `stallMs` without progress (no new event, no row copied, no check done): a slow
 * machine makes it slower, not fail.
 */
function statusWhere(
  client: TidemarkClient,
  workflowId: string,
  reached: (s: MigrationStatus) => boolean,
  what: string,
  stallMs: number,
): Promise<MigrationStatus> {
  let latest: MigrationStatus | undefined;
  return whileProgressing(
    async () => {
      const s = (latest = await client.status(workflowId));
      if (reached(s)) return s;
      if (['rolled-back', 'failed', 'completed'].includes(s.state))
        throw new StopWaiting(`migration ${s.state} before ${what}: ${s.error}`);
      return undefined;
    },
    async () => (latest ? progressOf(latest) : ''),
    what,
    stallMs,
  );
}

/** Waits until the migration asks for approval of `gate` (see statusWhere). */
export function approvalOf(
  client: TidemarkClient,
  workflowId: string,
  gate: string,
  stallMs = 120_000,
): Promise<MigrationStatus> {
  return statusWhere(client, workflowId, (s) => s.pendingApproval?.gate === gate, `approval of ${gate}`, stallMs);
}

/**
 * Waits until the migration records an event matching `pattern` (see statusWhere). Events are only ever appended,
 * so one seen stays seen.
 */
export function eventOf(
  client: TidemarkClient,
  workflowId: string,
  pattern: RegExp,
  stallMs = 120_000,
): Promise<MigrationStatus> {
  return statusWhere(
    client,
    workflowId,
    (s) => s.events.some((e) => pattern.test(e.message)),
    `an event ${pattern}`,
    stallMs,
  );
}
