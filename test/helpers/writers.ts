// Application-like load for tests: concurrent INSERT/UPDATE/DELETE at a bounded rate until stopped.
import { Pool } from 'pg';

export interface WriterStats {
  inserts: number;
  updates: number;
  deletes: number;
  keyChanges: number;
  retries: number;
}

export interface Workload {
  stats: WriterStats;
  stop(): Promise<WriterStats>;
}

export type Op = (pool: Pool, rnd: () => number, stats: WriterStats) => Promise<void>;

/** Runs `concurrency` loops, each doing one op then sleeping, for about `opsPerSecond` in total. */
export function startWorkload(
  url: string,
  ops: Op[],
  opts: { concurrency?: number; opsPerSecond?: number; seed?: number } = {},
): Workload {
  const pool = new Pool({ connectionString: url, max: opts.concurrency ?? 4 });
  pool.on('error', () => undefined);
  const stats: WriterStats = { inserts: 0, updates: 0, deletes: 0, keyChanges: 0, retries: 0 };
  let seed = opts.seed ?? 42;
  const rnd = () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x7fffffff;
  };
  const concurrency = opts.concurrency ?? 4;
  const pauseMs = (1000 * concurrency) / (opts.opsPerSecond ?? 300);
  let running = true;
  const loops = Array.from({ length: concurrency }, async () => {
    while (running) {
      const op = ops[Math.floor(rnd() * ops.length)];
      try {
        await op(pool, rnd, stats);
      } catch (e) {
        // Deadlocks, serialization failures and races between the writers themselves (a key taken, a parent deleted)
        // are the application's to retry, as real ones would.
        const code = (e as { code?: string }).code;
        if (code === '40P01' || code === '40001' || code === '55P03' || code === '23505' || code === '23503')
          stats.retries++;
        else throw e;
      }
      await new Promise((r) => setTimeout(r, pauseMs * (0.5 + rnd())));
    }
  });
  return {
    stats,
    async stop() {
      running = false;
      await Promise.all(loops);
      await pool.end();
      return stats;
    },
  };
}

const TYPES = ['free_talk', 'lesson', 'teacher_class', 'public', 'private', null];

/** Writes on the old meetings table, including key changes. */
export function meetingsSourceOps(maxId: () => number): Op[] {
  return [
    async (pool, rnd, s) => {
      await pool.query(
        `INSERT INTO meetings (title, meeting_type, status, host_id) VALUES ($1, $2, 'active', md5($1)::uuid)`,
        [`new ${rnd()}`, TYPES[Math.floor(rnd() * TYPES.length)]],
      );
      s.inserts++;
    },
    async (pool, rnd, s) => {
      await pool.query(`UPDATE meetings SET title = $1, meeting_type = $2, updated_at = now() WHERE id = $3`, [
        `upd ${rnd()}`,
        TYPES[Math.floor(rnd() * TYPES.length)],
        1 + Math.floor(rnd() * maxId()),
      ]);
      s.updates++;
    },
    async (pool, rnd, s) => {
      await pool.query(`UPDATE meetings SET status = 'ended', max_participants = max_participants + 1 WHERE id = $1`, [
        1 + Math.floor(rnd() * maxId()),
      ]);
      s.updates++;
    },
    async (pool, rnd, s) => {
      await pool.query(`DELETE FROM meetings WHERE id = $1`, [1 + Math.floor(rnd() * maxId())]);
      s.deletes++;
    },
    async (pool, rnd, s) => {
      // Rarely, a key changes: the target must lose the old key and gain the new one.
      if (rnd() < 0.8) return;
      await pool.query(`UPDATE meetings SET id = id + 10000000 WHERE id = $1`, [1 + Math.floor(rnd() * maxId())]);
      s.keyChanges++;
    },
  ];
}

const ROOM_TYPE = `CASE $2::text WHEN 'free_talk' THEN 'free_talk' WHEN 'lesson' THEN 'lesson' WHEN 'teacher_class' THEN 'teacher_class'
  WHEN 'public' THEN 'free_talk' WHEN 'private' THEN 'lesson' ELSE 'free_talk' END`;

/** Writes an application on the new path makes to meetings_v2 (keys from the old table's sequence). */
export function meetingsTargetOps(maxId: () => number): Op[] {
  return [
    async (pool, rnd, s) => {
      const t = TYPES[Math.floor(rnd() * TYPES.length)];
      await pool.query(
        `INSERT INTO meetings_v2 (id, title, meeting_type, room_type, status, host_id, max_participants, created_at, updated_at)
         VALUES (nextval('meetings_id_seq'), $1, $2::text, ${ROOM_TYPE}, 'active', md5($1)::uuid, 10, now(), now())`,
        [`v2 ${rnd()}`, t],
      );
      s.inserts++;
    },
    async (pool, rnd, s) => {
      const t = TYPES[Math.floor(rnd() * TYPES.length)];
      await pool.query(
        `UPDATE meetings_v2 SET title = $1, meeting_type = $2::text, room_type = ${ROOM_TYPE}, updated_at = now() WHERE id = $3`,
        [`v2 upd ${rnd()}`, t, 1 + Math.floor(rnd() * maxId())],
      );
      s.updates++;
    },
    async (pool, rnd, s) => {
      await pool.query(`DELETE FROM meetings_v2 WHERE id = $1`, [1 + Math.floor(rnd() * maxId())]);
      s.deletes++;
    },
  ];
}

/** The forward mapping of the meetings example, for EXCEPT comparisons. */
export const MEETINGS_AS_V2 = `SELECT id, title, meeting_type,
  CASE meeting_type WHEN 'free_talk' THEN 'free_talk' WHEN 'lesson' THEN 'lesson' WHEN 'teacher_class' THEN 'teacher_class'
       WHEN 'public' THEN 'free_talk' WHEN 'private' THEN 'lesson' ELSE 'free_talk' END AS room_type,
  status, host_id, max_participants, created_at, updated_at FROM meetings`;
export const V2_COLUMNS = `SELECT id, title, meeting_type, room_type, status, host_id, max_participants, created_at, updated_at FROM meetings_v2`;
