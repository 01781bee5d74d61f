// Builds the worker's dependencies (pools, logger, activities) and runs it on the tidemark task queue.
import { NativeConnection, Worker, type WorkflowBundle, type WorkflowBundleOption } from '@temporalio/worker';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { createActivities, type ActivityDeps } from './phases/activities';
import { PoolRegistry } from './db/pool';
import { ensureSearchAttributes } from './infra/devserver';
import { createLogger, type Logger } from './logger';
import { redactDeep, registerSecretsIn } from './secrets';
import { DEFAULT_TASK_QUEUE } from './migration/messages';

export interface WorkerOptions {
  address?: string;
  namespace?: string;
  taskQueue?: string;
  /** Environment the activities read connection strings from (default: process.env). */
  env?: NodeJS.ProcessEnv;
  logger?: Logger;
  /** Pre-built workflow bundle (tests bundle once per file); default: bundle src/migration at start. */
  workflowBundle?: WorkflowBundle;
  binaries?: ActivityDeps['binaries'];
  maxConcurrentActivities?: number;
}

export interface RunningWorker {
  worker: Worker;
  /** Resolves when the worker has stopped. */
  done: Promise<void>;
  shutdown(): Promise<void>;
}

export function workflowsPath(): string {
  return require.resolve('./migration');
}

/** The workflow bundle made at build time (dist/workflow-bundle.js), when running from dist. */
function prebuiltBundle(): WorkflowBundleOption | undefined {
  const codePath = join(__dirname, 'workflow-bundle.js');
  return existsSync(codePath) ? { codePath } : undefined;
}

async function redactedOutcome(outcome: Promise<unknown>): Promise<unknown> {
  try {
    return redactDeep(await outcome);
  } catch (e) {
    throw redactDeep(e);
  }
}

export async function startWorker(opts: WorkerOptions = {}): Promise<RunningWorker> {
  const address = opts.address ?? process.env.TEMPORAL_ADDRESS ?? 'localhost:7233';
  const namespace = opts.namespace ?? process.env.TEMPORAL_NAMESPACE ?? 'default';
  const taskQueue = opts.taskQueue ?? process.env.TIDEMARK_TASK_QUEUE ?? DEFAULT_TASK_QUEUE;
  const logger = opts.logger ?? createLogger({ name: 'tidemark-worker' });
  await ensureSearchAttributes(address, namespace);
  const connection = await NativeConnection.connect({ address });
  registerSecretsIn(opts.env ?? process.env);
  const pools = new PoolRegistry(opts.env ?? process.env);
  const worker = await Worker.create({
    connection,
    namespace,
    taskQueue,
    ...((opts.workflowBundle ?? prebuiltBundle())
      ? { workflowBundle: opts.workflowBundle ?? prebuiltBundle() }
      : { workflowsPath: workflowsPath() }),
    activities: createActivities({ pools, logger, binaries: opts.binaries }),
    // Everything an activity hands back — its result or its failure — becomes workflow history, status and events:
    // no secret may ride along (see secrets.ts).
    interceptors: { activity: [() => ({ inbound: { execute: (input, next) => redactedOutcome(next(input)) } })] },
    maxConcurrentActivityTaskExecutions: opts.maxConcurrentActivities ?? 32,
    // Progress (rows copied, throttle reason) reaches `status` through heartbeats: send them every few seconds.
    maxHeartbeatThrottleInterval: '2s',
    defaultHeartbeatThrottleInterval: '2s',
    // Give a running copy time to finish its batch and report its cursor when the worker stops.
    shutdownGraceTime: '10s',
  });
  logger.info({ address, namespace, taskQueue }, 'worker started');
  const done = worker.run().finally(async () => {
    await pools.closeAll();
    await connection.close().catch(() => undefined);
    logger.info('worker stopped');
  });
  return {
    worker,
    done,
    async shutdown() {
      if (worker.getState() === 'RUNNING') worker.shutdown();
      await done;
    },
  };
}
