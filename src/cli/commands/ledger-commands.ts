// Commands over the ledger: `tidemark history` (steps applied, reverted and pending, across runs) and `tidemark revert`
// (undo a completed migration, as its own workflow). As in the other command modules, heavy dependencies (pg, the plan
// parser) load inside the actions.
import type { Command } from 'commander';
import { existsSync, statSync } from 'node:fs';
import type { TidemarkClient } from '../../client';
import type { LedgerRow } from '../../plan/ledger';
import type { ResolvedPlan } from '../../plan/types';
import { redact } from '../../secrets';
import { EXIT } from '../errors';
import { renderHistory, webUiUrl, type HistoryReport } from '../format';
import { follow, uiBase, withTidemark, type GlobalOptions } from '../context';
import { who } from './migration-commands';

/** A plan file when `arg` names one, otherwise a plan name or workflow id (the plan comes from its last run). */
const isPlanFile = (arg: string) => existsSync(arg) && statSync(arg).isFile();

async function planFor(arg: string, c: () => Promise<TidemarkClient>): Promise<ResolvedPlan> {
  if (!isPlanFile(arg)) return (await c()).planOf(arg);
  const { loadCheckedPlan } = await import('../../plan/queries');
  return loadCheckedPlan(arg);
}

/**
 * Reads the ledger directly when this process's environment holds the database's urlEnv (no Temporal needed, as with
 * `plan check --rehearse`), otherwise through a worker, which is where connection strings normally live.
 */
async function ledgerRows(
  urlEnv: string,
  migration: string | undefined,
  client: () => Promise<TidemarkClient>,
): Promise<{ rows: LedgerRow[]; via: HistoryReport['via'] }> {
  const url = process.env[urlEnv];
  if (url) {
    const { Pool } = await import('pg');
    const { poolConfig } = await import('../../db/pool');
    const { readLedger } = await import('../../db/ledger');
    const pool = new Pool(poolConfig(url, 1));
    try {
      return { rows: await readLedger(pool, migration), via: 'direct' };
    } finally {
      await pool.end();
    }
  }
  return { rows: await (await client()).readLedger({ urlEnv, migration }), via: 'worker' };
}

export function registerLedgerCommands(program: Command, globals: () => GlobalOptions): void {
  program
    .command('history [plan]')
    .description(
      "steps applied, reverted and pending, across runs (a plan file, a plan name or workflow id, or every plan in --url-env's database)",
    )
    .option('--url-env <name>', 'without a plan: the environment variable naming the database', 'DATABASE_URL')
    .option('--json', 'print JSON')
    .action(async (arg: string | undefined, o: { urlEnv: string; json?: boolean }) => {
      let client: TidemarkClient | undefined;
      const connect = async () => {
        client ??= await (await import('../../client')).TidemarkClient.connect(globals());
        return client;
      };
      try {
        const plan = arg ? await planFor(arg, connect) : undefined;
        const urlEnv = plan?.database.urlEnv ?? o.urlEnv;
        const { rows, via } = await ledgerRows(urlEnv, plan?.name, connect);
        const { plansHistory } = await import('../../plan/ledger');
        const report: HistoryReport = { database: urlEnv, via, plans: plansHistory(rows, plan) };
        console.log(redact(o.json ? JSON.stringify(report, null, 2) : renderHistory(report)));
      } finally {
        await client?.close();
      }
    });

  program
    .command('revert <plan>')
    .description(
      'revert a completed migration as its own workflow: backup, approval, then its undos (plan file, name or workflow id)',
    )
    .option('--auto-approve', 'grant the approval automatically')
    .option(
      '--discard-new-writes',
      'revert even though writes made on the new path since the sync was removed would be lost',
    )
    .option('--by <name>', 'who reverts it (shown in status)')
    .option('--no-wait', 'return once the revert has started')
    .option('--json', 'print JSON')
    .action(
      async (
        arg: string,
        o: { autoApprove?: boolean; discardNewWrites?: boolean; by?: string; wait: boolean; json?: boolean },
      ) => {
        await withTidemark(globals(), async (c) => {
          const plan = await planFor(arg, async () => c);
          const started = await c.revert(plan, {
            autoApprove: !!o.autoApprove,
            startedBy: o.by ?? who(),
            ...(o.discardNewWrites ? { discardNewWrites: true } : {}),
          });
          const url = webUiUrl(uiBase(c.address), c.namespace, started.workflowId);
          if (!o.wait) {
            console.log(o.json ? JSON.stringify(started) : `started ${started.workflowId}\nWeb UI: ${url}`);
            return;
          }
          if (!o.json) console.log(`started ${started.workflowId}; Web UI: ${url}`);
          const final = await follow(c, started.workflowId, { json: o.json });
          if (final.state !== 'completed') process.exitCode = EXIT.failed;
        });
      },
    );
}
