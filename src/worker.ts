// Builds the worker's dependencies (pools, logger, activities) and runs it on the tidemark task queue.
import { NativeConnection, Worker, type WorkflowBundle, type WorkflowBundleOption } from '@temporalio/worker';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { createActivities, type ActivityDeps } from './phases/activities';
import { PoolRegistry } from './db/pool';
import { ensureSearchAttributes } from './infra/devserver';
import { createLogger, type Logger } from './logger';
import { redactDeep, registerSecretsIn } from './secrets';
import { serveMetrics, type MetricsServer } from './metrics/server';
import { WorkerMetrics } from './metrics/worker-metrics';
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
  /** Serve Prometheus metrics on this port (0: any free port). */
  metricsPort?: number;
  /** Where the SDK's own Prometheus exporter answers (runtime.ts), to pass its metrics on. */
  sdkMetricsUrl?: string;
}

export interface RunningWorker {
  worker: Worker;
  /** Resolves when the worker has stopped. */
  done: Promise<void>;
  /** http://host:port/metrics when metrics are served. */
  metricsUrl?: string;
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
  const metrics = new WorkerMetrics();
  const worker = await Worker.create({
    connection,
    namespace,
    taskQueue,
    ...((opts.workflowBundle ?? prebuiltBundle())
      ? { workflowBundle: opts.workflowBundle ?? prebuiltBundle() }
      : { workflowsPath: workflowsPath() }),
    activities: createActivities({ pools, logger, env: opts.env ?? process.env, binaries: opts.binaries }),
    sinks: metrics.sinks(),
    // Everything an activity hands back — its result or its failure — becomes workflow history, status and events:
    // no secret may ride along (see secrets.ts). The metrics interceptor reads the copy's heartbeats.
    interceptors: {
      activity: [
        () => ({ inbound: { execute: (input, next) => redactedOutcome(next(input)) } }),
        metrics.interceptor(),
      ],
    },
    maxConcurrentActivityTaskExecutions: opts.maxConcurrentActivities ?? 32,
    // Progress (rows copied, throttle reason) reaches `status` through heartbeats: send them every few seconds.
    maxHeartbeatThrottleInterval: '2s',
    defaultHeartbeatThrottleInterval: '2s',
    // Give a running copy time to finish its batch and report its cursor when the worker stops.
    shutdownGraceTime: '10s',
  });
  let server: MetricsServer | undefined;
  if (opts.metricsPort !== undefined) {
    server = await serveMetrics({
      port: opts.metricsPort,
      registry: metrics.registry,
      sdkMetricsUrl: opts.sdkMetricsUrl,
    });
  }
  const metricsUrl = server && `http://localhost:${server.port}/metrics`;
  logger.info({ address, namespace, taskQueue, metrics: metricsUrl }, 'worker started');
  const done = worker.run().finally(async () => {
    await server?.close();
    await pools.closeAll();
    await connection.close().catch(() => undefined);
    logger.info('worker stopped');
  });
  return {
    worker,
    done,
    metricsUrl,
    async shutdown() {
      if (worker.getState() === 'RUNNING') worker.shutdown();
      await done;
    },
  };
}
