// Change capture by logical decoding (blue-green, `target.capture: logical`, or `auto` where the source allows it):
// while only the source takes writes, a replication slot replaces the capture triggers. The applier pumps the slot's
// decoded changes into the same log the triggers write (tidemark.changes), mapped the same way, then applies the log
// as usual; so drains, lag, undo and the crash argument stay those of the trigger capture. A change is stamped with
// its transaction's commit time. The slot is advanced only once the changes are committed in the log: after a crash,
// the same changes are logged again, and each loses to its own stamp on the target (applied once).
//
// Once the copy is done (before validation, which judges a differing row by its stamps, and before traffic moves, when
// both sides may write and a conflict is judged by stamps written in the writer's own transaction), the capture
// switches to triggers: they are installed, the slot is pumped up to a position after their install committed, the
// log is applied up to there, and the slot is dropped. A change made in between is logged twice, with two stamps for
// one row image; whichever arrives second loses or writes the same row (segments() keeps a key's latest stamp).
import type { Pool, PoolClient } from 'pg';
import { TIDEMARK_SCHEMA } from '../../db/names';
import { quoteIdent, quoteLiteral, quoteTable, type TableRef } from '../../db/quote';
import { imageSql, type CaptureSpec } from './capture-sql';

const S = quoteIdent(TIDEMARK_SCHEMA);

/** The slot of one job's forward capture. */
export const slotName = (syncId: string) => `tidemark_${syncId}`;

/** A column value as test_decoding prints it: text, null, or a TOASTed value the update left unchanged (not sent). */
export type DecodedValue = string | null | typeof UNCHANGED;
export const UNCHANGED = Symbol('unchanged-toast-datum');

export interface DecodedChange {
  table: TableRef;
  op: 'INSERT' | 'UPDATE' | 'DELETE' | 'TRUNCATE';
  /** For an UPDATE that changed the key (or a DELETE): the old key's columns. */
  oldKey?: Map<string, DecodedValue>;
  /** The new row (INSERT, UPDATE) or, for a DELETE, the old key. */
  tuple?: Map<string, DecodedValue>;
}

/** Reads an identifier as quote_identifier prints it ("a""b" or a bare name), from `s` at `i`. */
function readIdent(s: string, i: number, stop: string): [string, number] {
  if (s[i] === '"') {
    let out = '';
    let j = i + 1;
    for (;;) {
      if (s[j] === '"' && s[j + 1] === '"') {
        out += '"';
        j += 2;
      } else if (s[j] === '"') return [out, j + 1];
      else if (j >= s.length) throw new Error(`unterminated identifier in decoded change: ${s.slice(0, 120)}`);
      else out += s[j++];
    }
  }
  let j = i;
  while (j < s.length && !stop.includes(s[j])) j++;
  return [s.slice(i, j), j];
}

/** Parses `name[type]:value name[type]:value …` from `i` up to the end or a marker (`new-tuple:`). */
function readTuple(s: string, i: number): [Map<string, DecodedValue>, number] {
  const out = new Map<string, DecodedValue>();
  while (i < s.length) {
    while (s[i] === ' ') i++;
    if (i >= s.length || s.startsWith('new-tuple:', i)) break;
    const [name, afterName] = readIdent(s, i, '[');
    if (s[afterName] !== '[') throw new Error(`unexpected decoded change: ${s.slice(0, 120)}`);
    // The type may hold brackets itself (text[]): it ends at the "]:" before the value.
    const typeEnd = s.indexOf(']:', afterName);
    if (typeEnd < 0) throw new Error(`unexpected decoded change: ${s.slice(0, 120)}`);
    let j = typeEnd + 2;
    let value: DecodedValue;
    if (s[j] === "'" || (s[j] === 'B' && s[j + 1] === "'")) {
      if (s[j] === 'B') j++;
      let v = '';
      j++;
      for (;;) {
        if (j >= s.length) throw new Error(`unterminated value in decoded change: ${s.slice(0, 120)}`);
        if (s[j] === "'" && s[j + 1] === "'") {
          v += "'";
          j += 2;
        } else if (s[j] === "'") {
          j++;
          break;
        } else v += s[j++];
      }
      value = v;
    } else {
      let k = j;
      while (k < s.length && s[k] !== ' ') k++;
      const raw = s.slice(j, k);
      j = k;
      value = raw === 'null' ? null : raw === 'unchanged-toast-datum' ? UNCHANGED : raw;
    }
    out.set(name, value);
    i = j;
  }
  return [out, i];
}

/** One row of test_decoding output (`table s.t: OP: …`); BEGIN/COMMIT lines are read by the caller. */
export function parseChange(data: string): DecodedChange {
  if (!data.startsWith('table ')) throw new Error(`unexpected decoded change: ${data.slice(0, 120)}`);
  const [schema, afterSchema] = readIdent(data, 6, '.');
  const [name, afterName] = readIdent(data, afterSchema + 1, ':');
  let i = afterName + 2;
  const opEnd = data.indexOf(':', i);
  const op = data.slice(i, opEnd) as DecodedChange['op'];
  i = opEnd + 1;
  const table = { schema, name };
  if (op === 'TRUNCATE') return { table, op };
  while (data[i] === ' ') i++;
  if (data.startsWith('(no-tuple-data)', i)) return { table, op };
  if (data.startsWith('old-key:', i)) {
    const [oldKey, at] = readTuple(data, i + 'old-key:'.length);
    const [tuple] = readTuple(data, at + 'new-tuple:'.length);
    return { table, op, oldKey, tuple };
  }
  const [tuple] = readTuple(data, i);
  return { table, op, tuple };
}

/** The commit time from test_decoding's `COMMIT (at …)` / `COMMIT 123 (at …)` line. */
export function commitTime(data: string): string | undefined {
  const m = /^COMMIT(?: \d+)? \(at (.+)\)$/.exec(data);
  return m?.[1];
}

/** Options of every peek: whole transactions, with their commit time, and none that touched nothing. */
const PEEK_OPTIONS = `'include-xids', '0', 'include-timestamp', '1', 'skip-empty-xacts', '1'`;

/** A pumped entry of the log, before its row image is computed on the source. */
interface Pending {
  op: 'U' | 'D' | 'T';
  /** The captured table's columns as text (a D: its key columns only). */
  values?: Record<string, string | null>;
  stamp: string;
  /** Microseconds added to the commit time: a key's later changes in one transaction stamp later. */
  nth: number;
  /** Columns an UPDATE left unchanged and did not send: read from the source row instead. */
  unchanged?: string[];
}

const sameTable = (a: TableRef, b: TableRef) => a.schema === b.schema && a.name === b.name;

function textValues(t: Map<string, DecodedValue>): { values: Record<string, string | null>; unchanged: string[] } {
  const values: Record<string, string | null> = {};
  const unchanged: string[] = [];
  for (const [k, v] of t) {
    if (v === UNCHANGED) unchanged.push(k);
    else values[k] = v;
  }
  return { values, unchanged };
}

/**
 * About how much decoded text one pump takes in: each change's text is held in the worker (a change that rewrites a
 * 1 MB value carries it), so the number of changes asked for shrinks when they are large.
 */
const PUMP_BYTES = 32 * 1024 * 1024;
/** Per slot, the decoded text per change seen in its last pump. */
const bytesPerChange = new Map<string, number>();

/**
 * Moves up to `limit` decoded changes (whole transactions) of the slot into the log, as the capture triggers would
 * have logged them, in one transaction on the source; then advances the slot past them. With `upTo`, stops at that
 * WAL position. Returns how many changes of the captured table were logged and whether the slot had more.
 */
export async function pumpSlot(
  c: PoolClient,
  spec: CaptureSpec,
  limit: number,
  upTo?: string,
  alive: () => void = () => undefined,
): Promise<{ logged: number; more: boolean; lastCommitAt?: string }> {
  const slot = slotName(spec.syncId);
  const perChange = bytesPerChange.get(slot);
  const asked = perChange ? Math.max(1, Math.min(limit, Math.floor(PUMP_BYTES / perChange))) : limit;
  const rows = (
    await c.query(
      `SELECT lsn::text AS lsn, data FROM pg_logical_slot_peek_changes($1, $2::pg_lsn, $3, ${PEEK_OPTIONS})`,
      [slot, upTo ?? null, asked],
    )
  ).rows as { lsn: string; data: string }[];
  if (!rows.length) return { logged: 0, more: false };
  bytesPerChange.set(slot, Math.max(1, rows.reduce((n, r) => n + r.data.length, 0) / rows.length));
  const pending: Pending[] = [];
  let inTx: Pending[] = [];
  let lastCommit: string | undefined;
  let lastCommitAt: string | undefined;
  for (const r of rows) {
    if (r.data.startsWith('BEGIN')) {
      inTx = [];
      continue;
    }
    const at = commitTime(r.data);
    if (at !== undefined) {
      const seen = new Map<string, number>();
      for (const p of inTx) {
        p.stamp = at;
        if (p.op === 'T') continue;
        const k = JSON.stringify(spec.keys.map((c) => p.values?.[c] ?? null));
        p.nth = seen.get(k) ?? 0;
        seen.set(k, p.nth + 1);
      }
      pending.push(...inTx);
      inTx = [];
      lastCommit = r.lsn;
      lastCommitAt = at;
      continue;
    }
    if (!r.data.startsWith('table ')) continue;
    const ch = parseChange(r.data);
    if (!sameTable(ch.table, spec.table)) continue;
    if (ch.op === 'TRUNCATE') inTx.push({ op: 'T', stamp: '', nth: 0 });
    else if (ch.op === 'DELETE') {
      if (ch.tuple) inTx.push({ op: 'D', values: textValues(ch.tuple).values, stamp: '', nth: 0 });
    } else {
      if (ch.oldKey) inTx.push({ op: 'D', values: textValues(ch.oldKey).values, stamp: '', nth: 0 });
      const { values, unchanged } = textValues(ch.tuple!);
      inTx.push({ op: 'U', values, unchanged: unchanged.length ? unchanged : undefined, stamp: '', nth: 0 });
    }
  }
  if (lastCommit === undefined) return { logged: 0, more: false };
  if (pending.length) {
    await c.query('BEGIN');
    try {
      await logPending(c, spec, pending, alive);
      await c.query('COMMIT');
    } catch (e) {
      await c.query('ROLLBACK').catch(() => undefined);
      throw e;
    }
  }
  await c.query(`SELECT pg_replication_slot_advance($1, $2::pg_lsn)`, [slot, lastCommit]);
  return { logged: pending.length, more: rows.length >= asked, lastCommitAt };
}

/**
 * Writes pumped changes into the log: each row's key and image computed on the source from the decoded text (read
 * as the captured table's column types), in decoded order. A TOASTed column an UPDATE did not send is read from the
 * source row as it is now (a later change of the row, logged after this one, is applied after it); when the row is
 * gone, a later deletion is in the slot, and the change is skipped.
 */
async function logPending(c: PoolClient, spec: CaptureSpec, pending: Pending[], alive: () => void): Promise<void> {
  const table = quoteTable(spec.table);
  const keys = spec.keys.map((k) => `s.${quoteIdent(k)}`).join(', ');
  // A json or jsonb column's decoded text is JSON itself, not a JSON string holding it.
  const jsonCols = (
    await c.query(
      `SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped
          AND atttypid IN ('json'::regtype, 'jsonb'::regtype)`,
      [table],
    )
  ).rows.map((r) => r.attname as string);
  const v = [
    'x.tidemark_v',
    ...jsonCols.map((col) => {
      const k = quoteLiteral(col);
      return `CASE WHEN x.tidemark_v ? ${k} THEN jsonb_build_object(${k}, (x.tidemark_v ->> ${k})::jsonb) ELSE '{}' END`;
    }),
  ].join(' || ');
  // The decoded values become a row of the captured table, in decoded order; a few hundred at a time, each image
  // being computed from a whole row (merged values may be large), with a sign of life between (`alive`).
  for (let from = 0; from < pending.length; from += LOG_CHUNK) {
    if (from) alive();
    await logChunk(c, spec, pending.slice(from, from + LOG_CHUNK), from, v, keys, table);
  }
}

/** Changes logged per statement (see logPending). */
const LOG_CHUNK = 200;

async function logChunk(
  c: PoolClient,
  spec: CaptureSpec,
  pending: Pending[],
  offset: number,
  v: string,
  keys: string,
  table: string,
): Promise<void> {
  // Unchanged TOASTed columns come from the row as it is now, merged on the server (the decoded values over the
  // current row): such a value may be large, and the same row changed a thousand times would otherwise bring it into
  // the worker a thousand times. A change whose row is gone is skipped.
  const on = spec.keys.map((k) => `cur.${quoteIdent(k)} = k.${quoteIdent(k)}`).join(' AND ');
  await c.query(
    `INSERT INTO ${S}.changes (stream, op, key, row, stamp, origin)
     SELECT ${quoteLiteral(spec.stream)}, x.tidemark_op, CASE WHEN x.tidemark_op = 'T' THEN NULL ELSE jsonb_build_array(${keys}) END,
            CASE WHEN x.tidemark_op = 'U' THEN ${imageSql(spec.image)} END, x.tidemark_stamp::timestamptz + x.tidemark_nth * interval '1 microsecond', ${quoteLiteral(spec.origin)}
       FROM jsonb_to_recordset($1::jsonb) AS x(tidemark_i int, tidemark_op text, tidemark_stamp text, tidemark_nth int, tidemark_v jsonb, tidemark_fill boolean)
       LEFT JOIN LATERAL (SELECT true AS found, cur FROM ${table} AS cur,
                                 jsonb_populate_record(NULL::${table}, x.tidemark_v) AS k
                           WHERE x.tidemark_fill AND ${on}) AS now ON true
       CROSS JOIN LATERAL jsonb_populate_record(CASE WHEN x.tidemark_fill THEN now.cur END, coalesce(${v}, '{}')) AS s
      WHERE NOT x.tidemark_fill OR now.found
      ORDER BY x.tidemark_i`,
    [
      JSON.stringify(
        pending.map((p, i) => ({
          tidemark_i: offset + i,
          tidemark_op: p.op,
          tidemark_stamp: p.stamp,
          tidemark_nth: p.nth,
          tidemark_v: p.values ?? null,
          tidemark_fill: !!p.unchanged,
        })),
      ),
    ],
  );
}

/** Creates the slot of a job's capture unless it exists (a session that has written nothing yet). */
export async function createSlot(c: PoolClient, syncId: string): Promise<void> {
  await c.query(
    `SELECT pg_create_logical_replication_slot($1, 'test_decoding')
      WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`,
    [slotName(syncId)],
  );
}

/** Drops the slot of a job's capture if it exists. */
export async function dropSlot(c: PoolClient, syncId: string): Promise<void> {
  await c.query(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, [
    slotName(syncId),
  ]);
}

/**
 * How much WAL the slot of a job's capture still holds for it (bytes between the server's write position and what the
 * slot has confirmed), or null without a slot. Read from pg_replication_slots only: peeking would take the slot from
 * the applier that pumps it.
 */
export async function slotBacklogBytes(c: Pool | PoolClient, syncId: string): Promise<number | null> {
  const r = await c.query(
    `SELECT greatest(0, pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn))::float8 AS bytes
       FROM pg_replication_slots WHERE slot_name = $1`,
    [slotName(syncId)],
  );
  return r.rows.length ? Number(r.rows[0].bytes) : null;
}

/** Whether the slot of a job's capture exists. */
export async function slotExists(c: PoolClient, syncId: string): Promise<boolean> {
  return (
    ((await c.query(`SELECT 1 FROM pg_replication_slots WHERE slot_name = $1`, [slotName(syncId)])).rowCount ?? 0) > 0
  );
}

/** Whether the server lets this role decode: wal_level logical, a replication (or superuser) role, a free slot. */
export async function logicalAllowed(c: PoolClient): Promise<{ ok: boolean; why: string }> {
  const r = (
    await c.query(
      `SELECT current_setting('wal_level') AS wal,
              (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user) AS repl,
              current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots)::int AS free`,
    )
  ).rows[0] as { wal: string; repl: boolean; free: number };
  if (r.wal !== 'logical')
    return {
      ok: false,
      why: `wal_level is ${r.wal} (logical decoding needs wal_level = logical, set in postgresql.conf and a restart)`,
    };
  if (!r.repl) return { ok: false, why: 'wal_level is logical but this role has neither REPLICATION nor superuser' };
  if (r.free < 1)
    return { ok: false, why: 'wal_level is logical but every replication slot is taken (max_replication_slots)' };
  return { ok: true, why: 'wal_level is logical and this role may use logical decoding' };
}

/**
 * Whether decoding tells every change of `table`'s `keys`: its replica identity (what a DELETE, or an UPDATE that
 * changes it, sends of the old row) must hold the key columns, or be FULL. Otherwise an UPDATE of a key column outside
 * the identity would arrive without the old key, and a DELETE without any.
 */
export async function identityHoldsKey(
  c: PoolClient,
  table: TableRef,
  keys: string[],
): Promise<{ ok: boolean; why: string }> {
  const r = (
    await c.query(
      `SELECT c.relreplident AS ident,
              (SELECT array_agg(a.attname::text) FROM pg_index i
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
                WHERE i.indrelid = c.oid
                  AND ((c.relreplident = 'd' AND i.indisprimary) OR (c.relreplident = 'i' AND i.indisreplident))) AS cols
         FROM pg_class c WHERE c.oid = $1::regclass`,
      [quoteTable(table)],
    )
  ).rows[0] as { ident: string; cols: string[] | null };
  if (r.ident === 'f') return { ok: true, why: 'its replica identity is FULL' };
  const cols = r.cols ?? [];
  const missing = keys.filter((k) => !cols.includes(k));
  if (!missing.length) return { ok: true, why: `its replica identity (${cols.join(', ')}) holds the key` };
  return {
    ok: false,
    why: `the replica identity of ${quoteTable(table)} (${cols.length ? cols.join(', ') : 'none'}) does not hold key column(s) ${missing.join(', ')}, so a deletion would not say which row went (ALTER TABLE … REPLICA IDENTITY FULL, or a primary key on the key, fixes it)`,
  };
}
