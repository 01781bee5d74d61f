// Shared by the commands: global options, a connected client, and following a migration until it ends.
import { TidemarkClient, type LiveProgress } from '../client';
import type { MigrationStatus } from '../workflows/messages';
import { renderStatus } from './format';

export interface GlobalOptions {
  verbose?: boolean;
  address?: string;
  namespace?: string;
  taskQueue?: string;
}

export function uiBase(): string {
  return process.env.TIDEMARK_UI_URL ?? 'http://localhost:8233';
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
  opts: { json?: boolean; out?: NodeJS.WritableStream; onStatus?: (s: MigrationStatus & { live: LiveProgress[] }) => void } = {},
): Promise<MigrationStatus & { live: LiveProgress[] }> {
  const out = opts.out ?? process.stdout;
  const tty = (out as NodeJS.WriteStream).isTTY === true && !opts.json;
  let seen = 0;
  let lastStatus: (MigrationStatus & { live: LiveProgress[] }) | undefined;
  let progressShown = false;
  await c.waitForEnd(id, (s) => {
    lastStatus = s as MigrationStatus & { live: LiveProgress[] };
    opts.onStatus?.(lastStatus);
    if (opts.json) return;
    // Events are a bounded log: find where we left off by timestamp+text rather than index.
    const fresh = s.events.length >= seen ? s.events.slice(seen) : s.events;
    seen = s.events.length;
    if (fresh.length && progressShown) {
      out.write('\r\x1b[K');
      progressShown = false;
    }
    for (const e of fresh) out.write(`${clock(e.at)}  ${e.message}\n`);
    const copying = s.copy.find((j) => !j.done);
    if (tty && s.phase === 'copy' && copying && s.state === 'running') {
      const pct = copying.estimatedTotal ? Math.min(100, Math.round((100 * copying.rowsCopied) / copying.estimatedTotal)) : 0;
      out.write(`\r\x1b[K  copying ${copying.job}: ${copying.rowsCopied.toLocaleString('en-US')} rows (${pct}%), ${copying.rowsPerSecond.toLocaleString('en-US')} rows/s`);
      progressShown = true;
    }
  });
  if (progressShown) out.write('\r\x1b[K');
  const final = lastStatus!;
  if (opts.json) out.write(JSON.stringify(final, null, 2) + '\n');
  else out.write('\n' + renderStatus(final, final.live, uiBase(), c.namespace) + '\n');
  return final;
}
