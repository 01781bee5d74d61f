// Shared by the commands: global options, a connected client, and following a migration until it ends.
import { TidemarkClient, type LiveProgress } from '../client';
import type { MigrationStatus } from '../migration/messages';
import { renderStatus } from './format';

export interface GlobalOptions {
  verbose?: boolean;
  address?: string;
  namespace?: string;
  taskQueue?: string;
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
  const c = await TidemarkClient.connect({ address: g.address, namespace: g.namespace, taskQueue: g.taskQueue });
  try {
    return await fn(c);
  } finally {
    await c.close();
  }
}

const clock = (iso: string) => iso.slice(11, 19);

/** Prints events as they happen (and copy progress on a terminal) until the migration ends; returns the final status. */
export async function follow(
  c: TidemarkClient,
  id: string,
  opts: {
    json?: boolean;
    out?: NodeJS.WritableStream;
    onStatus?: (s: MigrationStatus & { live: LiveProgress[] }) => void;
  } = {},
): Promise<MigrationStatus & { live: LiveProgress[] }> {
  const out = opts.out ?? process.stdout;
  const tty = (out as NodeJS.WriteStream).isTTY === true && !opts.json;
  let seen = 0;
  let lastStatus: (MigrationStatus & { live: LiveProgress[] }) | undefined;
  let progressShown = false;
  let retrying = false;
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
      if (fresh.length && progressShown) {
        out.write('\r\x1b[K');
        progressShown = false;
      }
      for (const e of fresh) out.write(`${clock(e.at)}  ${e.message}\n`);
      const copying = s.copy.find((j) => !j.done);
      if (tty && s.phase === 'copy' && copying && s.state === 'running') {
        const pct = copying.estimatedTotal
          ? Math.min(100, Math.round((100 * copying.rowsCopied) / copying.estimatedTotal))
          : 0;
        out.write(
          `\r\x1b[K  copying ${copying.job}: ${copying.rowsCopied.toLocaleString('en-US')} rows (${pct}%), ${copying.rowsPerSecond.toLocaleString('en-US')} rows/s`,
        );
        progressShown = true;
      }
    },
    1000,
    {
      onRetry: (e) => {
        // Said once per outage, on stderr: stdout stays the migration's own story (or JSON).
        if (retrying) return;
        retrying = true;
        if (progressShown) out.write('\r\x1b[K');
        progressShown = false;
        process.stderr.write(`status not readable, retrying: ${e.message}\n`);
      },
    },
  );
  if (progressShown) out.write('\r\x1b[K');
  const final = lastStatus!;
  if (opts.json) out.write(JSON.stringify(final, null, 2) + '\n');
  else out.write('\n' + renderStatus(final, final.live, uiBase(c.address), c.namespace) + '\n');
  return final;
}
