// The chaos suite's application: concurrent inserts, updates (key changes included) and deletes on meetings, and, once
// the flag sends a subject to the new path, on meetings_v2 — chosen per row through tidemark's FlagReader, as an
// application would. It keeps a ledger of every write the database acknowledged, so a run can tell whether any was
// lost. A write whose outcome is unknown (the connection died before the answer) makes its rows uncertain: the check
// skips them rather than guessing.
import { Pool } from 'pg';
import { quoteIdent } from '../../src/db/quote';
import { FlagReader } from '../../src/flags';
import type { Rng } from './prng';

export const FLAG = 'use_room_types';
const OLD = quoteIdent('meetings');
const NEW = quoteIdent('meetings_v2');
const OLD_SEQ = quoteIdent('meetings_id_seq');
const COLUMNS = ['id', 'title', 'meeting_type', 'status', 'max_participants'].map(quoteIdent).join(', ');

export interface LedgerRow {
  title: string;
  meeting_type: string | null;
  status: string;
  max_participants: number;
}

export interface WriterCounts {
  oldPath: { inserts: number; updates: number; deletes: number; keyChanges: number };
  newPath: { inserts: number; updates: number; deletes: number };
  /** Statements the database refused (by SQLSTATE), and writes whose outcome is unknown. */
  failed: Record<string, number>;
  uncertain: number;
}

const TYPES = ['free_talk', 'lesson', 'teacher_class', 'public', 'private', null];
const STATUSES = ['active', 'ended', 'scheduled'];
const ROOM_TYPE = `CASE $2::text WHEN 'free_talk' THEN 'free_talk' WHEN 'lesson' THEN 'lesson' WHEN 'teacher_class' THEN 'teacher_class'
  WHEN 'public' THEN 'free_talk' WHEN 'private' THEN 'lesson' ELSE 'free_talk' END`;

/** The ids one writer loop may touch, with O(1) random pick and removal. */
class IdSet {
  private ids: string[] = [];
  private at = new Map<string, number>();
  add(id: string) {
    if (this.at.has(id)) return;
    this.at.set(id, this.ids.length);
    this.ids.push(id);
  }
  remove(id: string) {
    const i = this.at.get(id);
    if (i === undefined) return;
    const last = this.ids.pop()!;
    this.at.delete(id);
    if (last !== id) {
      this.ids[i] = last;
      this.at.set(last, i);
    }
  }
  pick(rnd: Rng): string | undefined {
    return this.ids.length ? this.ids[Math.floor(rnd() * this.ids.length)] : undefined;
  }
}

/** Errors that say the statement did not commit; anything else (a lost connection, a shutdown) leaves it unknown. */
function certainlyFailed(e: unknown): string | undefined {
  const code = (e as { code?: string }).code;
  if (!code || typeof code !== 'string' || code.length !== 5) return undefined;
  if (code.startsWith('08') || code.startsWith('57P') || code === 'XX000') return undefined;
  return code;
}

export class LedgerWriter {
  readonly ledger = new Map<string, LedgerRow>();
  readonly uncertainIds = new Set<string>();
  readonly uncertainTitles = new Set<string>();
  readonly counts: WriterCounts = {
    oldPath: { inserts: 0, updates: 0, deletes: 0, keyChanges: 0 },
    newPath: { inserts: 0, updates: 0, deletes: 0 },
    failed: {},
    uncertain: 0,
  };
  private running = true;
  private loops: Promise<void>[] = [];
  private pool!: Pool;
  private flags!: FlagReader;
  private parts: IdSet[] = [];
  private nextKey: number[] = [];
  private n = 0;

  private constructor(
    private readonly url: string,
    private readonly rnd: Rng,
    private readonly concurrency: number,
    private readonly pauseMs: number,
  ) {}

  /** Reads the table as it is (the ledger's starting point) and starts writing. */
  static async start(url: string, rnd: Rng, opts: { concurrency?: number; opsPerSecond?: number } = {}) {
    const concurrency = opts.concurrency ?? 3;
    const w = new LedgerWriter(url, rnd, concurrency, (1000 * concurrency) / (opts.opsPerSecond ?? 60));
    w.pool = new Pool({
      connectionString: url,
      max: concurrency + 2,
      application_name: 'chaos-writer',
      connectionTimeoutMillis: 5000,
      statement_timeout: 20_000,
    });
    w.pool.on('error', () => undefined);
    w.flags = await new FlagReader(w.pool, { pollIntervalMs: 1000, onError: () => undefined }).start();
    for (let i = 0; i < concurrency; i++) {
      w.parts.push(new IdSet());
      w.nextKey.push(30_000_000 + i);
    }
    const rows = await w.pool.query(`SELECT ${COLUMNS} FROM ${OLD}`);
    for (const r of rows.rows) w.record(String(r.id), r);
    w.loops = Array.from({ length: concurrency }, (_, i) => w.loop(i));
    return w;
  }

  private part(id: string): IdSet {
    return this.parts[Number(BigInt(id) % BigInt(this.concurrency))];
  }

  private record(id: string, r: LedgerRow) {
    this.ledger.set(id, {
      title: r.title,
      meeting_type: r.meeting_type,
      status: r.status,
      max_participants: Number(r.max_participants),
    });
    this.part(id).add(id);
  }

  private forget(id: string) {
    this.ledger.delete(id);
    this.part(id).remove(id);
  }

  private uncertain(ids: string[], title?: string) {
    this.counts.uncertain++;
    for (const id of ids) {
      this.uncertainIds.add(id);
      this.part(id).remove(id);
    }
    if (title) this.uncertainTitles.add(title);
  }

  private async loop(i: number): Promise<void> {
    while (this.running) {
      try {
        await this.op(i);
      } catch {
        // recorded by op
      }
      await new Promise((r) => setTimeout(r, this.pauseMs * (0.5 + this.rnd())));
    }
  }

  private async op(i: number): Promise<void> {
    const rnd = this.rnd;
    const title = `chaos ${i}-${++this.n}`;
    const type = TYPES[Math.floor(rnd() * TYPES.length)];
    const status = STATUSES[Math.floor(rnd() * STATUSES.length)];
    const max = 2 + Math.floor(rnd() * 50);
    const roll = rnd();
    const id = this.parts[i].pick(rnd);
    const attempt = async (ids: string[], run: () => Promise<void>, insertTitle?: string) => {
      try {
        await run();
      } catch (e) {
        const code = certainlyFailed(e);
        if (code) this.counts.failed[code] = (this.counts.failed[code] ?? 0) + 1;
        else this.uncertain(ids, insertTitle);
        throw e;
      }
    };
    if (roll < 0.25 || id === undefined) {
      // Insert: the subject is the new row's title, so either path may take it.
      const newPath = this.flags.isEnabledFor(FLAG, title);
      await attempt(
        [],
        async () => {
          const r = newPath
            ? await this.pool.query(
                `INSERT INTO ${NEW} (id, title, meeting_type, room_type, status, host_id, max_participants, created_at, updated_at)
                 VALUES (nextval('${OLD_SEQ}'), $1, $2::text, ${ROOM_TYPE}, $3, md5($1)::uuid, $4, now(), now()) RETURNING id`,
                [title, type, status, max],
              )
            : await this.pool.query(
                `INSERT INTO ${OLD} (title, meeting_type, status, host_id, max_participants) VALUES ($1, $2, $3, md5($1)::uuid, $4) RETURNING id`,
                [title, type, status, max],
              );
          this.record(String(r.rows[0].id), { title, meeting_type: type, status, max_participants: max });
          if (newPath) this.counts.newPath.inserts++;
          else this.counts.oldPath.inserts++;
        },
        title,
      );
      return;
    }
    const newPath = this.flags.isEnabledFor(FLAG, id);
    if (roll < 0.75) {
      await attempt([id], async () => {
        const r = newPath
          ? await this.pool.query(
              `UPDATE ${NEW} SET title = $1, meeting_type = $2::text, room_type = ${ROOM_TYPE}, status = $3, max_participants = $4, updated_at = now() WHERE id = $5`,
              [title, type, status, max, id],
            )
          : await this.pool.query(
              `UPDATE ${OLD} SET title = $1, meeting_type = $2, status = $3, max_participants = $4, updated_at = now() WHERE id = $5`,
              [title, type, status, max, id],
            );
        // No row: the table lost one the application wrote. The final check reports it; the ledger keeps the row.
        if (r.rowCount !== 1) return;
        this.record(id, { title, meeting_type: type, status, max_participants: max });
        if (newPath) this.counts.newPath.updates++;
        else this.counts.oldPath.updates++;
      });
    } else if (roll < 0.92) {
      await attempt([id], async () => {
        const r = await this.pool.query(`DELETE FROM ${newPath ? NEW : OLD} WHERE id = $1`, [id]);
        if (r.rowCount !== 1) return;
        this.forget(id);
        if (newPath) this.counts.newPath.deletes++;
        else this.counts.oldPath.deletes++;
      });
    } else if (!newPath) {
      // A key change, on the old path: the target must lose the old key and gain the new one.
      const to = String((this.nextKey[i] += this.concurrency));
      await attempt([id, to], async () => {
        const r = await this.pool.query(`UPDATE ${OLD} SET id = $1 WHERE id = $2`, [to, id]);
        if (r.rowCount !== 1) return;
        const row = this.ledger.get(id)!;
        this.forget(id);
        this.record(to, row);
        this.counts.oldPath.keyChanges++;
      });
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
    await this.flags.close().catch(() => undefined);
    await this.pool.end().catch(() => undefined);
  }

  /** Differences between the ledger and the old table now (at most `limit` described). */
  async compare(limit = 5): Promise<string[]> {
    const pool = new Pool({ connectionString: this.url, max: 1, application_name: 'chaos-check' });
    try {
      const rows = (await pool.query(`SELECT ${COLUMNS} FROM ${OLD}`)).rows;
      const out: string[] = [];
      const seen = new Set<string>();
      for (const r of rows) {
        const id = String(r.id);
        seen.add(id);
        if (this.uncertainIds.has(id)) continue;
        const want = this.ledger.get(id);
        if (!want) {
          if (!this.uncertainTitles.has(r.title))
            out.push(`row ${id} (${r.title}) was never written by the application`);
          continue;
        }
        const got = {
          title: r.title,
          meeting_type: r.meeting_type,
          status: r.status,
          max_participants: r.max_participants,
        };
        if (JSON.stringify(got) !== JSON.stringify(want))
          out.push(`row ${id} is ${JSON.stringify(got)}, the application last wrote ${JSON.stringify(want)}`);
      }
      for (const id of this.ledger.keys())
        if (!seen.has(id) && !this.uncertainIds.has(id)) out.push(`row ${id} (${this.ledger.get(id)!.title}) is lost`);
      return out.length > limit ? [...out.slice(0, limit), `… and ${out.length - limit} more`] : out;
    } finally {
      await pool.end();
    }
  }
}
