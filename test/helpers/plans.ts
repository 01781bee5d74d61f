// Plans for tests: the meetings example pointed at a test database with short soaks, or plans written on the fly.
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { stringify } from 'yaml';
import { seedMeetings, meetingsExampleDir } from '../../src/demo/meetings';
import { loadPlan } from '../../src/plan/load';
import type { ResolvedPlan } from '../../src/plan/types';
import type { TestDb } from './env';

export function tempDir(prefix = 'tidemark-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** Writes a plan document and its SQL files into a fresh directory; returns the plan's path. */
export function writePlan(doc: unknown, files: Record<string, string> = {}, format: 'yaml' | 'json' = 'yaml'): string {
  const dir = tempDir();
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, name)), { recursive: true });
    writeFileSync(join(dir, name), text);
  }
  const file = join(dir, `plan.${format}`);
  writeFileSync(
    file,
    typeof doc === 'string' ? doc : format === 'json' ? JSON.stringify(doc, null, 2) : stringify(doc),
  );
  return file;
}

export interface MeetingsOptions {
  rows?: number;
  soakMs?: number;
  cleanupAfterMs?: number;
  approvals?: ResolvedPlan['approvals'];
}

/** The meetings example against a seeded test database, with soaks short enough for a test. */
export async function meetingsPlan(db: TestDb, o: MeetingsOptions = {}): Promise<ResolvedPlan> {
  await seedMeetings(db.url, o.rows ?? 3000);
  const plan = loadPlan(join(meetingsExampleDir(), 'plan.yaml'));
  const soak = o.soakMs ?? 200;
  return {
    ...plan,
    name: `meetings-${db.name.replace(/_/g, '-')}`,
    database: { urlEnv: db.urlEnv },
    approvals: o.approvals ?? plan.approvals,
    backup: { ...plan.backup, dir: tempDir('tidemark-backup-') },
    traffic: plan.traffic && { ...plan.traffic, stages: plan.traffic.stages.map((s) => ({ ...s, soak })) },
    cleanup: plan.cleanup && { ...plan.cleanup, after: o.cleanupAfterMs ?? 100, dropAfter: undefined },
  };
}

/**
 * No latency budget: a test's copy is paced by the test's own settings, not by how busy the machine happens to be (a
 * budget, however loose, starts the copy at a small share and grows it only while the machine looks quiet). For tests
 * of exactness under writes; copy-budget.test.ts tests the budget. As a resolved plan holds it, and as a plan file
 * writes it.
 */
export const LOOSE_BUDGET = { maxLatencyIncrease: 'unlimited' as const };
export const LOOSE_BUDGET_IN_PLAN = { maxLatencyIncrease: 'unlimited' };

export interface SlowCopyOptions {
  name: string;
  /** Copied into `<table>_v2`; both exist already (the plan's schema step does nothing). */
  table: string;
  key: string | string[];
  sync: 'forward' | 'bidirectional';
}

/**
 * A plan whose copy waits for approval (so a test can throttle it first) and then runs in batches of 300 rows, one
 * 100 % stage soaking for an hour: for tests of writes made while particular rows are being copied.
 */
export function slowCopyPlan(db: TestDb, o: SlowCopyOptions): ResolvedPlan {
  const job = {
    name: o.table,
    from: o.table,
    to: `${o.table}_v2`,
    key: o.key,
    sync: o.sync,
    ...(o.sync === 'forward' ? { discardNewPathWrites: true } : {}),
    batchSize: 300,
    maxBatchSize: 300,
    impact: LOOSE_BUDGET_IN_PLAN,
  };
  const doc = {
    name: o.name,
    database: { urlEnv: db.urlEnv },
    backup: { enabled: false },
    approvals: ['copy'],
    schema: [{ id: '001', up: 'up.sql', down: 'down.sql' }],
    copy: [job],
    validate: [{ rowCount: { copy: o.table } }],
    traffic: { flag: `${o.table}_v2`, stages: [{ percent: 100, soak: '1h' }] },
    cleanup: {},
  };
  return loadPlan(writePlan(doc, { 'up.sql': 'SELECT 1', 'down.sql': 'SELECT 1' }));
}
