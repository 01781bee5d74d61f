// Limits shared by the workflow's update validators, the CLI's option parsing and the plan schema: defined once.

export const LIMITS = {
  /** A copy batch, in rows (throttle --batch-size, copy[].batchSize, maxBatchSize). */
  batchSize: { min: 1, max: 1_000_000 },
  /** The pause between copy batches an operator may ask for (throttle --delay-ms), in ms. */
  delayMs: { min: 0, max: 600_000 },
  /** Rows per chunk of the exact checksum (validate[].checksum.chunkSize, and the default checks). */
  checksumChunk: { min: 100, max: 1_000_000, default: 10_000 },
  /** Events kept in status (the newest); `seq` keeps counting over the whole migration. */
  statusEvents: 100,
  /** Continue as new past this many history events even if the server does not suggest it yet. */
  historyEvents: 10_000,
} as const;

export type Bounds = { readonly min: number; readonly max: number };

/** Why `value` is not an integer within `bounds` (named `what`), or undefined when it is. */
export function outOfBounds(what: string, value: unknown, bounds: Bounds, unit = ''): string | undefined {
  if (typeof value === 'number' && Number.isInteger(value) && value >= bounds.min && value <= bounds.max)
    return undefined;
  return `${what} must be an integer from ${bounds.min} to ${bounds.max}${unit}`;
}
