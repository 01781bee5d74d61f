// The chaos runner: one Temporal dev server (state in a file, so it can be SIGKILLed and restarted), one private
// PostgreSQL cluster (so it can be restarted), one `tidemark worker` child process (so it can be SIGKILLed), and per
// run a fresh database, the meetings migration, a ledger-keeping writer, and the faults of the run's schedule. After
// each run the invariants are checked; a violation names the seed and the command that replays it.
import { execFile } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { TidemarkClient } from '../../src/client';
import { quoteTable } from '../../src/db/quote';
import { freePort, startDevServer, type DevServer } from '../../src/infra/devserver';
import { temporalCli } from '../../src/infra/tools';
import type { MigrationStatus } from '../../src/migration/messages';
import type { ResolvedPlan } from '../../src/plan/types';
import { runCli } from '../helpers/cli';
import { exceptBothWays, flagPercent, schemaDump } from '../helpers/db-assert';
import type { TestDb } from '../helpers/env';
import { meetingsPlan, tempDir } from '../helpers/plans';
import { killed, workerProcess } from '../helpers/worker-process';
import { MEETINGS_AS_V2, V2_COLUMNS } from '../helpers/writers';
import { CHAOS_PASSWORD, ChaosCluster } from './cluster';
import { prng } from './prng';
import {
  describeSchedule,
  describeTrigger,
  FAULT_KINDS,
  scheduleFor,
  type Fault,
  type FaultKind,
  type Schedule,
  type Trigger,
} from './schedule';
import { FLAG, LedgerWriter, type WriterCounts } from './writer';

const execFileAsync = promisify(execFile);
const DB = 'chaos';
const URL_ENV = 'CHAOS_DATABASE_URL';
const PHASES = ['preflight', 'backup', 'schema', 'copy', 'validate', 'traffic', 'cleanup'];
const TERMINAL = ['completed', 'rolled-back', 'failed'];

export type Outcome = 'completed' | 'rolled-back' | 'failed' | 'no end';

export interface RunResult {
  seed: number;
  schedule: Schedule;
  outcome: Outcome;
  /** Faults injected, in order, with what each found (e.g. sessions terminated, the phase an abort landed in). */
  injected: { kind: FaultKind; note: string }[];
  /** Faults whose moment never came (the migration ended first). */
  skipped: Fault[];
  violations: string[];
  error: string | null;
  writes: WriterCounts;
  ms: number;
}

export interface ChaosOptions {
  /** Rows seeded into meetings. */
  rows?: number;
  /** A run must reach a terminal state within this bound. */
  boundMs?: number;
  log?: (line: string) => void;
}

export const replayCommand = (seed: number) => `npm run chaos -- --seed ${seed} --runs 1`;

export class ChaosLab {
  private server!: DevServer;
  private client!: TidemarkClient;
  private worker!: ChildProcess;
  private readonly workerLog = { text: '' };
  private readonly expectedExits = new WeakSet<ChildProcess>();
  private unexpectedExits: string[] = [];
  private readonly taskQueue = `chaos-${randomBytes(4).toString('hex')}`;
  private readonly dbFile = join(tempDir('tidemark-chaos-temporal-'), 'temporal.db');
  private port = 0;
  private readonly rows: number;
  private readonly boundMs: number;
  private readonly log: (line: string) => void;

  private constructor(
    readonly cluster: ChaosCluster,
    opts: ChaosOptions,
  ) {
    this.rows = opts.rows ?? 6_000;
    this.boundMs = opts.boundMs ?? 240_000;
    this.log = opts.log ?? (() => undefined);
  }

  static async open(opts: ChaosOptions = {}): Promise<ChaosLab> {
    const lab = new ChaosLab(await ChaosCluster.start(), opts);
    try {
      lab.port = await freePort();
      lab.server = await startDevServer({ port: lab.port, dbFile: lab.dbFile, headless: true });
      lab.client = await TidemarkClient.connect({ address: lab.server.address, taskQueue: lab.taskQueue });
      await lab.cluster.recreate(DB);
      lab.spawnWorker();
      return lab;
    } catch (e) {
      await lab.close();
      throw e;
    }
  }

  async close(): Promise<void> {
    if (this.worker) {
      this.expectedExits.add(this.worker);
      await killed(this.worker, 'SIGTERM');
    }
    await this.client?.close().catch(() => undefined);
    await this.server?.stop().catch(() => undefined);
    this.cluster.stop();
  }

  private get dbUrl(): string {
    return this.cluster.url(DB);
  }

  private spawnWorker(): void {
    const child = workerProcess(
      this.server.address,
      this.taskQueue,
      { [URL_ENV]: this.dbUrl, LOG_LEVEL: 'info' },
      this.workerLog,
    );
    child.once('exit', (code, signal) => {
      if (!this.expectedExits.has(child))
        this.unexpectedExits.push(`the worker exited on its own (code ${code}, signal ${signal})`);
    });
    this.worker = child;
  }

  private testDb(): TestDb {
    return {
      name: DB,
      url: this.dbUrl,
      urlEnv: URL_ENV,
      query: (sql, values) => this.cluster.query(DB, sql, values),
      drop: async () => undefined,
    };
  }

  private async plan(db: TestDb, seed: number): Promise<ResolvedPlan> {
    const base = await meetingsPlan(db, { rows: this.rows, approvals: [] });
    return {
      ...base,
      name: `chaos-${seed}-${randomBytes(2).toString('hex')}`,
      copy: [{ ...base.copy[0], batchSize: 250, maxBatchSize: 250 }],
      validate: [{ rowCount: { copy: 'meetings' } }, { checksum: { copy: 'meetings', chunkSize: 5000 } }],
      traffic: {
        ...base.traffic!,
        gates: [],
        stages: [
          { percent: 50, soak: 2000, approval: false },
          { percent: 100, soak: 3000, approval: false },
        ],
      },
      cleanup: undefined,
    };
  }

  private async copied(): Promise<number> {
    try {
      const [r] = await this.cluster.query<{ n: string }>(
        DB,
        `SELECT coalesce(sum(rows_copied), 0)::bigint AS n FROM ${quoteTable({ schema: 'tidemark', name: 'copy_progress' })} WHERE job = 'meetings'`,
      );
      return Number(r.n);
    } catch {
      return 0;
    }
  }

  private async statusOrNull(wf: string): Promise<MigrationStatus | null> {
    try {
      return await withTimeout(this.client.status(wf), 15_000);
    } catch {
      return null;
    }
  }

  /** Waits for the trigger's moment; 'ended' if the migration ended (or rolls back) first. */
  private async reach(wf: string, t: Trigger, deadline: number): Promise<'reached' | 'ended' | 'timeout'> {
    while (Date.now() < deadline) {
      if ('copied' in t && (await this.copied()) >= t.copied * this.rows) return 'reached';
      const s = await this.statusOrNull(wf);
      if (s) {
        if (TERMINAL.includes(s.state)) return 'ended';
        if (s.state === 'rolling-back') return 'reached';
        const at = PHASES.indexOf(s.phase ?? 'preflight');
        if ('phase' in t && at >= PHASES.indexOf(t.phase)) return 'reached';
        if ('copied' in t && at > PHASES.indexOf('copy')) return 'reached';
        if ('traffic' in t && ((s.traffic?.percent ?? 0) >= t.traffic || at > PHASES.indexOf('traffic')))
          return 'reached';
      }
      await sleep(100);
    }
    return 'timeout';
  }

  private async inject(wf: string, f: Fault): Promise<string> {
    switch (f.kind) {
      case 'worker-kill': {
        this.expectedExits.add(this.worker);
        await killed(this.worker, 'SIGKILL');
        this.spawnWorker();
        return 'worker SIGKILLed and restarted';
      }
      case 'temporal-kill': {
        const old = this.server.process;
        const exited = new Promise((r) => (old.exitCode !== null ? r(null) : old.once('exit', r)));
        old.kill('SIGKILL');
        await exited;
        for (let attempt = 1; ; attempt++) {
          try {
            this.server = await startDevServer({ port: this.port, dbFile: this.dbFile, headless: true });
            break;
          } catch (e) {
            if (attempt >= 5) throw e;
            await sleep(1000);
          }
        }
        return 'Temporal dev server SIGKILLed and restarted from its state file';
      }
      case 'pg-terminate': {
        const [r] = await this.cluster.query<{ n: number }>(
          DB,
          `SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
            WHERE datname = current_database() AND application_name LIKE 'tidemark%' AND pid <> pg_backend_pid()`,
        );
        return `${r.n} tidemark session(s) terminated`;
      }
      case 'pg-restart': {
        const at = await this.copied();
        await this.cluster.restart(f.mode ?? 'fast');
        return `PostgreSQL restarted (${f.mode}) at ${at} rows copied`;
      }
      case 'abort': {
        const s = await this.statusOrNull(wf);
        const where = s ? `${s.state}/${s.phase}` : 'unknown';
        for (let attempt = 1; ; attempt++) {
          try {
            const ack = await withTimeout(
              this.client.abort(wf, { by: 'chaos', reason: `scheduled ${describeTrigger(f.at)}` }),
              30_000,
            );
            return `abort accepted in ${where}: ${ack.message}`;
          } catch (e) {
            // The migration refused it (it ended, or is past the point of no return): that is an answer too.
            if ((e as Error).name === 'WorkflowUpdateFailedError')
              return `abort refused in ${where}: ${String((e as { cause?: Error }).cause?.message ?? (e as Error).message)}`;
            if (attempt >= 5) return `abort not delivered in ${where}: ${(e as Error).message.split('\n')[0]}`;
            await sleep(1000);
          }
        }
      }
    }
  }

  async run(seed: number): Promise<RunResult> {
    const started = Date.now();
    const deadline = started + this.boundMs;
    const schedule = scheduleFor(seed);
    const violations: string[] = [];
    const injected: RunResult['injected'] = [];
    const skipped: Fault[] = [];
    this.unexpectedExits = [];
    const logFrom = this.workerLog.text.length;
    this.log(`seed ${seed}: ${describeSchedule(schedule) || 'no faults'}`);

    // The worker may have been killed at the very end of the last run; it must be up before the next one.
    if (this.worker.exitCode !== null || this.worker.signalCode !== null) this.spawnWorker();
    await this.cluster.recreate(DB);
    const db = this.testDb();
    const plan = await this.plan(db, seed);
    const schemaBefore = schemaDump(db);
    const writer = await LedgerWriter.start(this.dbUrl, prng(schedule.writerSeed));
    let final: MigrationStatus | null = null;
    let wf: string;
    try {
      wf = (await this.client.start(plan, { autoApprove: true, startedBy: 'chaos' })).workflowId;
      await withTimeout(this.client.throttle(wf, { delayMs: 40 }), 30_000).catch(() => undefined);
      for (const f of schedule.faults) {
        const r = await this.reach(wf, f.at, deadline);
        if (r !== 'reached') {
          skipped.push(f);
          continue;
        }
        const note = await this.inject(wf, f);
        injected.push({ kind: f.kind, note });
        this.log(`  ${f.kind} ${describeTrigger(f.at)}: ${note}`);
      }
      while (Date.now() < deadline) {
        const s = await this.statusOrNull(wf);
        if (s && TERMINAL.includes(s.state)) {
          final = s;
          break;
        }
        await sleep(250);
      }
    } finally {
      await writer.stop();
    }

    const outcome: Outcome = (final?.state as Outcome | undefined) ?? 'no end';
    if (!final) {
      const s = await this.statusOrNull(wf);
      const pending = await this.pendingActivities(wf);
      violations.push(
        `no terminal state within ${this.boundMs / 1000}s: ${
          s
            ? `${s.state} in ${s.phase}, last events: ${s.events
                .slice(-3)
                .map((e) => e.message)
                .join(' | ')}`
            : 'status unreadable'
        }; pending activities: ${pending}`,
      );
      await (await this.client.handle(wf)).terminate('chaos: no end within the bound').catch(() => undefined);
    } else if (final.state === 'failed') violations.push(`the migration ended failed: ${final.error}`);
    violations.push(...this.unexpectedExits);

    if (final?.state === 'completed') {
      const diff = await exceptBothWays(db, MEETINGS_AS_V2, V2_COLUMNS);
      if (diff.onlyInA || diff.onlyInB)
        violations.push(
          `source and target differ: ${diff.onlyInA} row(s) only in meetings, ${diff.onlyInB} only in meetings_v2`,
        );
    }
    if (final?.state === 'rolled-back') {
      const schemaAfter = schemaDump(db);
      if (schemaAfter !== schemaBefore)
        violations.push(`the schema after the rollback differs:\n${lineDiff(schemaBefore, schemaAfter)}`);
      const leftovers = await db.query<{ what: string }>(
        `SELECT 'trigger ' || tgname || ' on ' || tgrelid::regclass::text AS what FROM pg_trigger t
           JOIN pg_class c ON c.oid = t.tgrelid WHERE NOT t.tgisinternal AND c.relnamespace <> 'tidemark'::regnamespace
         UNION ALL
         SELECT 'function tidemark.' || proname FROM pg_proc
          WHERE pronamespace = 'tidemark'::regnamespace AND proname <> 'notify_flag_change'
         UNION ALL
         SELECT 'table ' || c.oid::regclass::text FROM pg_class c
          WHERE c.relkind = 'r' AND c.relname IN ('meetings_v2', 'room_states')`,
      );
      for (const l of leftovers) violations.push(`left after the rollback: ${l.what}`);
      const pct = await flagPercent(db, FLAG);
      if (pct !== null && pct !== 0) violations.push(`the flag is at ${pct}% after the rollback`);
    }
    if (final) for (const d of await writer.compare()) violations.push(`application write: ${d}`);
    violations.push(...(await this.credentialLeaks(wf, logFrom)));

    const result: RunResult = {
      seed,
      schedule,
      outcome,
      injected,
      skipped,
      violations,
      error: final?.error ?? null,
      writes: writer.counts,
      ms: Date.now() - started,
    };
    const w = writer.counts;
    this.log(
      `  writes: old path ${w.oldPath.inserts} inserts, ${w.oldPath.updates} updates, ${w.oldPath.deletes} deletes, ` +
        `${w.oldPath.keyChanges} key changes; new path ${w.newPath.inserts} inserts, ${w.newPath.updates} updates, ` +
        `${w.newPath.deletes} deletes; refused ${JSON.stringify(w.failed)}; outcome unknown ${w.uncertain}` +
        (skipped.length ? `; not reached: ${skipped.map((f) => `${f.kind} ${describeTrigger(f.at)}`).join(', ')}` : ''),
    );
    this.log(
      `  → ${outcome}${final?.error ? ` (${final.error})` : ''} in ${(result.ms / 1000).toFixed(1)}s` +
        (violations.length ? `\n  VIOLATIONS (replay: ${replayCommand(seed)}):\n    ${violations.join('\n    ')}` : ''),
    );
    return result;
  }

  private async pendingActivities(wf: string): Promise<string> {
    try {
      const d = await (await this.client.handle(wf)).describe();
      const raw = d.raw.pendingActivities ?? [];
      return (
        raw
          .map(
            (a) =>
              `${a.activityType?.name} attempt ${a.attempt} (${a.state}, last failure: ${a.lastFailure?.message ?? 'none'})`,
          )
          .join('; ') || 'none'
      );
    } catch (e) {
      return `unreadable (${(e as Error).message.split('\n')[0]})`;
    }
  }

  /** The secret must not appear in the workflow's history, in `tidemark status --json`, or in the worker's log. */
  private async credentialLeaks(wf: string, logFrom: number): Promise<string[]> {
    const out: string[] = [];
    try {
      const show = await execFileAsync(
        temporalCli(),
        ['workflow', 'show', '--workflow-id', wf, '--address', this.server.address, '--output', 'json'],
        { maxBuffer: 256 * 1024 * 1024 },
      );
      if (show.stdout.includes(CHAOS_PASSWORD)) out.push('the password appears in `temporal workflow show`');
    } catch (e) {
      out.push(`temporal workflow show failed: ${(e as Error).message.split('\n')[0]}`);
    }
    const status = await runCli(['status', wf, '--json'], {
      TEMPORAL_ADDRESS: this.server.address,
      TIDEMARK_TASK_QUEUE: this.taskQueue,
    });
    if (status.code !== 0)
      out.push(`tidemark status --json exited ${status.code}: ${status.stderr.trim().split('\n')[0]}`);
    if ((status.stdout + status.stderr).includes(CHAOS_PASSWORD))
      out.push('the password appears in `tidemark status --json`');
    if (this.workerLog.text.slice(logFrom).includes(CHAOS_PASSWORD))
      out.push("the password appears in the worker's log");
    return out;
  }
}

export interface Summary {
  runs: number;
  outcomes: Record<Outcome, number>;
  faults: Record<FaultKind, number>;
  skipped: number;
  violations: { seed: number; violations: string[] }[];
}

export function summarize(results: RunResult[]): Summary {
  const outcomes: Record<Outcome, number> = { completed: 0, 'rolled-back': 0, failed: 0, 'no end': 0 };
  const faults = Object.fromEntries(FAULT_KINDS.map((k) => [k, 0])) as Record<FaultKind, number>;
  let skipped = 0;
  for (const r of results) {
    outcomes[r.outcome]++;
    for (const f of r.injected) faults[f.kind]++;
    skipped += r.skipped.length;
  }
  return {
    runs: results.length,
    outcomes,
    faults,
    skipped,
    violations: results.filter((r) => r.violations.length).map((r) => ({ seed: r.seed, violations: r.violations })),
  };
}

function lineDiff(a: string, b: string): string {
  const as = new Set(a.split('\n'));
  const bs = new Set(b.split('\n'));
  return [
    ...[...as].filter((l) => !bs.has(l)).map((l) => `- ${l}`),
    ...[...bs].filter((l) => !as.has(l)).map((l) => `+ ${l}`),
  ]
    .slice(0, 20)
    .join('\n');
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(t)),
    new Promise<T>((_, reject) => (t = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms))),
  ]);
}
