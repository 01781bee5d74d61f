// Backup phase: pg_dump -Fc, verified with pg_restore --list, sha256 and metadata beside it, old dumps pruned by the
// plan's retention. No compensation (backups are kept); restoreBackup is the explicit way back (abort --restore-backup).
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { Readable } from 'node:stream';
import { databaseName, findPgTool, libpqEnv, runTool, toolMajorVersion } from '../../db/pgtools';
import { parseTableRef, quoteIdent, quoteTable } from '../../db/quote';
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

/** Tables a restore puts back: the plan's backup list, else the tables the migration copies from or archives. */
export function tablesToRestore(plan: ResolvedPlan): string[] {
  if (plan.backup.tables?.length) return plan.backup.tables;
  const t = new Set<string>();
  for (const j of plan.copy) if (j.from) t.add(j.from);
  for (const a of plan.cleanup?.archive ?? []) t.add(a);
  return [...t];
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
    async restoreBackup(input: {
      plan: ResolvedPlan;
      file: string;
      sha256: string;
    }): Promise<{ tables: string[]; durationMs: number }> {
      const { plan } = input;
      return activityBody('restoring backup', async () => {
        const url = deps.pools.url(plan.database.urlEnv);
        const t0 = Date.now();
        if ((await fileSha256(input.file)) !== input.sha256) {
          throw failure(F.BackupFailed, `backup ${input.file} does not match its recorded sha256; refusing to restore`);
        }
        const tables = tablesToRestore(plan);
        if (!tables.length) return { tables, durationMs: 0 };
        const pgRestore = tool(deps, 'pg_restore');
        const psql = findPgTool('psql');
        if (!psql) throw failure(F.BackupFailed, 'psql not found on the worker (set TIDEMARK_PG_BIN)');
        const args = [
          '--data-only',
          '-f',
          '-',
          ...tables.flatMap((t) => ['-n', parseTableRef(t).schema, '-t', parseTableRef(t).name]),
          input.file,
        ];
        const script = await runTool(pgRestore, args, { env: {} });
        if (script.code !== 0) throw failure(F.BackupError, `pg_restore failed: ${script.stderr.trim().slice(0, 300)}`);
        const sql = `SET lock_timeout = '${Math.max(1000, plan.lockTimeout)}ms';\nTRUNCATE ${tables.map((t) => quoteTable(t)).join(', ')};\n${script.stdout}`;
        const res = await runTool(psql, ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '--single-transaction', '-f', '-'], {
          env: libpqEnv(url),
          stdin: Readable.from([sql]),
        });
        if (res.code !== 0) throw failure(F.BackupError, `restore failed: ${res.stderr.trim().slice(0, 500)}`);
        deps.logger.info({ tables, file: input.file }, 'backup restored');
        return { tables, durationMs: Date.now() - t0 };
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
