// The runnable examples, one per runbook this product automates: where each lives, how its sample data is made, and
// what `tidemark demo <example>` does with it. Shared by the demo command and the tests, so both run the same thing.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client } from 'pg';
import { projectRoot } from '../infra/tools';
import { loadPlan } from '../plan/load';
import type { ResolvedPlan } from '../plan/types';
import { seedMeetings } from './meetings';

export interface Example {
  name: string;
  /** The runbook (shared/seeds) it automates, in a few words. */
  runbook: string;
  /** What it shows, one line. */
  summary: string;
  /** Rows the demo generates by default (the example's main table). */
  defaultRows: number;
  /** After the migration: `history`, then a revert, then `history` again (a schema-only plan's whole life). */
  revertsAfterwards?: boolean;
}

export const EXAMPLES: readonly Example[] = [
  {
    name: 'meetings',
    runbook: '000 meetings → room types',
    summary: 'a new table with a mapped column and a cache, bidirectional sync, rollout 10 → 50 → 100 %',
    defaultRows: 5000,
  },
  {
    name: 'cameras',
    runbook: '001 AI camera tables',
    summary:
      'cameras_old → cameras with trigger sync, exact checksums, a 0/5/20/100 % canary behind error and latency gates',
    defaultRows: 3000,
  },
  {
    name: 'consolidation',
    runbook: '002 seven tables into four',
    summary:
      'optional sides and aggregates folded into four tables with live sync, whole-database backup, 48 h before the drop',
    defaultRows: 3000,
  },
  {
    name: 'events',
    runbook: '003 wedding app → generic events',
    summary: "weddings become events (event_type 'wedding') with new ids, and compatibility views under the old names",
    defaultRows: 2000,
  },
  {
    name: 'blue-green',
    runbook: '001 blue-green deployment',
    summary:
      'cameras and counting results from a blue database into a green one: changes captured both ways, traffic 10 → 50 → 100 %, blue archived',
    defaultRows: 2000,
  },
  {
    name: 'product-attributes',
    runbook: '004 versioned up/down migrations',
    summary: 'a schema-only plan of timestamp-named steps: run, history, revert',
    defaultRows: 4000,
    revertsAfterwards: true,
  },
];

export function findExample(name: string): Example | undefined {
  return EXAMPLES.find((e) => e.name === name);
}

export function exampleDir(name: string): string {
  return join(projectRoot(), 'examples', name);
}

export function examplePlan(ex: Example): ResolvedPlan {
  return loadPlan(join(exampleDir(ex.name), 'plan.yaml'));
}

/**
 * Creates the example's tables and sample rows in an empty database: its seed.sql, which reads the row count from the
 * setting tidemark.seed_rows (the meetings example keeps its own generator).
 */
export async function seedExample(ex: Example, url: string, rows = ex.defaultRows): Promise<void> {
  if (ex.name === 'meetings') return seedMeetings(url, rows);
  const c = new Client({ connectionString: url });
  await c.connect();
  try {
    await c.query(`SELECT set_config('tidemark.seed_rows', $1, false)`, [String(rows)]);
    await c.query(readFileSync(join(exampleDir(ex.name), 'seed.sql'), 'utf8'));
  } finally {
    await c.end();
  }
}
