// Preflight: read-only checks before anything changes. Every finding is ok, warn or fail with a reason. No compensation:
// nothing here writes (all queries run in a READ ONLY transaction).
import { statfs } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Pool, PoolClient } from 'pg';
import { describeHold, holdsOn, tableKey } from '../../db/claims';
import { functionContext, hasUniqueIndexOn, serverVersionNum, tableColumns, tableExists } from '../../db/catalog';
import { formatPgError, isConnectionLoss } from '../../db/errors';
import { ARCHIVE_SCHEMA } from '../../db/names';
import { findPgTool, toolMajorVersion } from '../../db/pgtools';
import { parseTableRef, quoteIdent, quoteTable } from '../../db/quote';
import { inSavepoint, inTransaction, singleValue } from '../../db/tx';
import type { ResolvedPlan } from '../../plan/types';
import { formatDuration } from '../../plan/durations';
import { createdTableColumns, createdTables, declaredForeignKeys, parseStatements } from '../../plan/lint';
import { identityHoldsKey, logicalAllowed } from '../copy/logical';
import { bareColumn, keyFillRefusal, sourceSyncRefusal } from '../copy/mapping';
import { describeKey, jobKeys } from '../../plan/keys';
import { unprotectedMessage, unprotectedTargets } from '../../plan/validate';
import { F, failure } from '../../migration/failures';
import { storeScripts } from '../../db/scripts';
import { planScripts, planSteps } from '../../plan/scripts';
import { stepStates, type StepState } from '../../plan/ledger';
import { readLedger } from '../../db/ledger';
import { activityBody, backupDir, targetPool, type ActivityDeps } from '../activity-kit';
import { databasesOf, type Side } from '../../plan/databases';
import { stepTables } from '../schema/claims';

export type FindingStatus = 'ok' | 'warn' | 'fail';

export interface Finding {
  check: string;
  status: FindingStatus;
  message: string;
}

export interface PreflightReport {
  ok: boolean;
  findings: Finding[];
  serverVersion: string;
  /** What the ledger says about each step of the plan (applied by an earlier run, pending, drifted). */
  steps?: StepState[];
}

const MIN_SERVER_VERSION = 110000;

/** Tables the plan reads or changes (sources, targets that exist, archive list, backup list). */
function tablesInvolved(plan: ResolvedPlan): string[] {
  const t = new Set<string>();
  for (const j of plan.copy) {
    if (j.from) t.add(j.from);
    t.add(j.to);
  }
  for (const a of plan.cleanup?.archive ?? []) t.add(a);
  for (const b of plan.backup.tables ?? []) t.add(b);
  return [...t];
}

async function existingDir(path: string): Promise<string> {
  let p = path;
  for (;;) {
    try {
      await statfs(p);
      return p;
    } catch {
      const up = dirname(p);
      if (up === p) return p;
      p = up;
    }
  }
}

export interface PreflightOptions {
  binaries?: ActivityDeps['binaries'];
  /** The worker's environment ($TIDEMARK_BACKUP_ROOT places relative backup directories). */
  env?: NodeJS.ProcessEnv;
}

/** Runs every preflight check against the database; shared by the workflow's activity and `plan check --rehearse`. */
export async function runPreflightChecks(
  pool: Pool,
  plan: ResolvedPlan,
  opts: PreflightOptions = {},
): Promise<PreflightReport> {
  const findings: Finding[] = [];
  const add = (check: string, status: FindingStatus, message: string) => findings.push({ check, status, message });
  let serverVersion = 'unknown';
  let steps: StepState[] | undefined;

  let client: PoolClient;
  let lost: Error | undefined;
  try {
    client = await pool.connect();
  } catch (e) {
    add('connectivity', 'fail', `cannot connect: ${formatPgError(e)}`);
    return { ok: false, findings, serverVersion };
  }
  try {
    await inTransaction(client, { readOnly: true, statementTimeoutMs: 60_000 }, async (c) => {
      const v = await serverVersionNum(c);
      serverVersion = (await c.query('SHOW server_version')).rows[0].server_version;
      add('connectivity', 'ok', `connected to ${(await c.query('SELECT current_database() AS d')).rows[0].d}`);
      add(
        'server version',
        v >= MIN_SERVER_VERSION ? 'ok' : 'fail',
        v >= MIN_SERVER_VERSION ? `PostgreSQL ${serverVersion}` : `PostgreSQL ${serverVersion} is older than 11`,
      );
      const serverMajor = Math.floor(v / 10000);

      if (plan.backup.enabled) {
        for (const tool of ['pg_dump', 'pg_restore'] as const) {
          const path = (tool === 'pg_dump' ? opts.binaries?.pgDump : opts.binaries?.pgRestore) ?? findPgTool(tool);
          const ver = path ? await toolMajorVersion(path) : undefined;
          if (!path || !ver)
            add(tool, 'fail', `${tool} not found (install the PostgreSQL client programs or set TIDEMARK_PG_BIN)`);
          else if (ver.major < serverMajor)
            add(tool, 'fail', `${ver.text} is older than the server (${serverMajor}); it cannot dump this database`);
          else add(tool, 'ok', `${ver.text} at ${path}`);
        }
        await checkBackupSpace(c, plan, add, opts.env);
      } else add('backup', 'warn', 'backups are disabled for this plan');

      steps = await checkLedger(c, plan, add);
      await checkConnections(c, plan, add);
      await checkLocksAndTransactions(c, plan, add);
      await checkCopyKeys(c, plan, add);
      await checkCopySources(c, plan, add);
      // Blue-green: the targets are in the other database (checkTargetDatabase looks there).
      if (!plan.target) {
        await checkCopyTargets(c, plan, add);
        await checkMappings(c, plan, add);
      }
      await checkArchive(c, plan, add);
      await checkClaims(c, plan, add);
      for (const job of unprotectedTargets(plan)) add(`copy ${job.name}: rollback`, 'fail', unprotectedMessage(job));
      await checkFlag(c, plan, add);
      await runPlanChecks(c, plan, add);
    });
  } catch (e) {
    // A lost connection says nothing about the plan: the attempt fails and is retried on a fresh one.
    if (isConnectionLoss(e)) lost = e as Error;
    else add('preflight', 'fail', `preflight query failed: ${formatPgError(e)}`);
  } finally {
    client.release(lost);
  }
  if (lost) throw lost;
  return { ok: !findings.some((f) => f.status === 'fail'), findings, serverVersion, steps };
}

type Add = (check: string, status: FindingStatus, message: string) => void;

async function checkBackupSpace(c: PoolClient, plan: ResolvedPlan, add: Add, env?: NodeJS.ProcessEnv) {
  let bytes: number;
  if (plan.backup.tables?.length) {
    bytes = 0;
    for (const t of plan.backup.tables) {
      const r = await c.query(`SELECT coalesce(pg_total_relation_size(to_regclass($1)), 0)::float8 AS b`, [
        quoteTable(t),
      ]);
      bytes += r.rows[0].b;
    }
  } else {
    bytes = (await c.query(`SELECT pg_database_size(current_database())::float8 AS b`)).rows[0].b;
  }
  const dir = await existingDir(backupDir(plan.backup.dir, env));
  try {
    const fs = await statfs(dir);
    const free = fs.bavail * fs.bsize;
    // A custom-format dump is compressed and excludes indexes; half the on-disk size is a safe upper estimate.
    const estimate = Math.ceil(bytes / 2);
    const mb = (n: number) => `${(n / 1048576).toFixed(1)} MB`;
    if (free < estimate)
      add('backup space', 'fail', `${mb(free)} free in ${dir}, dump estimated at up to ${mb(estimate)}`);
    else if (free < estimate * 3)
      add('backup space', 'warn', `only ${mb(free)} free in ${dir} for a dump of up to ${mb(estimate)}`);
    else add('backup space', 'ok', `${mb(free)} free in ${dir}, dump estimated at up to ${mb(estimate)}`);
  } catch (e) {
    add('backup space', 'warn', `cannot read free space of ${dir}: ${(e as Error).message}`);
  }
}

/**
 * The ledger: steps an earlier run of this plan applied are not applied again (said here, and by the schema phase);
 * a step whose SQL changed since it was applied is drift, and refused with both checksums.
 */
async function checkLedger(c: PoolClient, plan: ResolvedPlan, add: Add): Promise<StepState[]> {
  const states = stepStates(await readLedger(c, plan.name), planSteps(plan));
  for (const s of states) {
    const by = s.appliedBy ? `${s.appliedBy.workflowId} (run ${s.appliedBy.runId}) at ${s.appliedAt}` : '';
    if (s.state === 'drift') {
      add(
        `step ${s.step}`,
        'fail',
        `drift: changed since ${by} applied it — ${s.drift}. Restore the script as it was applied, or revert the migration (tidemark revert ${plan.name}) before changing it`,
      );
    } else if (s.state === 'applied' && s.inPlan) {
      add(`step ${s.step}`, 'ok', `already applied by ${by}: not applied again`);
    } else if (s.state === 'applied') {
      add(`step ${s.step}`, 'warn', `applied by ${by} but no longer in the plan: left as it is`);
    }
  }
  return states;
}

async function checkConnections(c: PoolClient, plan: ResolvedPlan, add: Add) {
  const r = await c.query(
    `SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int AS active,
            current_setting('max_connections')::int AS max`,
  );
  const { active, max } = r.rows[0] as { active: number; max: number };
  const limit = plan.preflight.maxActiveConnections;
  if (limit !== undefined && active > limit)
    add('connections', 'fail', `${active} active connections, plan allows at most ${limit}`);
  else if (active > 0.8 * max)
    add('connections', 'warn', `${active} of max_connections ${max} in use; the copy needs a few more`);
  else add('connections', 'ok', `${active} of ${max} connections in use`);
}

async function checkLocksAndTransactions(c: PoolClient, plan: ResolvedPlan, add: Add) {
  const tables = tablesInvolved(plan).map((t) => quoteTable(t));
  const maxAge = plan.preflight.maxTransactionAge;
  const locks = await c.query(
    `SELECT l.pid, l.mode, c.relname, a.state, (extract(epoch FROM now() - a.xact_start) * 1000)::float8 AS age_ms
       FROM pg_locks l
       JOIN pg_class c ON c.oid = l.relation
       LEFT JOIN pg_stat_activity a ON a.pid = l.pid
      WHERE l.relation = ANY (SELECT to_regclass(x) FROM unnest($1::text[]) AS x)
        -- A relation's oid names another table in another database.
        AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND l.pid <> pg_backend_pid()
        AND (NOT l.granted OR l.mode IN ('ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')
             OR a.xact_start < now() - make_interval(secs => $2::float8 / 1000))`,
    [tables, maxAge],
  );
  if (locks.rowCount) {
    for (const l of locks.rows.slice(0, 5)) {
      const strong = ['ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock'].includes(l.mode);
      add(
        'locks',
        strong ? 'fail' : 'warn',
        `pid ${l.pid} holds ${l.mode} on ${l.relname} (${l.state ?? 'unknown state'}, transaction open ${formatDuration(l.age_ms ?? 0)}); DDL and sync triggers would wait behind it`,
      );
    }
  } else add('locks', 'ok', 'no blocking locks on the tables involved');

  // In this database only: another database's sessions neither block these tables nor hold back what the copy and the
  // schema steps wait for. Named by pid, user and application, never by their query's text: that is another session's
  // SQL (values, perhaps a password), and the findings go into the history.
  const long = await c.query(
    `SELECT pid, state, usename, application_name, (extract(epoch FROM now() - xact_start) * 1000)::float8 AS age_ms
       FROM pg_stat_activity
      WHERE datname = current_database() AND xact_start < now() - make_interval(secs => $1::float8 / 1000)
        AND pid <> pg_backend_pid()
      ORDER BY xact_start LIMIT 5`,
    [maxAge],
  );
  if (long.rowCount) {
    for (const t of long.rows) {
      const who = [t.usename && `user ${t.usename}`, t.application_name && `application "${t.application_name}"`];
      add(
        'long transactions',
        'warn',
        `pid ${t.pid} (${[...who.filter(Boolean), t.state].join(', ')}) has a transaction open for ${formatDuration(t.age_ms)}`,
      );
    }
  } else add('long transactions', 'ok', `no transaction in this database open longer than ${formatDuration(maxAge)}`);
}

async function checkCopyKeys(c: PoolClient, plan: ResolvedPlan, add: Add) {
  for (const job of plan.copy) {
    if (!job.from) continue;
    const check = `copy ${job.name}: key`;
    const cols = await tableColumns(c, job.from);
    if (!cols.length) {
      add(check, 'fail', `source table ${job.from} does not exist`);
      continue;
    }
    const key = jobKeys(job).source;
    const shown = describeKey({ key });
    const missing = key.filter((k) => !cols.some((col) => col.name === k));
    if (missing.length) {
      add(check, 'fail', `source table ${job.from} has no column ${missing.map((k) => `"${k}"`).join(', ')}`);
      continue;
    }
    const ks = key.map(quoteIdent);
    // A unique index allows any number of NULLs, and a NULL in the key puts a row in no key range: such rows would be
    // neither copied nor compared.
    const nullable = key.filter((k) => !cols.find((col) => col.name === k)!.notNull).map(quoteIdent);
    if (nullable.length) {
      const nulls = (
        await c.query(
          `SELECT count(*)::int AS n FROM ${quoteTable(job.from)} WHERE ${nullable.map((k) => `${k} IS NULL`).join(' OR ')}`,
        )
      ).rows[0].n;
      if (nulls > 0) {
        add(
          check,
          'fail',
          `${job.from}.${shown} is NULL in ${nulls} row(s): a NULL key can be neither copied nor compared`,
        );
        continue;
      }
    }
    if (await hasUniqueIndexOn(c, job.from, key)) {
      add(check, 'ok', `${job.from}.${shown} is unique (index)`);
      continue;
    }
    const dup = await c.query(
      `SELECT (${ks.join(` || ', ' || `)})::text AS k, count(*)::int AS n FROM ${quoteTable(job.from)} GROUP BY ${ks.join(', ')} HAVING count(*) > 1 LIMIT 3`,
    );
    if (dup.rowCount) {
      const ex = dup.rows.map((r) => `${r.k ?? 'NULL'} (${r.n}×)`).join(', ');
      add(check, 'fail', `${job.from}.${shown} is not a unique, non-null key: ${ex}`);
    } else {
      add(
        check,
        'warn',
        `${job.from}.${shown} holds unique values but has no unique index; the copy could miss rows if duplicates appear`,
      );
    }
  }
}

/**
 * Errors that a schema step could yet make go away: something it may create (a table, column, function, type, an
 * enum's label).
 */
const MAY_BE_CREATED = new Set(['42P01', '42703', '42883', '42704', '3F000', '22P02', '42804']);

/** The schema steps that run on `side` (in one database, all of them). */
const stepsOn = (plan: ResolvedPlan, side: 'source' | 'target') =>
  plan.schema.filter((s) => !plan.target || (s.on ?? 'target') === side);

/** Whether one of `steps` names `name` in its SQL (as a whole word, quoted or not, in any case). */
function stepsMention(steps: ResolvedPlan['schema'], name: string): boolean {
  const escaped = name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const named = new RegExp(`(^|[^A-Za-z0-9_$])${escaped}($|[^A-Za-z0-9_$])`, 'i');
  return steps.some((s) => named.test(s.up.sql ?? ''));
}

/**
 * Whether a schema step that runs in the source database may create what `err` says is missing: a step's SQL names
 * it (`column s.nme does not exist` → nme; `invalid input value for enum t: "x"` → x), or the error names nothing
 * (an operator, say) and some step runs there.
 */
function mayBeCreated(plan: ResolvedPlan, err: unknown): boolean {
  if (!MAY_BE_CREATED.has((err as { code?: string }).code ?? '')) return false;
  const steps = stepsOn(plan, 'source');
  const message = (err as Error).message ?? '';
  const m =
    /^(?:column|relation|function|type|schema) "?([^"(]+?)"?(?:\(.*\))? does not exist/.exec(message) ??
    /^invalid input value for enum [^:]+: "(.*)"$/.exec(message) ??
    /^column "(.+)" is of type .* but expression is of type/.exec(message);
  if (!m && ['22P02', '42804'].includes((err as { code?: string }).code ?? '')) return false;
  const name = m?.[1].split('.').pop();
  if (!name) return steps.length > 0;
  return stepsMention(steps, name);
}

/**
 * Whether tidemark's trigger functions in this database can run as their owner (SECURITY DEFINER, with a pinned search
 * path): not while another login role can create objects on that path, so such a database gets functions that run as
 * the writer's role, and a warning saying what that role then needs.
 */
async function checkTriggerFunctions(c: PoolClient, plan: ResolvedPlan, check: string, add: Add) {
  if (!plan.copy.some((j) => j.sync !== 'none')) return;
  const functions = await functionContext(c);
  if (functions.definer) return;
  add(
    check,
    'warn',
    `${functions.untrusted} can create objects on the search path, so tidemark's triggers run as the application's ` +
      `role, not as their owner (a function put there could run with the owner's rights): that role needs USAGE on ` +
      `schema tidemark and INSERT on its tables, and privileges on the other table; or revoke CREATE on that schema`,
  );
}

/**
 * The source half of each copy job, before anything changes: the key fill, whether a synced source can be synced
 * exactly (sourceSyncRefusal), and each expression of the mapping run over the source (`LIMIT 0`: parsed and typed,
 * no row read). The copy phase checks all of this too, but only after the backup and the schema steps ran.
 */
async function checkCopySources(c: PoolClient, plan: ResolvedPlan, add: Add) {
  await checkTriggerFunctions(c, plan, 'trigger functions', add);
  for (const job of plan.copy) {
    const check = `copy ${job.name}: source`;
    if (job.from && !(await tableColumns(c, job.from)).length) continue; // checkCopyKeys said so
    const keyFill = job.columns && keyFillRefusal(job.columns, jobKeys(job));
    if (keyFill) {
      add(check, 'fail', keyFill);
      continue;
    }
    const refusal = await sourceSyncRefusal(c, job);
    if (refusal) {
      // A step may change the source first (the unique index the refusal asks for, say).
      const changed = job.from && stepsMention(stepsOn(plan, 'source'), parseTableRef(job.from).name);
      if (changed) add(check, 'warn', `${refusal} (unless a schema step changes ${job.from} first)`);
      else add(check, 'fail', refusal);
      continue;
    }
    const from = job.from ? `${quoteTable(job.from)} AS s` : `(${job.query!.trim().replace(/;\s*$/, '')}) AS s`;
    /**
     * The error of `SELECT (expr)` over the source, if any; the transaction goes on. With `into`, the value is also
     * written into that column of the target as it is now (EXPLAIN only: nothing runs), so a value its column cannot
     * take (text into an enum) is found too.
     */
    const probe = async (expr: string, into?: string): Promise<unknown> => {
      const select = `SELECT (${expr}) FROM ${from} LIMIT 0`;
      const sql = into ? `EXPLAIN INSERT INTO ${quoteTable(job.to)} (${quoteIdent(into)}) ${select}` : select;
      try {
        await inSavepoint(c, () => c.query(sql), { undo: true });
        return undefined;
      } catch (e) {
        // A position in the statement built here would point nowhere in the plan.
        delete (e as { position?: string }).position;
        return e;
      }
    };
    const exprs = Object.entries(job.columns ?? {});
    const failed: { what: string; err: unknown }[] = [];
    const queryErr = job.query ? await probe('1') : undefined;
    // Into the target as it is now: in one database, where it exists already with the column.
    const targetCols = plan.target ? [] : (await tableColumns(c, job.to)).map((col) => col.name);
    if (queryErr) failed.push({ what: 'the source query', err: queryErr });
    else
      for (const [column, expr] of exprs) {
        const err = (await probe(expr)) ?? (targetCols.includes(column) ? await probe(expr, column) : undefined);
        if (err) failed.push({ what: `"${column}" ← ${expr}`, err });
      }
    const said = failed.map((f) => `${f.what}: ${formatPgError(f.err)}`).join('; ');
    const source = job.from ?? 'the source query';
    if (!failed.length) {
      const syncs = job.sync !== 'none' && job.from ? '; it can be synced exactly' : '';
      add(
        check,
        'ok',
        `${exprs.length ? `${exprs.length} column expression(s) run on ${source}` : `${source} reads`}${syncs}`,
      );
    } else if (failed.every((f) => mayBeCreated(plan, f.err)))
      add(check, 'warn', `${said} (unless a schema step creates it first)`);
    else add(check, 'fail', said);
  }
}

/**
 * Each copy target exists now or a schema step creates it; otherwise the copy would fail only after the backup and
 * the schema steps ran. Steps are read with PostgreSQL's parser; a step that could create tables out of sight (a DO
 * block, a function call) or does not parse turns a missing target into a warning, not a failure.
 */
async function checkCopyTargets(c: PoolClient, plan: ResolvedPlan, add: Add) {
  const created = new Map<string, string>();
  let opaque = false;
  for (const step of plan.schema) {
    try {
      const stmts = await parseStatements(step.up.sql);
      for (const t of createdTables(stmts)) created.set(t, step.id);
      if (stmts.some((st) => ['DoStmt', 'CallStmt', 'ExecuteStmt', 'SelectStmt'].includes(st.kind))) opaque = true;
    } catch {
      opaque = true;
    }
  }
  for (const job of plan.copy) {
    const check = `copy ${job.name}: target`;
    const ref = parseTableRef(job.to);
    if ((await c.query(`SELECT to_regclass($1) IS NOT NULL AS x`, [quoteTable(ref)])).rows[0].x) {
      add(check, 'ok', `${job.to} exists`);
    } else if (created.has(ref.name)) {
      add(check, 'ok', `${job.to} is created by schema step ${created.get(ref.name)}`);
    } else {
      add(
        check,
        opaque ? 'warn' : 'fail',
        `${job.to} does not exist and no schema step creates it${opaque ? ' (unless a DO block or function call does)' : ''}`,
      );
    }
  }
}

/**
 * What can be told of each mapping before anything changes: the target columns it writes exist (in the table, or in
 * the CREATE TABLE of a schema step), and under bidirectional sync every NOT NULL column of the old table without a
 * default is written back — otherwise every write on the new path fails in the reverse trigger once traffic moves.
 * (The copy phase also writes through each trigger once, undone, before it copies a row.)
 */
async function checkMappings(c: PoolClient, plan: ResolvedPlan, add: Add, tc: PoolClient = c) {
  const created = new Map<string, Set<string>>();
  for (const step of plan.schema) {
    try {
      for (const [t, cols] of createdTableColumns(await parseStatements(step.up.sql))) created.set(t, cols);
    } catch {
      // checkCopyTargets reports steps that do not parse
    }
  }
  for (const job of plan.copy) {
    const check = `copy ${job.name}: mapping`;
    const existing = await tableColumns(tc, job.to);
    const targetCols = existing.length
      ? new Set(existing.map((col) => col.name))
      : created.get(parseTableRef(job.to).name);
    if (!targetCols) continue; // created out of sight (a DO block): the copy phase will tell
    const keys = jobKeys(job);
    const mapping = job.columns ?? Object.fromEntries([...targetCols].map((t) => [t, quoteIdent(t)]));
    const written = [...Object.keys(mapping), ...keys.target, ...Object.keys(job.slice ?? {})];
    const missing = [...new Set(written)].filter((t) => !targetCols.has(t));
    if (missing.length) {
      // A step may add them to a target that exists already.
      const added = missing.every((t) => stepsMention(stepsOn(plan, 'target'), t));
      const message = `target ${job.to} has no column ${missing.map((m) => `"${m}"`).join(', ')}`;
      if (added) add(check, 'warn', `${message} (unless a schema step adds it first)`);
      else add(check, 'fail', message);
      continue;
    }
    if (job.sync !== 'bidirectional') continue;
    for (const w of job.writeBack ?? []) {
      const old = await tableColumns(c, w.table);
      const gaps = old.filter((s) => s.notNull && !s.hasDefault && !s.generated && w.columns[s.name] === undefined);
      if (gaps.length) {
        add(
          check,
          'fail',
          `writeBack to ${w.table} leaves its NOT NULL column(s) ${gaps.map((g) => `"${g.name}"`).join(', ')} empty: every write on the new path would fail; give each an expression over the ${job.to} row`,
        );
      }
    }
    if (!job.from) continue;
    const source = await tableColumns(c, job.from);
    // The key always goes back (from the target's key columns); so do columns mapped one-to-one.
    const writtenBack = new Set([...Object.keys(job.reverse ?? {}), ...keys.source]);
    for (const expr of Object.values(mapping)) {
      const col = bareColumn(expr);
      if (col) writtenBack.add(col);
    }
    const gaps = source.filter((s) => s.notNull && !s.hasDefault && !s.generated && !writtenBack.has(s.name));
    if (gaps.length) {
      add(
        check,
        'fail',
        `sync: bidirectional writes the new path's rows back to ${job.from} but leaves its NOT NULL column(s) ${gaps.map((g) => `"${g.name}"`).join(', ')} empty: every write on the new path would fail; give each a reverse expression over the ${job.to} row`,
      );
    }
  }
}

async function checkArchive(c: PoolClient, plan: ResolvedPlan, add: Add) {
  for (const t of plan.cleanup?.archive ?? []) {
    const ref = parseTableRef(t);
    const exists = (await c.query(`SELECT to_regclass($1) IS NOT NULL AS x`, [quoteTable(ref)])).rows[0].x;
    if (!exists) add(`archive ${t}`, 'warn', `${t} does not exist now; cleanup will fail unless a step creates it`);
    const clash = (
      await c.query(`SELECT to_regclass($1) IS NOT NULL AS x`, [
        `${quoteIdent(ARCHIVE_SCHEMA)}.${quoteIdent(ref.name)}`,
      ])
    ).rows[0].x;
    if (clash)
      add(
        `archive ${t}`,
        'fail',
        `${ARCHIVE_SCHEMA}.${ref.name} already exists; drop or rename it before archiving ${t}`,
      );
  }
}

/**
 * Tables another migration still holds: it syncs them (live sync triggers), copies into them, or has archived them
 * and may still move them back. Two migrations working on one table would break each other, so this one is refused,
 * naming the holder.
 */
async function checkClaims(c: PoolClient, plan: ResolvedPlan, add: Add, side: Side = 'source') {
  const ours = new Map<string, string>();
  for (const j of plan.copy) {
    if (j.from) ours.set(tableKey(j.from), j.from);
    for (const f of j.syncFrom ?? []) ours.set(tableKey(f.table), f.table);
    ours.set(tableKey(j.to), j.to);
  }
  for (const a of plan.cleanup?.archive ?? []) ours.set(tableKey(a), a);
  // The tables the schema and cleanup steps that run in this database change or create (see schema/claims.ts).
  for (const step of [...plan.schema, ...(plan.cleanup?.steps ?? [])]) {
    if (plan.target && (step.on ?? 'target') !== side) continue;
    for (const t of await stepTables(step.up.sql)) ours.set(tableKey(t), t);
  }
  const held = await holdsOn(c, [...ours.values()]);
  for (const h of held) {
    // An earlier run of this very plan (completed without a cleanup section keeps its sync): it cannot be aborted.
    const remedy =
      h.migration === plan.name
        ? `an earlier run of this plan still holds it (a plan without a cleanup section keeps its sync): revert that run (tidemark revert ${plan.name}) or end its sync with a plan that cleans up, then start again`
        : 'finish it (its cleanup) or abort it before starting another migration on this table';
    add(`table ${ours.get(tableKey(h.table))}`, 'fail', `${describeHold(h)}: ${remedy}`);
  }
  if (!held.length) add('other migrations', 'ok', 'no other migration holds these tables');
}

async function checkFlag(c: PoolClient, plan: ResolvedPlan, add: Add) {
  if (!plan.traffic) return;
  const has = (await c.query(`SELECT to_regclass('tidemark.flags') IS NOT NULL AS x`)).rows[0].x;
  if (!has) return add('flag', 'ok', `flag ${plan.traffic.flag} will be created at 0%`);
  const r = await c.query(`SELECT rollout_percentage FROM tidemark.flags WHERE name = $1`, [plan.traffic.flag]);
  const pct = r.rows[0]?.rollout_percentage as number | undefined;
  if (pct) add('flag', 'warn', `flag ${plan.traffic.flag} is already at ${pct}%; the rollout will move it from there`);
  else add('flag', 'ok', `flag ${plan.traffic.flag} is at 0%`);
}

async function runPlanChecks(c: PoolClient, plan: ResolvedPlan, add: Add) {
  for (const chk of plan.preflight.checks) {
    let v: unknown;
    try {
      v = await inSavepoint(c, () => singleValue(c, chk.sql));
    } catch (e) {
      add(chk.name, 'fail', `check query failed: ${formatPgError(e)}`);
      continue;
    }
    const n = v === null || v === undefined ? 0 : Number(v);
    if (Number.isNaN(n)) add(chk.name, 'fail', `the check must return a count, got "${String(v)}"`);
    else if (n > 0) add(chk.name, chk.severity, `${n} row(s) found`);
    else add(chk.name, 'ok', 'none found');
  }
}

export function createPreflightActivities(deps: ActivityDeps) {
  return {
    /**
     * Runs preflight; a failing finding fails the phase (non-retryable) with every finding in the details, having
     * changed nothing. When every check passes, the run's SQL scripts are stored by sha256 (the workflow carries only
     * their hashes from here on; see plan/scripts.ts).
     */
    async runPreflight(input: { plan: ResolvedPlan }): Promise<PreflightReport> {
      return activityBody('preflight', async () => {
        const pool = deps.pools.get(input.plan.database.urlEnv);
        const report = await runPreflightChecks(pool, input.plan, { binaries: deps.binaries, env: deps.env });
        if (input.plan.target) {
          const more = await checkTargetDatabase(pool, deps.pools.get(input.plan.target.urlEnv), input.plan);
          report.findings.push(...more);
          report.ok = !report.findings.some((f) => f.status === 'fail');
        }
        if (!report.ok) {
          const failed = report.findings.filter((f) => f.status === 'fail').map((f) => `${f.check}: ${f.message}`);
          throw failure(F.PreflightFailed, `preflight failed: ${failed.join('; ')}`, report);
        }
        // Every database a step may run on keeps the scripts (a blue-green plan's schema steps run on the target).
        for (const urlEnv of databasesOf(input.plan)) {
          await storeScripts(await targetPool(deps, urlEnv), planScripts(input.plan));
        }
        return report;
      });
    },
  };
}

/**
 * Blue-green: the target database — reachable, its copy targets and mappings, how changes can be captured on each side
 * and why, and nothing left behind by an earlier migration (a forgotten replication slot keeps WAL on the server until
 * its disk fills; a capture of another run still logs every write).
 */
export async function checkTargetDatabase(source: Pool, target: Pool, plan: ResolvedPlan): Promise<Finding[]> {
  const findings: Finding[] = [];
  const add: Add = (check, status, message) => findings.push({ check, status, message });
  let tc: PoolClient;
  try {
    tc = await target.connect();
  } catch (e) {
    add('target connectivity', 'fail', `cannot connect to the target database: ${formatPgError(e)}`);
    return findings;
  }
  const sc = await source.connect();
  try {
    await inTransaction(sc, { readOnly: true, statementTimeoutMs: 60_000 }, () =>
      inTransaction(tc, { readOnly: true, statementTimeoutMs: 60_000 }, async (t) => {
        const names = await Promise.all(
          [sc, t].map(
            async (c) =>
              (
                await c.query(
                  'SELECT current_database() AS d, inet_server_port() AS p, pg_postmaster_start_time()::text AS started',
                )
              ).rows[0],
          ),
        );
        const same = (k: 'd' | 'p' | 'started') => names[0][k] === names[1][k];
        if (same('d') && same('p') && same('started')) {
          add(
            'target connectivity',
            'fail',
            'the target is the source database itself; target.urlEnv must name another database',
          );
          return;
        }
        const v = (await t.query('SHOW server_version')).rows[0].server_version as string;
        add('target connectivity', 'ok', `connected to ${names[1].d} (PostgreSQL ${v})`);
        if ((await serverVersionNum(t)) < MIN_SERVER_VERSION)
          add('target version', 'fail', `PostgreSQL ${v} is older than 11`);
        await checkCopyTargets(t, plan, add);
        await checkMappings(sc, plan, add, t);
        await checkCaptureMode(sc, t, plan, add);
        await checkCapturedForeignKeys(sc, t, plan, add);
        // Writes on the target are captured by triggers once traffic moves there.
        await checkTriggerFunctions(t, plan, 'trigger functions on the target', add);
        await checkLeftovers(sc, 'source', add);
        await checkLeftovers(t, 'target', add);
        // The source's holds (its captures among them) were checked with the rest of the plan; these are the target's.
        await checkClaims(t, plan, add, 'target');
      }),
    );
  } catch (e) {
    add('target', 'fail', `target checks failed: ${formatPgError(e)}`);
  } finally {
    sc.release();
    tc.release();
  }
  return findings;
}

/** Which capture each side allows, and the one this plan will use. */
/**
 * Foreign keys between two captured tables on the side their changes are applied to. Each job's changes are applied on
 * their own, so a row can arrive before the row it references (or a referenced row's delete before its referrers'):
 * the applier waits for the other job's applier (a while), and the captures end job by job in plan order.
 */
async function checkCapturedForeignKeys(sc: PoolClient, tc: PoolClient, plan: ResolvedPlan, add: Add) {
  const jobs = plan.copy.filter((j) => j.sync !== 'none' && j.from);
  if (jobs.length < 2) return;
  const found: { side: Side; child: string; parent: string }[] = [];
  for (const [side, c] of [
    ['source', sc],
    ['target', tc],
  ] as const) {
    const tables = jobs.map((j) => (side === 'source' ? j.from! : j.to));
    const r = await c.query<{ child: string; parent: string }>(
      `WITH t AS (SELECT name, to_regclass(q) AS oid FROM unnest($1::text[], $2::text[]) AS x(name, q))
       SELECT a.name AS child, b.name AS parent FROM pg_constraint k
         JOIN t a ON a.oid = k.conrelid JOIN t b ON b.oid = k.confrelid
        WHERE k.contype = 'f' AND a.oid <> b.oid`,
      [tables, tables.map((x) => quoteTable(parseTableRef(x)))],
    );
    found.push(...r.rows.map((x) => ({ side, ...x })));
  }
  // The target's tables are usually created by the schema steps: their foreign keys are read from the scripts.
  const onTarget = new Map(jobs.map((j) => [tableKey(j.to), j.to]));
  for (const step of plan.schema) {
    if ((step.on ?? 'target') !== 'target') continue;
    const fks = await parseStatements(step.up.sql)
      .then(declaredForeignKeys)
      .catch(() => []);
    for (const fk of fks) {
      const [child, parent] = [onTarget.get(tableKey(fk.table)), onTarget.get(tableKey(fk.references))];
      if (child && parent && child !== parent) found.push({ side: 'target', child, parent });
    }
  }
  const seen = new Set<string>();
  for (const f of found) {
    const key = `${f.side} ${tableKey(f.child)} ${tableKey(f.parent)}`;
    if (seen.has(key)) continue;
    seen.add(key);
    add(
      `foreign key ${f.child} → ${f.parent}`,
      'warn',
      `on the ${f.side}, ${f.child} references ${f.parent}, and each copy job's changes are applied on their own: a ` +
        `row may arrive before the row it references (or a delete of a referenced row before its referrers'); the ` +
        `applier waits for the other job's changes (up to 5 min, then the migration pauses). List the job of ` +
        `${f.parent} first, and keep writes that span both tables short`,
    );
  }
}

async function checkCaptureMode(sc: PoolClient, tc: PoolClient, plan: ResolvedPlan, add: Add) {
  const wanted = plan.target!.capture;
  const source = await logicalAllowed(sc);
  const triggers = 'triggers writing into tidemark.changes, applied by tidemark';
  if (wanted === 'logical' && !source.ok) {
    add(
      'capture on the source',
      'fail',
      `capture: logical is not possible: ${source.why}; use capture: trigger or auto`,
    );
  } else if (wanted !== 'trigger' && source.ok) {
    // Named here, not found out from the worker's log: the tables whose replica identity does not hold their key are
    // captured by triggers from the start under auto (logical fails on them at the copy).
    const fallback: string[] = [];
    for (const job of plan.copy) {
      if (job.sync === 'none' || !job.from) continue;
      const table = parseTableRef(job.from);
      if (!(await tableExists(sc, table))) continue;
      const identity = await identityHoldsKey(sc, table, jobKeys(job).source);
      if (!identity.ok) fallback.push(`${quoteTable(table)} (${identity.why})`);
    }
    const exceptions = fallback.length
      ? `; ${wanted === 'logical' ? 'fails for' : 'by triggers from the start instead for'} ${fallback.join('; ')}`
      : '';
    add(
      'capture on the source',
      wanted === 'logical' && fallback.length ? 'fail' : 'ok',
      `logical decoding (a slot, no triggers) while the copy runs, for each table whose replica identity holds its key, then ${triggers}, which stamp each write for conflict resolution once both sides may take writes; ${source.why}${exceptions}`,
    );
  } else {
    add('capture on the source', 'ok', `${triggers}; ${source.why}`);
  }
  // The target's changes are captured only once it takes writes, with both sides writing: always by triggers.
  add('capture on the target', 'ok', `${triggers}; ${(await logicalAllowed(tc)).why}`);
}

/** Replication slots an earlier migration left on one side (its captures are holds: checkClaims). */
async function checkLeftovers(c: PoolClient, side: string, add: Add) {
  const installed = (await c.query(`SELECT to_regclass('tidemark.captures') IS NOT NULL AS x`)).rows[0].x as boolean;
  const slots = await c.query(
    `SELECT slot_name, active, pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)) AS held
       FROM pg_replication_slots s WHERE slot_name LIKE 'tidemark%'
        -- A slot of a capture that is still installed belongs to a migration in progress.
        ${
          installed
            ? `AND NOT EXISTS (SELECT 1 FROM tidemark.captures c WHERE 'tidemark_' || c.sync_id = s.slot_name AND c.spec ? 'logical')`
            : ''
        }`,
  );
  for (const s of slots.rows as { slot_name: string; active: boolean; held: string | null }[]) {
    add(
      `replication slot ${s.slot_name}`,
      s.active ? 'warn' : 'fail',
      `a tidemark replication slot is left on the ${side}${s.active ? ' (in use)' : ''}, holding ${s.held ?? 'no'} WAL: drop it with SELECT pg_drop_replication_slot('${s.slot_name}') once no migration uses it`,
    );
  }
}
