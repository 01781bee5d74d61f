// Validation across two databases (blue-green): row counts and checksums compared chunk by chunk, each side read on
// its own while writes go on and the appliers keep the target in step.
//
// The sides cannot be read in one snapshot, so a chunk may differ only because a write has not reached the other side
// yet. A differing chunk is therefore compared row by row, with each row's stamp (the last write each side holds, see
// copy/capture-sql.ts): a row that differs while both sides hold the same write is a real difference, reported; one
// whose sides hold different writes is in flight and is looked at again until it settles. A row that keeps changing
// for the whole of SETTLE_MS is reported as such (the check fails: nothing unconfirmed passes).
import { CancelledFailure } from '@temporalio/activity';
import type { PoolClient } from 'pg';
import { inTransaction, withClient } from '../../db/tx';
import type { ValidationCheckResult } from '../../migration/messages';
import { describeKey } from '../../plan/keys';
import {
  cancellationSignal,
  heartbeat,
  previousHeartbeat,
  sleepMs,
  targetPool,
  type ActivityDeps,
} from '../activity-kit';
import { chunkPlanner, type ChunkBounds } from '../copy/chunks';
import { resolveMapping } from '../copy/mapping';
import type { CopyMapping } from '../copy/sql';
import { boundDifference, type ChecksumDifference, type ValidationInput } from './activities';
import { sideDigestQuery, sideNullKeyQuery, sideRowsQuery, stampsQuery } from './sql';

const MAX_REPORTED = 100;
/** How long a row whose two sides hold different writes is given to settle. */
const SETTLE_MS = 60_000;
const ROW_CHUNK_DEFAULT = 10_000;

interface SideRow {
  key: string;
  /** The key as the row stamps hold it (a JSON array of its values). */
  ck: string;
  r: string;
  j: Record<string, string | null> | null;
  stamp: string | null;
}

interface AcrossState {
  cursor: string | null;
  chunks: number;
  rowsChecked: number;
  sourceRows: number;
  targetRows: number;
  mismatchedChunks: number;
  differences: ChecksumDifference[];
  unsettled: string[];
}

export async function validateAcross(
  deps: ActivityDeps,
  input: ValidationInput,
  name: string,
): Promise<ValidationCheckResult> {
  const source = await targetPool(deps, input.urlEnv);
  const target = await targetPool(deps, input.targetEnv!);
  const job = input.job!;
  const m = await resolveMapping(source, job, input.run, target);
  const keyOnly = !input.check.checksum;
  const size = input.check.checksum?.chunkSize ?? ROW_CHUNK_DEFAULT;
  const signal = cancellationSignal();
  const started = Date.now();
  const state: AcrossState = previousHeartbeat<AcrossState>() ?? {
    cursor: null,
    chunks: 0,
    rowsChecked: 0,
    sourceRows: 0,
    targetRows: 0,
    mismatchedChunks: 0,
    differences: [],
    unsettled: [],
  };
  const nullKeys = await withClient(source, (s) =>
    withClient(target, async (t) => {
      const planner = await chunkPlanner(s, m, size, state.cursor);
      for (;;) {
        if (signal?.aborted) throw new CancelledFailure('cancelled');
        const b = await planner.next();
        if (!b) break;
        await compareChunk(s, t, m, b, keyOnly, state, signal);
        state.chunks++;
        state.cursor = b.upTo ?? state.cursor;
        heartbeat({
          ...state,
          rowsPerSecond: Math.round((state.rowsChecked * 1000) / Math.max(1, Date.now() - started)),
        });
      }
      const sq = sideNullKeyQuery(m, 'source');
      const tq = sideNullKeyQuery(m, 'target');
      return {
        source: (await s.query(sq.text, sq.values)).rows[0].n as number,
        target: (await t.query(tq.text, tq.values)).rows[0].n as number,
      };
    }),
  );
  const problems: string[] = [];
  const keys = state.differences.map((d) => d.key);
  if (keys.length) {
    problems.push(
      `${state.mismatchedChunks} of ${state.chunks} chunks differ; differing keys: ${keys.slice(0, 20).join(', ')}${keys.length > 20 ? ` … (${keys.length} reported)` : ''}`,
    );
  }
  if (state.unsettled.length) {
    problems.push(
      `${state.unsettled.length} row(s) kept changing for ${SETTLE_MS / 1000}s and could not be compared: ${state.unsettled.slice(0, 20).join(', ')}`,
    );
  }
  if (nullKeys.source || nullKeys.target) {
    problems.push(
      `rows with a NULL ${describeKey(job)}: ${nullKeys.source} in the source, ${nullKeys.target} in the target (no key to compare them by)`,
    );
  }
  const ok = problems.length === 0;
  const what = keyOnly ? 'row count' : 'rows';
  return {
    check: name,
    kind: keyOnly ? 'rowCount' : 'checksum',
    ok,
    message: ok
      ? keyOnly
        ? `${state.sourceRows} rows on both sides (every key present on both, ${state.chunks} chunks)`
        : `${state.rowsChecked} rows identical in ${state.chunks} chunks across the two databases`
      : problems.join('; '),
    details: {
      across: true,
      compared: what,
      chunks: state.chunks,
      rowsChecked: state.rowsChecked,
      source: state.sourceRows,
      target: state.targetRows,
      sourceRows: state.sourceRows,
      targetRows: state.targetRows,
      mismatchedChunks: state.mismatchedChunks,
      nullKeys,
      differences: state.differences,
      unsettled: state.unsettled,
      durationMs: Date.now() - started,
    },
  };
}

async function compareChunk(
  s: PoolClient,
  t: PoolClient,
  m: CopyMapping,
  b: ChunkBounds,
  keyOnly: boolean,
  state: AcrossState,
  signal?: AbortSignal,
): Promise<void> {
  const digest = async (c: PoolClient, side: 'source' | 'target') => {
    const q = sideDigestQuery(m, side, b, keyOnly);
    return (await c.query(q.text, q.values)).rows[0] as { n: number; d: string };
  };
  // The target first: what it holds is at most as new as what the source holds a moment later.
  const td = await digest(t, 'target');
  const sd = await digest(s, 'source');
  state.rowsChecked += sd.n;
  if (sd.n === td.n && sd.d === td.d) {
    state.sourceRows += sd.n;
    state.targetRows += td.n;
    return;
  }
  const rows = async (c: PoolClient, side: 'source' | 'target', only?: string[]) => {
    const q = sideRowsQuery(m, side, b, keyOnly, m.syncId!, only);
    return new Map(((await c.query(q.text, q.values)).rows as SideRow[]).map((r) => [r.key, r]));
  };
  // A row missing on one side: that side's stamp of its key, if any, is the deletion's (a tombstone). Read in the
  // snapshot its rows were read in, or an apply committing in between would pass for a settled difference.
  const tombstones = async (c: PoolClient, keys: string[], own: Map<string, SideRow>, other: Map<string, SideRow>) => {
    const cks = keys.filter((k) => !own.has(k) && other.has(k)).map((k) => other.get(k)!.ck);
    if (!cks.length) return new Map<string, string>();
    const r = await c.query(stampsQuery(), [m.syncId, `[${cks.join(',')}]`]);
    return new Map((r.rows as { ck: string; stamp: string }[]).map((x) => [x.ck, x.stamp]));
  };
  /** One look at both sides (the target first), each in one snapshot: rows, differing keys, stamps of both. */
  const look = async (only?: string[]) => {
    const snapshot = { isolation: 'repeatable read' as const, readOnly: true };
    return inTransaction(t, snapshot, async () => {
      const tr = await rows(t, 'target', only);
      return inTransaction(s, snapshot, async () => {
        const sr = await rows(s, 'source', only);
        const keys = differing(sr, tr, only);
        const sGone = await tombstones(s, keys, sr, tr);
        const tGone = await tombstones(t, keys, tr, sr);
        const stamps = new Map(
          keys.map((k) => {
            const a = sr.get(k);
            const z = tr.get(k);
            return [k, { s: a ? a.stamp : (sGone.get(z!.ck) ?? null), t: z ? z.stamp : (tGone.get(a!.ck) ?? null) }];
          }),
        );
        return { sr, tr, keys, stamps };
      });
    });
  };
  let view = await look();
  state.sourceRows += view.sr.size;
  state.targetRows += view.tr.size;
  const real: string[] = [];
  const shownRows = { sr: view.sr, tr: view.tr };
  const deadline = Date.now() + SETTLE_MS;
  let pending: string[];
  for (;;) {
    const inFlight: string[] = [];
    for (const k of view.keys) {
      // Both sides hold the same write of the row (or, for a row on one side only, no write since the copy) and
      // still differ: a real difference. Otherwise a write is on its way from one side to the other.
      const st = view.stamps.get(k)!;
      if (st.s === st.t) {
        real.push(k);
        for (const [to, from] of [
          [shownRows.sr, view.sr],
          [shownRows.tr, view.tr],
        ] as const) {
          const row = from.get(k);
          if (row) to.set(k, row);
          else to.delete(k);
        }
      } else inFlight.push(k);
    }
    pending = inFlight;
    if (!inFlight.length || Date.now() > deadline) {
      state.unsettled.push(...inFlight.slice(0, MAX_REPORTED - state.unsettled.length));
      break;
    }
    await sleepMs(200, signal);
    heartbeat();
    view = await look(inFlight);
  }
  const { sr, tr } = shownRows;
  if (real.length || pending.length) state.mismatchedChunks++;
  for (const k of real) {
    if (state.differences.length >= MAX_REPORTED) break;
    state.differences.push(
      boundDifference({
        key: k,
        source: sr.get(k)?.j ?? (sr.has(k) ? {} : null),
        target: tr.get(k)?.j ?? (tr.has(k) ? {} : null),
      }),
    );
  }
}

/** Keys whose rows differ (or exist on one side only), among `among` or all keys of both maps. */
function differing(sr: Map<string, SideRow>, tr: Map<string, SideRow>, among?: string[]): string[] {
  const keys = among ?? [...new Set([...sr.keys(), ...tr.keys()])];
  return keys.filter((k) => sr.get(k)?.r !== tr.get(k)?.r);
}
