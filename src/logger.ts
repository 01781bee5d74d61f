// The one pino logger factory; redacts anything that could carry a secret.
import pino, { type Logger } from 'pino';

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
    },
    pino.destination({ dest: opts.destination ?? 2, sync: true }),
  );
}
