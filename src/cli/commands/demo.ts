// `tidemark demo [<example>]`: seeds a fresh sample database, starts a Temporal dev server (Web UI included) and a
// worker, runs one of the examples end to end with auto-approval and short soaks, and prints each event and a summary.
// `--list` names the examples and the runbook each automates.
import type { Command } from 'commander';
import { join } from 'node:path';
import { formatDuration } from '../../plan/durations';
import { revertWorkflowIdFor, workflowIdFor } from '../../migration/messages';
import { type GlobalOptions } from '../context';
import { F } from '../../migration/failures';
import { CliError, EXIT } from '../errors';
import { webUiUrl } from '../format';
import { stateDir, untilSignal } from './servers';

/** Marks the databases the demo creates: it recreates only those (or any other with --reset). */
const DEMO_MARK = 'created by tidemark demo';
const DEMO_QUEUE = 'tidemark-demo';

/** Each example gets its own sample database, so one example's demo never disturbs another's. */
const demoDatabase = (example: string) =>
  `tidemark_demo${example === 'meetings' ? '' : `_${example.replace(/-/g, '_')}`}`;

export async function listExamples(): Promise<string[]> {
  const { EXAMPLES } = await import('../../demo/examples');
  const width = Math.max(...EXAMPLES.map((e) => e.name.length));
  return [
    'examples (tidemark demo <example>; each README maps its runbook to tidemark):',
    ...EXAMPLES.map((e) => `  ${e.name.padEnd(width)}  ${e.runbook}: ${e.summary}`),
  ];
}

export function registerDemoCommand(program: Command, globals: () => GlobalOptions): void {
  program
    .command('demo [example]')
    .description('run an example end to end on a fresh sample database (auto-approved, short soaks); --list names them')
    .option('--list', 'list the examples')
    .option('--rows <n>', "rows to generate (default: the example's own)")
    .option('--soak <duration-ms>', 'soak per traffic stage and cleanup delay, in ms', '2000')
    .option('--database <name>', 'the sample database to create (default: tidemark_demo, tidemark_demo_<example>)')
    .option('--reset', 'drop and recreate the sample database even if tidemark demo did not create it')
    .option('--keep', 'keep the Temporal server, Web UI and worker running afterwards (Ctrl-C to stop)')
    .action(
      async (
        name: string | undefined,
        o: { list?: boolean; rows?: string; soak: string; database?: string; reset?: boolean; keep?: boolean },
      ) => {
        const log = (s: string) => console.log(s);
        if (o.list) return (await listExamples()).forEach((l) => log(l));
        const { examplePlan, findExample, seedExample } = await import('../../demo/examples');
        const ex = findExample(name ?? 'meetings');
        if (!ex) throw new CliError(`no example "${name}"; tidemark demo --list names them`, F.Usage);
        const rows = o.rows === undefined ? ex.defaultRows : Number(o.rows);
        if (!Number.isInteger(rows) || rows < 1) throw new CliError(`--rows must be a positive integer`, F.Usage);
        const soakMs = Number(o.soak);
        const { TidemarkClient } = await import('../../client');
        const { runExample, shortenForDemo, summarize } = await import('../../demo/run');
        const { portOpen, startDevServer, waitForTemporal } = await import('../../infra/devserver');
        const { databaseComment, findPostgres, recreateDatabase, withDatabase } = await import('../../infra/postgres');
        const { createLogger } = await import('../../logger');
        const { installRuntime } = await import('../../runtime');
        const { startWorker } = await import('../../worker');
        const pg = await findPostgres();
        const db = o.database ?? demoDatabase(ex.name);
        const where = new URL(withDatabase(pg.adminUrl, db));
        const existing = await databaseComment(pg.adminUrl, db);
        if (existing.exists && existing.comment !== DEMO_MARK && !o.reset) {
          throw new CliError(
            `database "${db}" on ${where.host} exists and was not created by tidemark demo; pass --reset to drop and recreate it, or --database NAME`,
            F.Usage,
          );
        }
        log(
          `PostgreSQL: ${where.host} (${pg.source === 'DATABASE_URL' ? 'from $DATABASE_URL' : pg.source === 'local' ? 'found on this machine' : 'a private cluster tidemark started'}), sample database "${db}"${existing.exists ? ' (recreated)' : ''}`,
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

        const plan = shortenForDemo(examplePlan(ex), soakMs, join(stateDir(), 'backups'));
        const client = await TidemarkClient.connect({ address, taskQueue: DEMO_QUEUE });
        // An earlier demo interrupted half-way would still be running against the database about to be recreated.
        for (const id of [workflowIdFor(plan.name), revertWorkflowIdFor(plan.name)]) {
          await client.client.workflow
            .getHandle(id)
            .terminate('superseded by a new tidemark demo run')
            .catch(() => undefined);
        }
        const url = await recreateDatabase(pg.adminUrl, db, DEMO_MARK);
        await seedExample(ex, url, rows);
        // Blue-green: the target is a second, empty database beside the sample one.
        const targetUrl = plan.target ? await recreateDatabase(pg.adminUrl, `${db}_green`, DEMO_MARK) : undefined;
        if (targetUrl) log(`target database "${db}_green" created (empty: the plan's schema steps run there)`);
        log(`seeded ${ex.name}: ${rows.toLocaleString('en-US')} rows in its main table (${ex.runbook})`);
        const logger = createLogger({ name: 'tidemark-worker', level: process.env.LOG_LEVEL ?? 'warn' });
        await installRuntime({ logger });
        const worker = await startWorker({
          address,
          taskQueue: DEMO_QUEUE,
          env: {
            ...process.env,
            [plan.database.urlEnv]: url,
            ...(plan.target && targetUrl ? { [plan.target.urlEnv]: targetUrl } : {}),
          },
          logger,
        });
        try {
          log(
            `\nmigration ${plan.name} (soaks shortened to ${formatDuration(soakMs)}, approvals automatic); Web UI: ${webUiUrl(ui, client.namespace, workflowIdFor(plan.name))}\n`,
          );
          // Interrupted: stop the worker and the server this command started (below), the migration stays in Temporal.
          const interrupted = untilSignal().then((sig) => {
            throw new CliError(
              `interrupted by ${sig}; migration ${workflowIdFor(plan.name)} keeps its state in the Temporal server`,
              F.ActivityError,
            );
          });
          interrupted.catch(() => undefined);
          const run = await Promise.race([runExample(client, ex, plan, { url }), interrupted]);
          log('\n' + (await summarize(url, plan, run, targetUrl)).join('\n'));
          const ok =
            run.migration.state === 'completed' && (!ex.revertsAfterwards || run.revert?.state === 'completed');
          if (!ok) process.exitCode = EXIT.failed;
          if (o.keep) {
            log(`\nserver, Web UI (${ui}) and worker keep running; Ctrl-C to stop`);
            await untilSignal();
          }
        } finally {
          await client.close();
          await worker.shutdown();
          await server?.stop();
        }
      },
    );
}
