// Shared by the commands: global options, a connected client, and following a migration until it ends.
import type { LiveProgress, TidemarkClient } from '../client';
import type { MigrationStatus } from '../migration/messages';
import { renderStatus } from './format';
import { progressBlock, progressLine } from './progress';

export interface GlobalOptions {
  verbose?: boolean;
  address?: string;
  namespace?: string;
  taskQueue?: string;
  /** false with --no-color. */
  color?: boolean;
}

/**
 * Where links to the Web UI point: $TIDEMARK_UI_URL, else, for a server on this machine, the port `tidemark dev` gives
 * its UI (the gRPC port + 1000: 7233 → 8233), else http://localhost:8233.
 */
export function uiBase(address = process.env.TEMPORAL_ADDRESS): string {
  if (process.env.TIDEMARK_UI_URL) return process.env.TIDEMARK_UI_URL;
  const m = /^(localhost|127\.0\.0\.1):(\d+)$/.exec(address ?? '');
  return m ? `http://localhost:${Number(m[2]) + 1000}` : 'http://localhost:8233';
}

export async function withTidemark<T>(g: GlobalOptions, fn: (c: TidemarkClient) => Promise<T>): Promise<T> {
  const { TidemarkClient } = await import('../client');
  const c = await TidemarkClient.connect({ address: g.address, namespace: g.namespace, taskQueue: g.taskQueue });
  try {
    return await fn(c);
  } finally {
    await c.close();
  }
}

/** A time of day in UTC, the one zone tidemark prints times in. */
export const clock = (iso: string) => `${iso.slice(11, 19)}Z`;

/** How often a progress line is written when the output is not a terminal. */
export const PROGRESS_EVERY_MS = 10_000;

/**
 * Prints events as they happen until the migration ends, with live progress: redrawn in place on a terminal, a line
 * every `progressEveryMs` elsewhere. Returns the final status.
 */
export async function follow(
  c: TidemarkClient,
  id: string,
  opts: {
    json?: boolean;
    out?: NodeJS.WritableStream;
    progressEveryMs?: number;
    onStatus?: (s: MigrationStatus & { live: LiveProgress[] }) => void;
    /** Stops following at the first status this holds for, as if the migration had ended there. */
    until?: (s: MigrationStatus) => boolean;
  } = {},
): Promise<MigrationStatus & { live: LiveProgress[] }> {
  const out = opts.out ?? process.stdout;
  const tty = (out as NodeJS.WriteStream).isTTY === true && !opts.json;
  // log-update redraws the block in place, and clears it before event lines are written above it.
  const live = tty
    ? (require('log-update') as typeof import('log-update')).create(out as NodeJS.WriteStream)
    : undefined;
  const every = opts.progressEveryMs ?? PROGRESS_EVERY_MS;
  let seen = 0;
  let lastStatus: (MigrationStatus & { live: LiveProgress[] }) | undefined;
  let lastLineAt = 0;
  let retrying = false;
  try {
    await c.waitForEnd(
      id,
      (s) => {
        retrying = false;
        lastStatus = s as MigrationStatus & { live: LiveProgress[] };
        opts.onStatus?.(lastStatus);
        if (opts.json) return;
        // Events are a bounded log (the newest 100): what is new is told by its sequence number, not its index.
        const fresh = s.events.filter((e) => e.seq > seen);
        seen = Math.max(seen, ...s.events.map((e) => e.seq));
        live?.clear();
        for (const e of fresh) out.write(`${clock(e.at)}  ${e.message}\n`);
        if (live) live(progressBlock(lastStatus));
        else if (Date.now() - lastLineAt >= every && !['completed', 'rolled-back', 'failed'].includes(s.state)) {
          lastLineAt = Date.now();
          out.write(`${clock(new Date().toISOString())}  ${progressLine(lastStatus)}\n`);
        }
      },
      1000,
      {
        onRetry: (e) => {
          // Said once per outage, on stderr: stdout stays the migration's own story (or JSON).
          if (retrying) return;
          retrying = true;
          live?.clear();
          process.stderr.write(`status not readable, retrying: ${e.message}\n`);
        },
        until: opts.until,
      },
    );
  } finally {
    live?.clear();
    live?.done();
  }
  const final = lastStatus!;
  if (opts.json) out.write(JSON.stringify(final, null, 2) + '\n');
  else out.write('\n' + renderStatus(final, final.live, uiBase(c.address), c.namespace) + '\n');
  return final;
}
