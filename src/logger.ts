// The one pino logger factory; redacts anything that could carry a secret. JSON lines by default, or pino-pretty's
// readable lines (`--log-format pretty`, TIDEMARK_LOG_FORMAT=pretty; the default on a terminal).
import pino, { type DestinationStream, type Logger } from 'pino';
import { redactDeep } from './secrets';

export type { Logger };
export type LogFormat = 'pretty' | 'json';

export function defaultLogFormat(): LogFormat {
  const f = process.env.TIDEMARK_LOG_FORMAT;
  if (f === 'pretty' || f === 'json') return f;
  return process.stderr.isTTY ? 'pretty' : 'json';
}

export function createLogger(
  opts: { name?: string; level?: string; destination?: number | string; format?: LogFormat } = {},
): Logger {
  const dest = opts.destination ?? 2;
  const stream: DestinationStream =
    (opts.format ?? 'json') === 'pretty'
      ? (require('pino-pretty') as (o: object) => DestinationStream)({
          destination: dest,
          sync: true,
          colorize: process.stderr.isTTY === true && !process.env.NO_COLOR,
          translateTime: 'SYS:HH:MM:ss.l',
          ignore: 'pid,hostname',
        })
      : pino.destination({ dest, sync: true });
  return pino(
    {
      name: opts.name ?? 'tidemark',
      level: opts.level ?? process.env.LOG_LEVEL ?? 'info',
      redact: {
        paths: ['password', '*.password', 'connectionString', '*.connectionString', 'url', '*.url', 'env'],
        censor: '[redacted]',
      },
      // Messages and fields can quote an error that quotes a URL: every argument goes through the one redactor.
      hooks: {
        logMethod(args, method) {
          method.apply(this, args.map((a) => redactDeep(a)) as Parameters<typeof method>);
        },
      },
    },
    stream,
  );
}

/**
 * The Temporal SDK's log entries, sent through pino. A migration that rolled back is an outcome, not a worker fault:
 * the SDK's "Workflow failed" warning (with a stack trace) for it becomes one info line.
 */
export function sdkLogFunction(logger: Logger) {
  return (entry: { level: string; message: string; meta?: Record<string, unknown> }): void => {
    const meta = { ...(entry.meta ?? {}) };
    const error = meta.error as { message?: string } | undefined;
    let level = entry.level.toLowerCase() as 'trace' | 'debug' | 'info' | 'warn' | 'error';
    if (error && typeof error === 'object') {
      // The error crossed a worker-thread boundary: only its message is left to tell a rollback from a failed one.
      meta.error = error.message;
      if (entry.message === 'Workflow failed' && meta.workflowType === 'migrationWorkflow') {
        level = /rollback stopped/.test(error.message ?? '') ? 'error' : 'info';
      }
    }
    (logger[level] ?? logger.info).call(logger, { sdk: true, ...meta }, entry.message);
  };
}
