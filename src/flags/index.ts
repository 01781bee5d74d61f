// The application-side flag reader: `isEnabledFor(flag, subjectId)` from a local cache of tidemark.flags, kept fresh by
// LISTEN/NOTIFY (a rollback reaches readers within a second) with polling as a fallback. Usable from any Node service
// that has a `pg` pool:
//
//   const flags = new FlagReader(pool);
//   await flags.start();
//   if (flags.isEnabledFor('use_orders_v2', user.id)) { … new path … } else { … old path … }
//   const db = flags.choose('use_green_database', user.id, bluePool, greenPool); // blue-green: one pool per side
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Pool, PoolClient } from 'pg';
import { quoteIdent } from '../db/quote';

import { FLAGS_CHANNEL } from '../db/names';

export { FLAGS_CHANNEL };

/**
 * The subject's bucket for a flag, 0..99: stable (the same inputs always give the same bucket) and monotonic in use —
 * a subject enabled at 10 % has a bucket below 10, so it stays enabled at 50 % and 100 %. The flag name is part of the
 * hash, so different flags roll out to different subjects first.
 */
export function bucketOf(flag: string, subjectId: string | number): number {
  const digest = createHash('sha256').update(`${flag}\u0000${subjectId}`).digest();
  // 48 bits of the hash mapped onto 0..99 (floor(x * 100 / 2^48)): uniform to well under 0.01 %.
  const x = digest.readUIntBE(0, 6);
  return Math.floor((x * 100) / 2 ** 48);
}

/** Whether a subject falls inside a rollout percentage. */
export function inRollout(percentage: number, flag: string, subjectId: string | number): boolean {
  if (percentage >= 100) return true;
  if (percentage <= 0) return false;
  return bucketOf(flag, subjectId) < percentage;
}

export interface FlagReaderOptions {
  /** Reload everything this often even if notifications flow (default 5 s): covers a lost connection or notification. */
  pollIntervalMs?: number;
  /** Schema holding the flags table (default tidemark). */
  schema?: string;
  /** Called with errors the reader recovered from (the cache keeps its last values). */
  onError?: (e: Error) => void;
}

export interface FlagChange {
  name: string;
  percentage: number;
  previous: number | undefined;
}

/** A local, always-answering view of tidemark.flags. Unknown flags read as 0 %. */
export class FlagReader extends EventEmitter {
  private readonly values = new Map<string, number>();
  private listener?: PoolClient;
  private pollTimer?: NodeJS.Timeout;
  private reconnectTimer?: NodeJS.Timeout;
  private closed = false;
  private readonly opts: Required<Omit<FlagReaderOptions, 'onError'>> & Pick<FlagReaderOptions, 'onError'>;

  constructor(
    private readonly pool: Pool,
    opts: FlagReaderOptions = {},
  ) {
    super();
    this.opts = {
      pollIntervalMs: opts.pollIntervalMs ?? 5000,
      schema: opts.schema ?? 'tidemark',
      onError: opts.onError,
    };
  }

  /** Loads the flags and starts listening; resolves once the cache is filled. */
  async start(): Promise<this> {
    await this.reload();
    await this.listen().catch((e) => {
      this.fail(e as Error);
      this.reconnectSoon();
    });
    this.pollTimer = setInterval(() => this.reload().catch((e) => this.fail(e as Error)), this.opts.pollIntervalMs);
    this.pollTimer.unref();
    return this;
  }

  percentage(flag: string): number {
    return this.values.get(flag) ?? 0;
  }

  isEnabledFor(flag: string, subjectId: string | number): boolean {
    return inRollout(this.percentage(flag), flag, subjectId);
  }

  /**
   * Blue-green: which of two pools (or anything else) serves a subject — `green` once the flag's rollout includes it,
   * else `blue`. A subject stays on one side for a given percentage, so its reads follow its own writes:
   *
   *   const db = flags.choose('use_green_database', user.id, bluePool, greenPool);
   *   await db.query('UPDATE cameras SET … WHERE id = $1', [id]);
   */
  choose<T>(flag: string, subjectId: string | number, blue: T, green: T): T {
    return this.isEnabledFor(flag, subjectId) ? green : blue;
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.pollTimer) clearInterval(this.pollTimer);
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    const l = this.listener;
    this.listener = undefined;
    if (l) {
      await l.query(`UNLISTEN ${FLAGS_CHANNEL}`).catch(() => undefined);
      l.release();
    }
  }

  private set(name: string, percentage: number): void {
    const previous = this.values.get(name);
    if (previous === percentage) return;
    this.values.set(name, percentage);
    this.emit('change', { name, percentage, previous } satisfies FlagChange);
  }

  private async reload(): Promise<void> {
    const table = `${quoteIdent(this.opts.schema)}.flags`;
    try {
      const r = await this.pool.query(`SELECT name, rollout_percentage FROM ${table}`);
      for (const row of r.rows as { name: string; rollout_percentage: number }[])
        this.set(row.name, row.rollout_percentage);
    } catch (e) {
      // No flags table yet (no migration has run): every flag is off.
      if ((e as { code?: string }).code !== '42P01') throw e;
    }
  }

  private async listen(): Promise<void> {
    if (this.closed) return;
    const client = await this.pool.connect();
    this.listener = client;
    client.on('notification', (msg) => {
      if (msg.channel !== FLAGS_CHANNEL || !msg.payload) return;
      try {
        const p = JSON.parse(msg.payload) as { name: string; rollout_percentage: number };
        this.set(p.name, p.rollout_percentage);
      } catch {
        void this.reload().catch((e) => this.fail(e as Error));
      }
    });
    client.on('error', (e) => this.lost(client, e));
    client.on('end', () => this.lost(client, new Error('flag listener connection ended')));
    await client.query(`LISTEN ${FLAGS_CHANNEL}`);
    // A change made between the first load and LISTEN would be missed without this second look.
    await this.reload();
  }

  private lost(client: PoolClient, e: Error): void {
    if (this.listener !== client) return;
    this.listener = undefined;
    client.release(e);
    this.fail(e);
    this.reconnectSoon();
  }

  private reconnectSoon(): void {
    if (this.closed) return;
    this.reconnectTimer = setTimeout(() => {
      this.listen().catch((err) => {
        this.fail(err as Error);
        this.reconnectSoon();
      });
    }, 1000);
    this.reconnectTimer.unref();
  }

  private fail(e: Error): void {
    this.opts.onError?.(e);
  }
}
