// Runs one example end to end against a seeded database, as `tidemark demo <example>` does and the tests check: the
// migration with auto-approval and short soaks, followed event by event; for a schema-only example, then its history,
// its revert and its history again.
import { join } from 'node:path';
import { Client } from 'pg';
import type { TidemarkClient } from '../client';
import { follow } from '../cli/context';
import { renderHistory, type HistoryReport } from '../cli/format';
import { readLedger } from '../db/ledger';
import { quoteTable } from '../db/quote';
import type { MigrationStatus } from '../migration/messages';
import { formatDuration } from '../plan/durations';
import { plansHistory } from '../plan/ledger';
import type { ResolvedPlan } from '../plan/types';
import type { Example } from './examples';

/** The example plan with durations a person can watch: short soaks and delays, archived tables kept. */
export function shortenForDemo(plan: ResolvedPlan, soakMs: number, backupDir: string): ResolvedPlan {
  return {
    ...plan,
    backup: { ...plan.backup, dir: join(backupDir) },
    traffic: plan.traffic && {
      ...plan.traffic,
      stages: plan.traffic.stages.map((s) => ({ ...s, soak: Math.min(s.soak, soakMs) })),
      gates: plan.traffic.gates.map((g) => ({ ...g, interval: Math.min(g.interval, Math.max(50, soakMs / 4)) })),
    },
    cleanup: plan.cleanup && { ...plan.cleanup, after: Math.min(plan.cleanup.after, soakMs), dropAfter: undefined },
  };
}

export interface ExampleRun {
  migration: MigrationStatus;
  /** For examples that revert afterwards: the ledger before and after, and the revert's final status. */
  historyBefore?: HistoryReport;
  revert?: MigrationStatus;
  historyAfter?: HistoryReport;
}

async function history(url: string, plan: ResolvedPlan): Promise<HistoryReport> {
  const c = new Client({ connectionString: url });
  await c.connect();
  try {
    return { database: plan.database.urlEnv, via: 'direct', plans: plansHistory(await readLedger(c, plan.name), plan) };
  } finally {
    await c.end();
  }
}

export async function runExample(
  client: TidemarkClient,
  ex: Example,
  plan: ResolvedPlan,
  opts: { url: string; out?: NodeJS.WritableStream },
): Promise<ExampleRun> {
  const out = opts.out ?? process.stdout;
  const say = (s: string) => out.write(`${s}\n`);
  // The database is fresh: a completed run of the same plan from an earlier demo says nothing about it.
  const started = await client.start(plan, { autoApprove: true, startedBy: 'tidemark demo', rerun: true });
  const migration = await follow(client, started.workflowId, { out });
  const run: ExampleRun = { migration };
  if (migration.state !== 'completed' || !ex.revertsAfterwards) return run;

  run.historyBefore = await history(opts.url, plan);
  say(`\n$ tidemark history ${plan.name}\n${renderHistory(run.historyBefore)}\n\n$ tidemark revert ${plan.name}`);
  const reverted = await client.revert(plan, { autoApprove: true, startedBy: 'tidemark demo' });
  run.revert = await follow(client, reverted.workflowId, { out });
  run.historyAfter = await history(opts.url, plan);
  say(`\n$ tidemark history ${plan.name}\n${renderHistory(run.historyAfter)}`);
  return run;
}

/** What the example left in the database, in a few lines: new tables, archived ones, the flag, the ledger. */
export async function summarize(
  url: string,
  plan: ResolvedPlan,
  run: ExampleRun,
  targetUrl?: string,
): Promise<string[]> {
  const c = new Client({ connectionString: url });
  await c.connect();
  // Blue-green: the copy's targets are in the target database.
  const tc = targetUrl ? new Client({ connectionString: targetUrl }) : c;
  if (tc !== c) await tc.connect();
  const counter = (db: Client) => async (table: string) =>
    db
      .query(`SELECT count(*)::int AS n FROM ${quoteTable(table)}`)
      .then((r) => `${r.rows[0].n} rows`)
      .catch(() => 'gone');
  const count = counter(c);
  const countTarget = counter(tc);
  try {
    const m = run.migration;
    const took = Date.parse(m.endedAt ?? new Date().toISOString()) - Date.parse(m.startedAt);
    const lines = [`summary: ${plan.name} ${m.state} in ${formatDuration(took)}`];
    for (const j of plan.copy) {
      lines.push(`  ${targetUrl ? 'target ' : ''}${j.to}: ${await countTarget(j.to)} (copy ${j.name})`);
    }
    for (const t of plan.cleanup?.archive ?? [])
      lines.push(`  tidemark_archive.${t}: ${await count(`tidemark_archive.${t}`)} (restorable)`);
    if (plan.traffic) {
      const f = await c
        .query(`SELECT rollout_percentage AS p FROM tidemark.flags WHERE name = $1`, [plan.traffic.flag])
        .catch(() => ({ rows: [] as { p: number }[] }));
      lines.push(`  flag ${plan.traffic.flag}: ${f.rows[0]?.p ?? 'unset'}%`);
    }
    // A blue-green plan's steps ran on the target, whose ledger holds them.
    const steps = (run.historyAfter ?? (await history(targetUrl ?? url, plan))).plans[0]?.steps ?? [];
    const applied = steps.filter((s) => s.state === 'applied').length;
    lines.push(`  tidemark.history: ${applied} of ${steps.length} step(s) applied`);
    if (run.revert) lines.push(`  revert: ${run.revert.state}`);
    return lines;
  } finally {
    await c.end();
    if (tc !== c) await tc.end();
  }
}
