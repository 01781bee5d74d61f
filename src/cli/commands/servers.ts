// Long-running commands: `tidemark worker` and `tidemark dev` (dev server with Web UI, plus a worker).
import { Option, type Command } from 'commander';
import { join } from 'node:path';
import type { LogFormat } from '../../logger';
import { parseDuration } from '../../plan/durations';
import { F } from '../../migration/failures';
import type { GlobalOptions } from '../context';
import { CliError } from '../errors';

export function stateDir(): string {
  return process.env.TIDEMARK_HOME ?? join(process.cwd(), '.tidemark');
}

/** Resolves on the first SIGINT/SIGTERM. */
export function untilSignal(): Promise<string> {
  return new Promise((resolve) => {
    const on = (sig: string) => {
      process.off('SIGINT', on);
      process.off('SIGTERM', on);
      resolve(sig);
    };
    process.on('SIGINT', on);
    process.on('SIGTERM', on);
  });
}

function port(name: string) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0 || n > 65535)
      throw new CliError(`${name} must be a port number, got "${v}"`, F.Usage);
    return n;
  };
}

const logFormatOption = () =>
  new Option('--log-format <format>', 'pretty or json (default: $TIDEMARK_LOG_FORMAT, else pretty on a terminal)')
    .choices(['pretty', 'json'])
    .env('TIDEMARK_LOG_FORMAT');

const metricsPortOption = () =>
  new Option('--metrics-port <port>', 'serve Prometheus metrics at http://0.0.0.0:<port>/metrics')
    .env('TIDEMARK_METRICS_PORT')
    .argParser(port('--metrics-port'));

const maxActivitiesOption = () =>
  new Option(
    '--max-activities <n>',
    'activities this worker runs at once (copy ranges, checks, appliers…; default 32): size it to the cores and connections it may use',
  )
    .env('TIDEMARK_MAX_ACTIVITIES')
    .argParser((v: string) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1 || n > 1000)
        throw new CliError(`--max-activities must be a whole number from 1 to 1000, got "${v}"`, F.Usage);
      return n;
    });

/**
 * A line for the operator once something is up: as it reads on a terminal, or with `--log-format json` as one more JSON
 * log line (whatever LOG_LEVEL says), so whatever reads the worker's log as JSON reads every line of it.
 */
async function sayUp(logFormat: LogFormat | undefined, message: string): Promise<void> {
  const { createLogger, defaultLogFormat } = await import('../../logger');
  const format = logFormat ?? defaultLogFormat();
  if (format === 'json') createLogger({ name: 'tidemark', format, level: 'info' }).info(message);
  else console.error(message);
}

/** Installs the runtime and starts a worker, serving metrics if asked. */
async function runWorker(o: {
  address?: string;
  namespace?: string;
  taskQueue?: string;
  logFormat?: LogFormat;
  metricsPort?: number;
  maxActivities?: number;
}) {
  const { createLogger, defaultLogFormat } = await import('../../logger');
  const { installRuntime } = await import('../../runtime');
  const { startWorker } = await import('../../worker');
  const { waitForTemporal } = await import('../../infra/devserver');
  const format = o.logFormat ?? defaultLogFormat();
  const logger = createLogger({ name: 'tidemark-worker', format });
  // Started beside the server (a container stack, a service manager), the worker waits for it instead of failing.
  const address = o.address ?? process.env.TEMPORAL_ADDRESS ?? 'localhost:7233';
  const wait = parseDuration(process.env.TIDEMARK_CONNECT_TIMEOUT ?? '60s');
  if (wait === undefined) throw new CliError('TIDEMARK_CONNECT_TIMEOUT must be a duration like 60s', F.Usage);
  await waitForTemporal(address, wait);
  const { sdkMetricsUrl } = await installRuntime({
    logger: createLogger({ name: 'temporal-sdk', format }),
    sdkMetrics: o.metricsPort !== undefined,
  });
  return startWorker({ ...o, maxConcurrentActivities: o.maxActivities, logger, sdkMetricsUrl });
}

export function registerServerCommands(program: Command, globals: () => GlobalOptions): void {
  program
    .command('worker')
    .description("run a worker on the tidemark task queue (connection strings come from this process's environment)")
    .addOption(metricsPortOption())
    .addOption(logFormatOption())
    .addOption(maxActivitiesOption())
    .action(async (o: { metricsPort?: number; logFormat?: LogFormat; maxActivities?: number }) => {
      const g = globals();
      // Listening before anything starts: a stop asked for as soon as "worker running" is printed (or during start-up)
      // must shut the worker down, not find the process without a handler and kill it outright.
      const signal = untilSignal();
      const w = await runWorker({ address: g.address, namespace: g.namespace, taskQueue: g.taskQueue, ...o });
      await sayUp(
        o.logFormat,
        `worker running on task queue ${g.taskQueue ?? process.env.TIDEMARK_TASK_QUEUE ?? 'tidemark'}${w.metricsUrl ? `, metrics at ${w.metricsUrl}` : ''}; Ctrl-C to stop`,
      );
      await Promise.race([signal, w.done]);
      await w.shutdown();
    });

  program
    .command('dev')
    .description('run a local Temporal dev server with the Web UI (state kept in .tidemark/) and a worker')
    .option('--port <port>', 'gRPC port', '7233')
    .option('--ui-port <port>', 'Web UI port', '8233')
    .option('--db-file <path>', 'where the server keeps its state (default .tidemark/temporal.db)')
    .option('--no-worker', 'run only the server')
    .addOption(metricsPortOption())
    .addOption(logFormatOption())
    .action(
      async (o: {
        port: string;
        uiPort: string;
        dbFile?: string;
        worker: boolean;
        metricsPort?: number;
        logFormat?: LogFormat;
      }) => {
        const g = globals();
        const signal = untilSignal(); // before anything starts, as for `tidemark worker`
        const { startDevServer } = await import('../../infra/devserver');
        const dbFile = o.dbFile ?? join(stateDir(), 'temporal.db');
        const server = await startDevServer({ port: Number(o.port), uiPort: Number(o.uiPort), dbFile });
        await sayUp(
          o.logFormat,
          `Temporal dev server at ${server.address}, Web UI at ${server.uiUrl} (state in ${dbFile})`,
        );
        const w = o.worker
          ? await runWorker({
              address: server.address,
              namespace: g.namespace,
              taskQueue: g.taskQueue,
              metricsPort: o.metricsPort,
              logFormat: o.logFormat,
            })
          : undefined;
        if (w)
          await sayUp(
            o.logFormat,
            `worker running${w.metricsUrl ? `, metrics at ${w.metricsUrl}` : ''}; Ctrl-C to stop`,
          );
        await signal;
        await w?.shutdown();
        await server.stop();
      },
    );
}
