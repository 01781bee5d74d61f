// The Temporal SDK's native runtime for a process that runs workers: its log goes through pino, and its Prometheus
// exporter (worker metrics) is bound to a private loopback port that the worker's /metrics endpoint passes on. The
// runtime can be installed once per process, before the first worker or native connection.
import type { Logger } from './logger';

export async function installRuntime(opts: {
  logger: Logger;
  sdkMetrics?: boolean;
}): Promise<{ sdkMetricsUrl?: string }> {
  const { DefaultLogger, Runtime } = await import('@temporalio/worker');
  const { sdkLogFunction } = await import('./logger');
  const { freePort } = await import('./infra/devserver');
  // The SDK's own chatter (worker state changes) only at warn level unless asked for.
  const sdkLevel = (process.env.TEMPORAL_LOG_LEVEL?.toUpperCase() as 'WARN' | undefined) ?? 'WARN';
  const bindAddress = opts.sdkMetrics ? `127.0.0.1:${await freePort()}` : undefined;
  Runtime.install({
    logger: new DefaultLogger(sdkLevel, sdkLogFunction(opts.logger)),
    // No shutdown signals for the SDK: the commands that run workers handle SIGINT/SIGTERM themselves.
    shutdownSignals: [],
    ...(bindAddress ? { telemetryOptions: { metrics: { prometheus: { bindAddress } } } } : {}),
  });
  return { sdkMetricsUrl: bindAddress && `http://${bindAddress}/metrics` };
}
