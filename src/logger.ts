// The one pino logger factory; redacts anything that could carry a secret.
import pino, { type Logger } from 'pino';
import { redactDeep } from './secrets';

export type { Logger };

export function createLogger(opts: { name?: string; level?: string; destination?: number | string } = {}): Logger {
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
    pino.destination({ dest: opts.destination ?? 2, sync: true }),
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
        level = /rollback incomplete/.test(error.message ?? '') ? 'error' : 'info';
      }
    }
    (logger[level] ?? logger.info).call(logger, { sdk: true, ...meta }, entry.message);
  };
}
