// The examples in tests: seeded into a test database and run through the same code `tidemark demo <example>` uses,
// under a plan name of their own; and, for the CLI, as a plan file (the example's directory copied, pointed at the test
// database).
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client } from 'pg';
import { parse, stringify } from 'yaml';
import { exampleDir, examplePlan, findExample, seedExample, type Example } from '../../src/demo/examples';
import { shortenForDemo } from '../../src/demo/run';
import { quoteIdent, quoteTable } from '../../src/db/quote';
import { loadPlan } from '../../src/plan/load';
import type { ResolvedCopyJob, ResolvedPlan } from '../../src/plan/types';
import type { TestDb } from './env';
import { tempDir } from './plans';

export function example(name: string): Example {
  const ex = findExample(name);
  if (!ex) throw new Error(`no example ${name}`);
  return ex;
}

const planName = (ex: Example, db: TestDb) => `${ex.name}-${db.name.replace(/_/g, '-')}`;

/** Seeds the example into `db` and returns its demo plan (short soaks, archived tables kept) under a name of its own. */
export async function examplePlanFor(
  ex: Example,
  db: TestDb,
  o: { rows?: number; soakMs?: number; cleanupAfterMs?: number } = {},
): Promise<ResolvedPlan> {
  await seedExample(ex, db.url, o.rows ?? ex.defaultRows);
  const plan = shortenForDemo(examplePlan(ex), o.soakMs ?? 200, tempDir('tidemark-backup-'));
  return {
    ...plan,
    name: planName(ex, db),
    database: { urlEnv: db.urlEnv },
    cleanup: plan.cleanup && { ...plan.cleanup, after: o.cleanupAfterMs ?? plan.cleanup.after },
  };
}

/** The example's directory copied, its plan pointed at `db` under a name of its own; returns the plan file's path. */
export function examplePlanFile(ex: Example, db: TestDb, change: (doc: Record<string, unknown>) => void = () => {}) {
  const dir = tempDir(`tidemark-${ex.name}-`);
  cpSync(exampleDir(ex.name), dir, { recursive: true });
  const file = join(dir, 'plan.yaml');
  const doc = parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  doc.name = planName(ex, db);
  doc.database = { urlEnv: db.urlEnv };
  doc.backup = { ...(doc.backup as object), dir: tempDir('tidemark-backup-') };
  change(doc);
  writeFileSync(file, stringify(doc));
  return { file, dir, plan: () => loadPlan(file) };
}

/**
 * Source rows through a copy job's own mapping (`schema` first on the search path: where its old tables are now,
 * tidemark_archive after cleanup) against the target's rows, both ways: 0 and 0 means equal.
 */
export async function mappingDiff(
  db: TestDb,
  job: ResolvedCopyJob,
  schema = 'public',
): Promise<{ onlyInSource: number; onlyInTarget: number }> {
  const cols = Object.keys(job.columns!);
  const mapped = cols.map((c) => `(${job.columns![c]}) AS ${quoteIdent(c)}`).join(', ');
  const from = job.from ? `${quoteIdent(job.from)} AS s` : `(${job.query}) AS s`;
  const source = `SELECT ${mapped} FROM ${from}`;
  const target = `SELECT ${cols.map(quoteIdent).join(', ')} FROM ${quoteTable({ schema: 'public', name: job.to })}`;
  const c = new Client({ connectionString: db.url });
  await c.connect();
  try {
    await c.query(`SELECT set_config('search_path', $1, false)`, [`${quoteIdent(schema)}, public`]);
    const r = await c.query(
      `SELECT (SELECT count(*) FROM ((${source}) EXCEPT ALL (${target})) a)::int AS s,
              (SELECT count(*) FROM ((${target}) EXCEPT ALL (${source})) b)::int AS t`,
    );
    return { onlyInSource: r.rows[0].s, onlyInTarget: r.rows[0].t };
  } finally {
    await c.end();
  }
}
