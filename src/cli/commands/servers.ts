// Long-running commands: `tidemark worker` and `tidemark dev` (dev server with Web UI, plus a worker).
import type { Command } from 'commander';
import { join } from 'node:path';
import { startDevServer } from '../../infra/devserver';
import { startWorker } from '../../worker';
import type { GlobalOptions } from '../context';

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

export function registerServerCommands(program: Command, globals: () => GlobalOptions): void {
  program
    .command('worker')
    .description("run a worker on the tidemark task queue (connection strings come from this process's environment)")
    .action(async () => {
      const g = globals();
      const w = await startWorker({ address: g.address, namespace: g.namespace, taskQueue: g.taskQueue });
      console.error(
        `worker running on task queue ${g.taskQueue ?? process.env.TIDEMARK_TASK_QUEUE ?? 'tidemark'}; Ctrl-C to stop`,
      );
      await Promise.race([untilSignal(), w.done]);
      await w.shutdown();
    });

  program
    .command('dev')
    .description('run a local Temporal dev server with the Web UI (state kept in .tidemark/) and a worker')
    .option('--port <port>', 'gRPC port', '7233')
    .option('--ui-port <port>', 'Web UI port', '8233')
    .option('--db-file <path>', 'where the server keeps its state', join(stateDir(), 'temporal.db'))
    .option('--no-worker', 'run only the server')
    .action(async (o: { port: string; uiPort: string; dbFile: string; worker: boolean }) => {
      const g = globals();
      const server = await startDevServer({ port: Number(o.port), uiPort: Number(o.uiPort), dbFile: o.dbFile });
      console.error(`Temporal dev server at ${server.address}, Web UI at ${server.uiUrl} (state in ${o.dbFile})`);
      const w = o.worker
        ? await startWorker({ address: server.address, namespace: g.namespace, taskQueue: g.taskQueue })
        : undefined;
      if (w) console.error('worker running; Ctrl-C to stop');
      await untilSignal();
      await w?.shutdown();
      await server.stop();
    });
}
