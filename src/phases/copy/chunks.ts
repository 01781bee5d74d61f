// Hands out a copy job's key space in chunks, in key order, for the passes that walk all of it (settle, checksum):
// key intervals for a single integer key, OFFSET steps along the key's index otherwise. The first chunk is open below
// and the last open above, so target rows outside the source's keys are covered too.
import type { Pool, PoolClient } from 'pg';
import { withClient } from '../../db/tx';
import { hasIntegerKey, keyAtOffsetQuery, keyExtentQuery, sourceFrom, type CopyMapping, type EncodedKey } from './sql';

export interface ChunkBounds {
  after: EncodedKey | null;
  upTo: EncodedKey | null;
}

export interface ChunkPlanner {
  /** How many lanes may take chunks at once (interval chunks are independent; OFFSET steps are sequential). */
  parallel: number;
  next(): Promise<ChunkBounds | null>;
}

/** Chunks of about `size` source rows, starting after `resumeAfter`. */
export async function chunkPlanner(
  c: PoolClient,
  m: CopyMapping,
  size: number,
  resumeAfter: EncodedKey | null,
): Promise<ChunkPlanner> {
  if (hasIntegerKey(m)) {
    const q = keyExtentQuery(m, null, null);
    const e = (await c.query(q.text, q.values)).rows[0] as { lo: string | null; hi: string | null };
    if (e.lo === null) return { parallel: 1, next: oneChunk(resumeAfter) };
    const n = (await c.query(`SELECT count(*)::float8 AS n FROM ${sourceFrom(m)}`)).rows[0].n as number;
    const lo = BigInt(e.lo);
    const hi = BigInt(e.hi!);
    const span = BigInt(Math.max(1, Math.ceil((size * Number(hi - lo + 1n)) / Math.max(1, n))));
    let next: bigint | null = resumeAfter === null ? null : BigInt(resumeAfter);
    let finished = false;
    return {
      parallel: 2,
      next: async () => {
        if (finished) return null;
        const end = (next ?? lo - 1n) + span;
        const from = next === null ? null : next.toString();
        if (end >= hi) {
          finished = true;
          return { after: from, upTo: null };
        }
        next = end;
        return { after: from, upTo: end.toString() };
      },
    };
  }
  let after = resumeAfter;
  let finished = false;
  return {
    parallel: 1,
    next: async () => {
      if (finished) return null;
      const q = keyAtOffsetQuery(m, after, size - 1);
      const end = ((await c.query(q.text, q.values)).rows[0]?.k as string | undefined) ?? null;
      const chunk = { after, upTo: end };
      if (end === null) finished = true;
      after = end;
      return chunk;
    },
  };
}

function oneChunk(after: EncodedKey | null): () => Promise<ChunkBounds | null> {
  let given = false;
  return async () => {
    if (given) return null;
    given = true;
    return { after, upTo: null };
  };
}

/**
 * Walks every chunk of `planner` through `work`, in as many lanes as the planner allows (the second on a connection of
 * its own from `pool`). Chunks finish out of order; after each, `finished` gets its result and the cursor to resume
 * after: the end of the last chunk below which every chunk is done (unchanged while an earlier one still runs, and
 * after the open-ended last chunk).
 */
export async function walkChunks<R>(
  pool: Pool,
  c: PoolClient,
  planner: ChunkPlanner,
  cursor: EncodedKey | null,
  work: (tx: PoolClient, bounds: ChunkBounds) => Promise<R>,
  finished: (result: R, cursor: EncodedKey | null) => void,
  aborted: () => void = () => undefined,
): Promise<void> {
  const pending: { bounds: ChunkBounds; done: boolean }[] = [];
  // A lane that fails stops the other at its next chunk; the walk ends once both have, so no query is still running on
  // a connection given back to the pool.
  let failure: { error: unknown } | undefined;
  const lane = async (tx: PoolClient) => {
    try {
      while (!failure) {
        aborted();
        const bounds = await planner.next();
        if (!bounds) return;
        const entry = { bounds, done: false };
        pending.push(entry);
        const result = await work(tx, bounds);
        entry.done = true;
        while (pending.length && pending[0].done) cursor = pending.shift()!.bounds.upTo ?? cursor;
        finished(result, cursor);
      }
    } catch (error) {
      failure ??= { error };
    }
  };
  const walk = async (lanes: Promise<void>[]) => {
    await Promise.all(lanes);
    if (failure) throw failure.error;
  };
  if (planner.parallel > 1) await withClient(pool, (extra) => walk([lane(c), lane(extra)]));
  else await walk([lane(c)]);
}
