// Backup phase: pg_dump -Fc, verified with pg_restore --list, sha256 and metadata beside it, old dumps pruned by the
// plan's retention. No compensation (backups are kept); restoreBackup is the explicit way back (abort --restore-backup).
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { Pool } from 'pg';
import { Readable } from 'node:stream';
import { databaseName, findPgTool, libpqEnv, runTool, toolMajorVersion } from '../../db/pgtools';
import { parseTableRef, quoteIdent, quoteTable, type TableRef } from '../../db/quote';
import { scriptText } from '../../db/scripts';
import { changedTables, createdTables, parseStatements } from '../../plan/lint';
import type { ResolvedPlan } from '../../plan/types';
import { F, failure } from '../../migration/failures';
import {
  activityBody,
  backupDir,
  cancellationSignal,
  heartbeat,
  type ActivityDeps,
  type RunRef,
} from '../activity-kit';

export interface BackupResult {
  file: string;
  metadataFile: string;
  sizeBytes: number;
  sha256: string;
  tables: string[] | 'all';
  tocEntries: number;
  durationMs: number;
  pruned: string[];
}

export interface RestoreResult {
  /** The tables put back (none: nothing to restore). */
  tables: string[];
  durationMs: number;
  /** Each table's rows before the restore (what the application had written) and after it (the dump's). */
  rows?: { table: string; before: number; after: number }[];
  /** Tables restored because they reference one that is (TRUNCATE empties them together). */
  referencing?: string[];
}

export interface BackupMetadata {
  plan: string;
  workflowId: string;
  runId: string;
  createdAt: string;
  database: string;
  tables: string[] | 'all';
  sizeBytes: number;
  sha256: string;
  tocEntries: number;
  serverVersion?: string;
  pgDump: string;
  durationMs: number;
}

async function fileSha256(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** pg_dump's -t pattern for exactly one table (quoted so case and dots are literal). */
function tablePattern(t: string): string {
  const ref = parseTableRef(t);
  return `${quoteIdent(ref.schema)}.${quoteIdent(ref.name)}`;
}

function tool(deps: ActivityDeps, name: 'pg_dump' | 'pg_restore' | 'psql'): string {
  const configured =
    name === 'pg_dump' ? deps.binaries?.pgDump : name === 'pg_restore' ? deps.binaries?.pgRestore : undefined;
  const path = configured ?? findPgTool(name);
  if (!path) throw failure(F.BackupFailed, `${name} not found on the worker (set TIDEMARK_PG_BIN)`);
  return path;
}

/** Tables a restore puts back as the plan names them: its backup list, else the tables it copies from or archives. */
export function tablesToRestore(plan: ResolvedPlan): string[] {
  if (plan.backup.tables?.length) return plan.backup.tables;
  const t = new Set<string>();
  for (const j of plan.copy) if (j.from) t.add(j.from);
  for (const a of plan.cleanup?.archive ?? []) t.add(a);
  return [...t];
}

/** A table as the catalog names it, and its name for messages. */
interface RestoredTable {
  ref: TableRef;
  name: string;
}

const display = (ref: TableRef) => (ref.schema === 'public' ? ref.name : `${ref.schema}.${ref.name}`);

/** The table `written` (as a plan or script writes it: unquoted, `schema.name` or not) names now, if it exists. */
async function resolveTable(db: Pool, written: string): Promise<TableRef | undefined> {
  const parts = written.split('.');
  const r = await db.query(
    `SELECT n.nspname AS schema, c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.oid = to_regclass($1) AND c.relkind IN ('r', 'p')`,
    [parts.map((x) => quoteIdent(x)).join('.')],
  );
  return r.rows[0] as TableRef | undefined;
}

/**
 * What a restore puts back. The plan's backup list (the dump holds only those); with a dump of the whole database, the
 * tables the migration copies from or archives and those its schema steps change that it did not create (an `ALTER`,
 * a `DROP`, an `UPDATE`…: the downs bring their shape back, the dump their contents), and with them every table that
 * references one of those (TRUNCATE must empty them together; their contents are in the dump too). A table outside
 * the backup list that references one in it makes the restore impossible: said before anything is emptied.
 */
async function restoreSet(db: Pool, plan: ResolvedPlan): Promise<{ tables: RestoredTable[]; referencing: string[] }> {
  const wanted = new Set(tablesToRestore(plan));
  const wholeDump = !plan.backup.tables?.length;
  if (wholeDump) {
    const created = new Set<string>();
    const changed = new Set<string>();
    for (const step of plan.schema) {
      const stmts = await parseStatements(await scriptText(db, step.up));
      for (const t of createdTables(stmts)) created.add(t);
      for (const t of changedTables(stmts)) changed.add(t);
    }
    for (const t of changed) if (!created.has(t.split('.').pop()!)) wanted.add(t);
  }
  const tables: RestoredTable[] = [];
  const key = (r: TableRef) => `${r.schema}\u0000${r.name}`;
  const seen = new Set<string>();
  const add = (ref: TableRef) => {
    if (seen.has(key(ref))) return false;
    seen.add(key(ref));
    tables.push({ ref, name: display(ref) });
    return true;
  };
  for (const w of wanted) {
    const ref = await resolveTable(db, w);
    // A table the plan named that is not there: the restore says so (pg_restore and TRUNCATE name it).
    if (ref) add(ref);
    else if (!wholeDump) add(parseTableRef(w));
  }
  const referencing: string[] = [];
  for (let i = 0; i < tables.length; i++) {
    const r = await db.query(
      `SELECT DISTINCT n.nspname AS schema, c.relname AS name
         FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE k.contype = 'f' AND k.confrelid = to_regclass($1) ORDER BY 1, 2`,
      [quoteTable(tables[i].ref)],
    );
    for (const ref of r.rows as TableRef[]) {
      if (seen.has(key(ref))) continue;
      if (!wholeDump) {
        throw failure(
          F.BackupFailed,
          `cannot restore ${tables[i].name}: ${display(ref)} references it and is not in backup.tables (emptying ` +
            `${tables[i].name} would empty it too). Nothing was restored; add ${display(ref)} to backup.tables, or ` +
            `restore by hand with pg_restore`,
        );
      }
      add(ref);
      referencing.push(`${display(ref)} (it references ${tables[i].name})`);
    }
  }
  return { tables, referencing };
}

/**
 * The tables ordered so that each comes after every other one of them it references (a cycle keeps the order it
 * had: its rows may not load, and the restore says which key failed).
 */
async function referencedFirst(db: Pool, tables: RestoredTable[]): Promise<RestoredTable[]> {
  const refs = await Promise.all(
    tables.map(async (t) => {
      const r = await db.query(
        `SELECT DISTINCT confrelid::regclass::text AS t FROM pg_constraint
          WHERE contype = 'f' AND conrelid = to_regclass($1) AND confrelid <> conrelid`,
        [quoteTable(t.ref)],
      );
      return new Set((r.rows as { t: string }[]).map((x) => x.t));
    }),
  );
  const names = await Promise.all(
    tables.map(async (t) => (await db.query(`SELECT to_regclass($1)::text AS t`, [quoteTable(t.ref)])).rows[0].t),
  );
  const out: RestoredTable[] = [];
  const placed = new Set<number>();
  while (placed.size < tables.length) {
    const ready = tables.findIndex(
      (_, i) => !placed.has(i) && names.every((n, j) => placed.has(j) || j === i || !refs[i].has(n)),
    );
    const next = ready >= 0 ? ready : tables.findIndex((_, i) => !placed.has(i));
    placed.add(next);
    out.push(tables[next]);
  }
  return out;
}

/** Each table's row count, in order. */
async function rowCounts(db: Pool, tables: RestoredTable[]): Promise<number[]> {
  const out: number[] = [];
  for (const t of tables) {
    const r = await db.query(`SELECT count(*)::bigint AS n FROM ${quoteTable(t.ref)}`).catch(() => undefined);
    out.push(Number(r?.rows[0].n ?? -1));
  }
  return out;
}

export function createBackupActivities(deps: ActivityDeps) {
  return {
    async createBackup(input: { plan: ResolvedPlan; run: RunRef }): Promise<BackupResult> {
      const { plan } = input;
      return activityBody('backup', async () => {
        const url = deps.pools.url(plan.database.urlEnv);
        const pgDump = tool(deps, 'pg_dump');
        const pgRestore = tool(deps, 'pg_restore');
        const { workflowId, runKey: runId } = input.run;
        const t0 = Date.now();
        const dir = backupDir(plan.backup.dir, deps.env);
        await mkdir(dir, { recursive: true });
        const file = join(dir, dumpFileName(plan.name, new Date(), runId));
        const tmp = `${file}.partial`;
        const tables = plan.backup.tables?.length ? plan.backup.tables : undefined;
        const args = [
          '-Fc',
          '--no-password',
          '--verbose',
          '-f',
          tmp,
          ...(tables ?? []).flatMap((t) => ['-t', tablePattern(t)]),
        ];

        let dumped = 0;
        const beat = setInterval(async () => {
          const size = await stat(tmp)
            .then((s) => s.size)
            .catch(() => 0);
          heartbeat({ tablesDumped: dumped, bytesWritten: size });
        }, 2000);
        let res;
        try {
          res = await runTool(pgDump, args, {
            env: libpqEnv(url),
            signal: cancellationSignal(),
            onStderrLine: (l) => {
              if (/dumping contents of table/.test(l)) dumped++;
            },
          });
        } catch (e) {
          // Cancelled (an abort) or pg_dump could not start: no half-written dump is left behind.
          await rm(tmp, { force: true });
          throw e;
        } finally {
          clearInterval(beat);
        }
        if (res.code !== 0) {
          await rm(tmp, { force: true });
          const err =
            res.stderr
              .split('\n')
              .filter((l) => /error|fatal/i.test(l))
              .slice(0, 3)
              .join(' ') || res.stderr.slice(-300);
          throw failure(F.BackupError, `pg_dump exited with ${res.code}: ${err.trim()}`);
        }

        // Verify: the archive must be readable and hold every table asked for.
        const list = await runTool(pgRestore, ['--list', tmp], { env: {} });
        if (list.code !== 0) {
          await rm(tmp, { force: true });
          throw failure(
            F.BackupError,
            `pg_restore --list could not read the dump: ${list.stderr.trim().slice(0, 300)}`,
          );
        }
        const toc = list.stdout.split('\n').filter((l) => /^\d+;/.test(l));
        for (const t of tables ?? []) {
          const ref = parseTableRef(t);
          if (!toc.some((l) => l.includes(`TABLE DATA ${ref.schema} ${ref.name} `))) {
            await rm(tmp, { force: true });
            throw failure(F.BackupFailed, `backup verification failed: the dump holds no data for ${t}`);
          }
        }
        await rename(tmp, file);
        const { size } = await stat(file);
        const sha256 = await fileSha256(file);
        const dumpVersion = await toolMajorVersion(pgDump);
        const meta: BackupMetadata = {
          plan: plan.name,
          workflowId,
          runId,
          createdAt: new Date().toISOString(),
          database: databaseName(url),
          tables: tables ?? 'all',
          sizeBytes: size,
          sha256,
          tocEntries: toc.length,
          pgDump: dumpVersion?.text ?? pgDump,
          durationMs: Date.now() - t0,
        };
        const metadataFile = `${file}.json`;
        await writeFile(metadataFile, JSON.stringify(meta, null, 2) + '\n');
        const pruned =
          plan.backup.retain !== undefined
            ? await pruneBackups(dir, plan.name, basename(file), plan.backup.retain)
            : [];
        deps.logger.info({ file, size, tables: meta.tables }, 'backup written and verified');
        return {
          file,
          metadataFile,
          sizeBytes: size,
          sha256,
          tables: meta.tables,
          tocEntries: toc.length,
          durationMs: meta.durationMs,
          pruned,
        };
      });
    },

    /**
     * Puts the backed-up contents of the plan's tables back: in one transaction, empties each table and reloads it
     * from the dump (pg_restore --data-only piped into psql --single-transaction), so readers never see it empty.
     */
    async restoreBackup(input: { plan: ResolvedPlan; file: string; sha256: string }): Promise<RestoreResult> {
      const { plan } = input;
      return activityBody('restoring backup', async () => {
        const url = deps.pools.url(plan.database.urlEnv);
        const db = deps.pools.get(plan.database.urlEnv);
        const t0 = Date.now();
        if ((await fileSha256(input.file)) !== input.sha256) {
          throw failure(F.BackupFailed, `backup ${input.file} does not match its recorded sha256; refusing to restore`);
        }
        const set = await restoreSet(db, plan);
        if (!set.tables.length) return { tables: [], durationMs: 0, rows: [], referencing: [] };
        const pgRestore = tool(deps, 'pg_restore');
        const psql = findPgTool('psql');
        if (!psql) throw failure(F.BackupFailed, 'psql not found on the worker (set TIDEMARK_PG_BIN)');
        // One table at a time, a referenced table before those referencing it: pg_restore's own order does not
        // follow the foreign keys, and a row loaded before the one it references fails the check.
        const scripts: string[] = [];
        for (const { ref } of await referencedFirst(db, set.tables)) {
          const args = ['--data-only', '-f', '-', '-n', ref.schema, '-t', ref.name, input.file];
          const script = await runTool(pgRestore, args, { env: {} });
          if (script.code !== 0)
            throw failure(F.BackupError, `pg_restore failed: ${script.stderr.trim().slice(0, 300)}`);
          scripts.push(script.stdout);
        }
        const before = await rowCounts(db, set.tables);
        const sql = `SET lock_timeout = '${Math.max(1000, plan.lockTimeout)}ms';\nTRUNCATE ${set.tables.map((t) => quoteTable(t.ref)).join(', ')};\n${scripts.join('\n')}`;
        const res = await runTool(psql, ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '--single-transaction', '-f', '-'], {
          env: libpqEnv(url),
          stdin: Readable.from([sql]),
        });
        if (res.code !== 0) throw failure(F.BackupError, `restore failed: ${res.stderr.trim().slice(0, 500)}`);
        const after = await rowCounts(db, set.tables);
        const tables = set.tables.map((t) => t.name);
        const rows = set.tables.map((t, i) => ({ table: t.name, before: before[i], after: after[i] }));
        deps.logger.info({ tables, rows, file: input.file }, 'backup restored');
        return { tables, durationMs: Date.now() - t0, rows, referencing: set.referencing };
      });
    },
  };
}

/** The name of a dump of `plan`: the plan, the time, the run. */
export function dumpFileName(plan: string, at: Date, runKey: string): string {
  const stamp = at.toISOString().replace(/[-:]/g, '').replace(/\..*/, '');
  return `${plan}-${stamp}-${runKey.slice(0, 8)}.dump`;
}

/**
 * Whether `name` is a dump of exactly `plan`: plan names may prefix one another (relp, relp-v2), so the whole name
 * must match, and the dump's metadata, when it has some, must name the plan.
 */
async function isDumpOf(dir: string, name: string, plan: string): Promise<boolean> {
  if (!new RegExp(`^${plan}-\\d{8}T\\d{6}-[0-9a-z-]{8}\\.dump$`).test(name)) return false;
  try {
    const meta = JSON.parse(await readFile(join(dir, `${name}.json`), 'utf8')) as { plan?: unknown };
    return meta.plan === undefined || meta.plan === plan;
  } catch {
    return true; // no (readable) metadata: the name alone says whose it is
  }
}

/** Deletes all but the newest `retain` earlier dumps of this plan (and their metadata); never the one just written. */
export async function pruneBackups(dir: string, plan: string, keep: string, retain: number): Promise<string[]> {
  const names: string[] = [];
  for (const n of await readdir(dir)) if (n !== keep && (await isDumpOf(dir, n, plan))) names.push(n);
  const withTimes = await Promise.all(names.map(async (n) => ({ n, t: (await stat(join(dir, n))).mtimeMs })));
  withTimes.sort((a, b) => b.t - a.t);
  const doomed = withTimes.slice(retain).map((x) => x.n);
  for (const n of doomed) {
    await rm(join(dir, n), { force: true });
    await rm(join(dir, `${n}.json`), { force: true });
  }
  return doomed;
}
