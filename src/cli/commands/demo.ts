// `tidemark demo`: seeds a sample database, starts a Temporal dev server (Web UI included) and a worker, runs the
// meetings example end to end with auto-approval and short soaks, and prints each phase and a summary.
import type { Command } from 'commander';
import { join } from 'node:path';
import type { Client as PgClient } from 'pg';
import { formatDuration } from '../../plan/durations';
import type { ResolvedPlan } from '../../plan/types';
import { workflowIdFor } from '../../migration/messages';
import { follow, type GlobalOptions } from '../context';
import { F } from '../../migration/failures';
import { CliError, EXIT } from '../errors';
import { webUiUrl } from '../format';
import { stateDir, untilSignal } from './servers';

const DEMO_DB = 'tidemark_demo';
/** Marks the databases the demo creates: it recreates only those (or any other with --reset). */
const DEMO_MARK = 'created by tidemark demo';
const DEMO_QUEUE = 'tidemark-demo';

/** The example plan with durations a person can watch: short soaks and delay, archived tables kept. */
export function shortenForDemo(plan: ResolvedPlan, soakMs: number): ResolvedPlan {
  return {
    ...plan,
    backup: { ...plan.backup, dir: join(stateDir(), 'backups') },
    traffic: plan.traffic && {
      ...plan.traffic,
      stages: plan.traffic.stages.map((s) => ({ ...s, soak: Math.min(s.soak, soakMs) })),
    },
    cleanup: plan.cleanup && { ...plan.cleanup, after: Math.min(plan.cleanup.after, soakMs), dropAfter: undefined },
  };
}

export function registerDemoCommand(program: Command, globals: () => GlobalOptions): void {
  program
    .command('demo')
    .description('run the meetings example end to end on a sample database (auto-approved, short soaks)')
    .option('--rows <n>', 'meetings to generate', '5000')
    .option('--soak <duration-ms>', 'soak per traffic stage and cleanup delay, in ms', '2000')
    .option('--database <name>', 'the sample database to create', DEMO_DB)
    .option('--reset', 'drop and recreate the sample database even if tidemark demo did not create it')
    .option('--keep', 'keep the Temporal server, Web UI and worker running afterwards (Ctrl-C to stop)')
    .action(async (o: { rows: string; soak: string; database: string; reset?: boolean; keep?: boolean }) => {
      const { TidemarkClient } = await import('../../client');
      const { meetingsExampleDir, seedMeetings } = await import('../../demo/meetings');
      const { portOpen, startDevServer, waitForTemporal } = await import('../../infra/devserver');
      const { databaseComment, findPostgres, recreateDatabase, withDatabase } = await import('../../infra/postgres');
      const { createLogger } = await import('../../logger');
      const { loadPlan } = await import('../../plan/load');
      const { installRuntime } = await import('../../runtime');
      const { startWorker } = await import('../../worker');
      const log = (s: string) => console.log(s);
      const rows = Number(o.rows);
      const pg = await findPostgres();
      const where = new URL(withDatabase(pg.adminUrl, o.database));
      const existing = await databaseComment(pg.adminUrl, o.database);
      if (existing.exists && existing.comment !== DEMO_MARK && !o.reset) {
        throw new CliError(
          `database "${o.database}" on ${where.host} exists and was not created by tidemark demo; pass --reset to drop and recreate it, or --database NAME`,
          F.Usage,
        );
      }
      log(
        `PostgreSQL: ${where.host} (${pg.source === 'DATABASE_URL' ? 'from $DATABASE_URL' : pg.source === 'local' ? 'found on this machine' : 'a private cluster tidemark started'}), sample database "${o.database}"${existing.exists ? ' (recreated)' : ''}`,
      );
      const address = globals().address ?? process.env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233';
      const [host, port] = address.split(':');
      let server: Awaited<ReturnType<typeof startDevServer>> | undefined;
      if (await portOpen(host, Number(port))) {
        await waitForTemporal(address, 10_000);
        log(`Temporal: using the server already at ${address}`);
      } else {
        server = await startDevServer({
          port: Number(port),
          uiPort: Number(port) + 1000,
          dbFile: join(stateDir(), 'temporal.db'),
        });
        log(
          `Temporal: dev server started at ${server.address}, Web UI ${server.uiUrl} (state in ${join(stateDir(), 'temporal.db')})`,
        );
      }
      const ui = server?.uiUrl ?? process.env.TIDEMARK_UI_URL ?? `http://localhost:${Number(port) + 1000}`;

      const plan = shortenForDemo(loadPlan(join(meetingsExampleDir(), 'plan.yaml')), Number(o.soak));
      const client = await TidemarkClient.connect({ address, taskQueue: DEMO_QUEUE });
      // An earlier demo interrupted half-way would still be running against the database about to be recreated.
      await client.client.workflow
        .getHandle(workflowIdFor(plan.name))
        .terminate('superseded by a new tidemark demo run')
        .catch(() => undefined);
      const url = await recreateDatabase(pg.adminUrl, o.database, DEMO_MARK);
      await seedMeetings(url, rows);
      log(`seeded ${rows.toLocaleString('en-US')} meetings and ${(rows * 2 + 3).toLocaleString('en-US')} participants`);
      const logger = createLogger({ name: 'tidemark-worker', level: process.env.LOG_LEVEL ?? 'warn' });
      await installRuntime({ logger });
      const worker = await startWorker({
        address,
        taskQueue: DEMO_QUEUE,
        env: { ...process.env, [plan.database.urlEnv]: url },
        logger,
      });
      try {
        const { workflowId } = await client.start(plan, { autoApprove: true, startedBy: 'tidemark demo' });
        log(
          `\nmigration ${plan.name} started (soaks shortened to ${formatDuration(Number(o.soak))}, approvals automatic)`,
        );
        log(`Web UI: ${webUiUrl(ui, client.namespace, workflowId)}\n`);
        // Interrupted: stop the worker and the server this command started (below), the migration stays in Temporal.
        const interrupted = untilSignal().then((sig) => {
          throw new CliError(
            `interrupted by ${sig}; migration ${workflowId} keeps its state in the Temporal server`,
            F.ActivityError,
          );
        });
        interrupted.catch(() => undefined);
        const final = await Promise.race([follow(client, workflowId), interrupted]);
        const { Client } = await import('pg');
        await summary(new Client({ connectionString: url }), plan, final.state, final.startedAt, final.endedAt);
        if (final.state !== 'completed') process.exitCode = EXIT.failed;
        if (o.keep) {
          log(`\nserver, Web UI (${ui}) and worker keep running; Ctrl-C to stop`);
          await untilSignal();
        }
      } finally {
        await client.close();
        await worker.shutdown();
        await server?.stop();
      }
    });
}

async function summary(
  c: PgClient,
  plan: ResolvedPlan,
  state: string,
  startedAt: string,
  endedAt?: string,
): Promise<void> {
  await c.connect();
  try {
    const q = async (sql: string, values: unknown[] = []) => (await c.query(sql, values)).rows[0];
    const v2 = await q(`SELECT count(*)::int AS n FROM meetings_v2`).catch(() => ({ n: 'gone' }));
    const rs = await q(`SELECT count(*)::int AS n FROM room_states`).catch(() => ({ n: 'gone' }));
    const flag = await q(`SELECT rollout_percentage AS p FROM tidemark.flags WHERE name = $1`, [
      plan.traffic!.flag,
    ]).catch(() => undefined);
    const archived = await q(`SELECT count(*)::int AS n FROM tidemark_archive.meetings`).catch(() => undefined);
    const hist = await q(
      `SELECT count(*)::int AS n FROM tidemark.history WHERE migration = $1 AND status = 'applied'`,
      [plan.name],
    ).catch(() => ({ n: 0 }));
    console.log(
      `\nsummary: ${state} in ${formatDuration(Date.parse(endedAt ?? new Date().toISOString()) - Date.parse(startedAt))}`,
    );
    console.log(`  meetings_v2: ${v2.n} rows; room_states: ${rs.n} rows`);
    console.log(`  flag ${plan.traffic!.flag}: ${flag?.p ?? 'unset'}%`);
    console.log(`  tidemark_archive.meetings: ${archived ? `${archived.n} rows (restorable)` : 'not archived'}`);
    console.log(`  tidemark.history: ${hist.n} applied step(s)`);
  } finally {
    await c.end();
  }
}
