// Pure SQL for change capture across two databases (blue-green): statement triggers that log every write of a table
// into tidemark.changes in the writer's own transaction, stamping each written row in tidemark.row_clock; the queries
// that read the log back; and the set-based apply of a batch to the other database through a column mapping.
//
// Why the two databases converge. Each write of a captured row gets a stamp: the writer's clock, but always later than
// the row's last stamp in that database. The applier writes a change only when its stamp is later than the row's stamp
// on the applying side, and records it there. So each database keeps, per row, the write with the latest stamp (ties
// broken by origin) — whatever order changes arrive in, however often one is re-applied after a crash, and also when
// the application writes a row on both sides at once (while traffic is split, at 50 %): the later write wins on both.
// A deletion keeps its stamp (a tombstone in row_clock), so an older write arriving later does not bring the row back.
import type { FunctionContext } from '../../db/catalog';
import { captureName, SYNC_GUARD_SETTING, TIDEMARK_SCHEMA, type SyncDirection } from '../../db/names';
import { dollarQuote, quoteIdent, quoteLiteral, quoteTable, type TableRef } from '../../db/quote';
import {
  decodeKey,
  functionClauses,
  encodedKeySql,
  keyBounds,
  keyCols,
  slicePredicate,
  sourceFrom,
  tuple,
  whereOf,
  type CopyMapping,
  type EncodedKey,
  type Query,
} from './sql';

const S = quoteIdent(TIDEMARK_SCHEMA);
const GUARD = quoteLiteral(SYNC_GUARD_SETTING);

/** One direction of one job's capture: the writes of `table` are logged under `stream` with `origin`. */
export interface CaptureSpec {
  job: string;
  syncId: string;
  direction: SyncDirection;
  stream: string;
  /** Which database the writes are made in ('source' or 'target'): the tie-break between equal stamps. */
  origin: 'source' | 'target';
  table: TableRef;
  /** The captured table's key columns, in key order (the other side's key columns are in the same order). */
  keys: string[];
  /** The row image logged: each column of the other side's table ← SQL expression over the captured row. */
  image: { name: string; expr: string }[];
}

/**
 * A row image as a jsonb object (jsonb_build_object takes at most 100 arguments: wider tables are built in parts).
 */
export function imageSql(image: { name: string; expr: string }[]): string {
  const parts: string[] = [];
  for (let i = 0; i < image.length; i += 50) {
    const pairs = image.slice(i, i + 50).map((c) => `${quoteLiteral(c.name)}, (${c.expr})`);
    parts.push(`jsonb_build_object(${pairs.join(', ')})`);
  }
  return parts.length ? parts.join(' || ') : `'{}'::jsonb`;
}

/** A key as the log and the clocks hold it: a JSON array of the key's values, the same on both sides. */
const keyArray = (alias: string, keys: string[]) =>
  `jsonb_build_array(${keys.map((k) => `${alias}.${quoteIdent(k)}`).join(', ')})`;

/** Stamps the keys of `rows` (a query with a `key` column) in row_clock, later than any stamp they had. */
const stamped = (spec: CaptureSpec, rows: string) =>
  `INSERT INTO ${S}.row_clock (sync_id, key, stamp, origin) SELECT ${quoteLiteral(spec.syncId)}, r.key, clock_timestamp(), ${quoteLiteral(spec.origin)} FROM (${rows}) AS r
     ON CONFLICT (sync_id, key) DO UPDATE
     SET stamp = greatest(EXCLUDED.stamp, ${S}.row_clock.stamp + interval '1 microsecond'), origin = EXCLUDED.origin
     RETURNING key, stamp`;

/**
 * Statement triggers logging every write of `spec.table`: an upsert with the new row's image, a deletion with the old
 * key (also for a key an UPDATE changed), a truncate. Writes made by tidemark's own apply or copy (whose sync guard
 * holds the job's sync id) are not logged, so what one side applies never comes back to it.
 *
 * The triggers fire as the application's role, which need not have any privilege in the tidemark schema; and the
 * stamps in row_clock decide which write wins, so they are not opened to every role. The function therefore runs as
 * its owner where the database allows it safely, with the settings tidemark's own sessions have (`functions`, see
 * sql.ts functionClauses): a role writing the table can neither make the row image's expressions resolve to
 * functions of its own nor change what they compute through its session's TimeZone or DateStyle.
 */
export function captureTriggerDdl(spec: CaptureSpec, functions: FunctionContext): string[] {
  const stream = quoteLiteral(spec.stream);
  const origin = quoteLiteral(spec.origin);
  const sameKey = spec.keys.map((k) => `n.${quoteIdent(k)} = o.${quoteIdent(k)}`).join(' AND ');
  const gone = (update: boolean) =>
    `SELECT ${keyArray('o', spec.keys)} AS key FROM old_rows AS o` +
    (update ? ` WHERE NOT EXISTS (SELECT 1 FROM new_rows AS n WHERE ${sameKey})` : '');
  const logDeletes = (update: boolean) =>
    `WITH c AS (${stamped(spec, gone(update))})
     INSERT INTO ${S}.changes (stream, op, key, stamp, origin) SELECT ${stream}, 'D', c.key, c.stamp, ${origin} FROM c`;
  const logUpserts = `WITH n AS (SELECT ${keyArray('s', spec.keys)} AS key, ${imageSql(spec.image)} AS row FROM new_rows AS s),
     c AS (${stamped(spec, 'SELECT key FROM n')})
     INSERT INTO ${S}.changes (stream, op, key, row, stamp, origin)
     SELECT ${stream}, 'U', n.key, n.row, c.stamp, ${origin} FROM n JOIN c ON c.key = n.key`;
  const body = `
BEGIN
  IF position(${quoteLiteral(`,${spec.syncId},`)} in ',' || coalesce(current_setting(${GUARD}, true), '') || ',') > 0 THEN
    RETURN NULL;
  END IF;
  IF TG_OP = 'TRUNCATE' THEN
    INSERT INTO ${S}.changes (stream, op, origin) VALUES (${stream}, 'T', ${origin});
    DELETE FROM ${S}.row_clock WHERE sync_id = ${quoteLiteral(spec.syncId)};
  ELSIF TG_OP = 'INSERT' THEN
    ${logUpserts};
  ELSIF TG_OP = 'UPDATE' THEN
    ${logDeletes(true)};
    ${logUpserts};
  ELSE
    ${logDeletes(false)};
  END IF;
  RETURN NULL;
END`;
  const fn = `${S}.${quoteIdent(captureName(spec.job, spec.syncId, spec.direction, 'function'))}`;
  const table = quoteTable(spec.table);
  const trigger = (kind: 'ins' | 'upd' | 'del' | 'truncate', event: string, transition: string) => {
    const name = quoteIdent(captureName(spec.job, spec.syncId, spec.direction, kind));
    return [
      `DROP TRIGGER IF EXISTS ${name} ON ${table}`,
      `CREATE TRIGGER ${name} AFTER ${event} ON ${table}${transition} FOR EACH STATEMENT EXECUTE FUNCTION ${fn}()`,
    ];
  };
  return [
    `CREATE OR REPLACE FUNCTION ${fn}() RETURNS trigger LANGUAGE plpgsql${functionClauses(functions)} AS ${dollarQuote(body)}`,
    ...trigger('ins', 'INSERT', ' REFERENCING NEW TABLE AS new_rows'),
    ...trigger('upd', 'UPDATE', ' REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows'),
    ...trigger('del', 'DELETE', ' REFERENCING OLD TABLE AS old_rows'),
    ...trigger('truncate', 'TRUNCATE', ''),
  ];
}

/** Removes a direction's capture triggers (wherever their table now is, with their function). */
export function dropCaptureDdl(job: string, syncId: string, direction: SyncDirection): string[] {
  return [`DROP FUNCTION IF EXISTS ${S}.${quoteIdent(captureName(job, syncId, direction, 'function'))}() CASCADE`];
}

/**
 * The next changes of a stream in log order (up to seq `through`, if given), without their row images (readImagesQuery
 * reads those applied); stamps as text (microseconds kept).
 */
export function readChangesQuery(stream: string, limit: number, through?: string): Query {
  const values: unknown[] = [stream, limit];
  const where = `c.stream = $1${through ? ` AND c.seq <= $${values.push(through)}::bigint` : ''}`;
  return {
    text:
      `SELECT c.seq::text AS seq, c.op, c.key::text AS key, c.stamp::text AS stamp, c.origin ` +
      // ORDER BY c.seq, the number: a bare "seq" would name the text output column, and "10000" sorts before "9999".
      `FROM ${S}.changes AS c WHERE ${where} ORDER BY c.seq LIMIT $2`,
    values,
  };
}

/** The row images of the given changes (those still in the log). */
export function readImagesQuery(seqs: string[]): Query {
  return { text: `SELECT c.row::text AS row FROM ${S}.changes AS c WHERE c.seq = ANY($1::bigint[])`, values: [seqs] };
}

/** The newest change of a stream logged so far (null: none). */
export function lastSeqQuery(stream: string): Query {
  return { text: `SELECT max(seq)::text AS seq FROM ${S}.changes WHERE stream = $1`, values: [stream] };
}

/** Removes applied changes from the log. */
export function forgetChangesQuery(seqs: string[]): Query {
  return { text: `DELETE FROM ${S}.changes WHERE seq = ANY($1::bigint[])`, values: [seqs] };
}

/** Backlog of a stream: changes not yet applied, and the age of the oldest (seconds). */
export function lagQuery(stream: string): Query {
  return {
    text:
      `SELECT count(*)::int AS rows, coalesce(extract(epoch FROM clock_timestamp() - min(stamp)), 0)::float8 AS seconds ` +
      `FROM ${S}.changes WHERE stream = $1`,
    values: [stream],
  };
}

/** How a batch of changes is written on the applying side. */
export interface ApplySpec {
  syncId: string;
  /** The destination table. */
  to: TableRef;
  /** Its key columns with their types, in key order; the conflict target is slice columns + these. */
  keys: { name: string; type: string }[];
  /** The destination columns a row image fills. */
  columns: string[];
  /** Destination columns fixed for this job's rows (several jobs fill one target): part of the conflict target. */
  slice: { column: string; value: string }[];
}

/**
 * Claims the changes that win on this side: records each change's stamp for its key where it is later than the stamp
 * this side holds (or the key has none) and returns the keys it recorded. $1: [{key, stamp, origin}].
 */
export function claimQuery(a: ApplySpec): string {
  return (
    `INSERT INTO ${S}.row_clock (sync_id, key, stamp, origin) ` +
    `SELECT ${quoteLiteral(a.syncId)}, b.key, b.stamp, b.origin FROM jsonb_to_recordset($1::jsonb) AS b(key jsonb, stamp timestamptz, origin text) ` +
    `ON CONFLICT (sync_id, key) DO UPDATE SET stamp = EXCLUDED.stamp, origin = EXCLUDED.origin ` +
    `WHERE (${S}.row_clock.stamp, ${S}.row_clock.origin) < (EXCLUDED.stamp, EXCLUDED.origin) RETURNING key::text AS key`
  );
}

/** Deletes the destination rows of deleted keys. $1: a jsonb array of keys (each an array of the key's values). */
export function applyDeletesQuery(a: ApplySpec): string {
  const match = a.keys.map((k, i) => `d.${quoteIdent(k.name)} = (e.k ->> ${i})::${k.type}`).join(' AND ');
  const slice = a.slice.map((x) => ` AND d.${quoteIdent(x.column)} IS NOT DISTINCT FROM (${x.value})`).join('');
  return `DELETE FROM ${quoteTable(a.to)} AS d USING jsonb_array_elements($1::jsonb) AS e(k) WHERE ${match}${slice}`;
}

/**
 * Writes row images (objects of destination columns, mapped on the writing side), inserting or overwriting; the
 * images' values are read as the destination's column types. $1: the images as one jsonb array.
 */
export function applyUpsertsQuery(a: ApplySpec): string {
  const conflict = [...a.slice.map((x) => x.column), ...a.keys.map((k) => k.name)];
  const cols = a.columns.map(quoteIdent).join(', ');
  const sets = a.columns
    .filter((c) => !conflict.includes(c))
    .map((c) => `${quoteIdent(c)} = EXCLUDED.${quoteIdent(c)}`);
  const onConflict = `ON CONFLICT (${conflict.map(quoteIdent).join(', ')}) ${sets.length ? `DO UPDATE SET ${sets.join(', ')}` : 'DO NOTHING'}`;
  return (
    `INSERT INTO ${quoteTable(a.to)} (${cols}) SELECT ${cols} ` +
    `FROM jsonb_populate_recordset(NULL::${quoteTable(a.to)}, $1::jsonb) ${onConflict}`
  );
}

/** Empties the destination (its slice) for a logged TRUNCATE, and forgets the job's stamps there. */
export function applyTruncateQueries(a: ApplySpec): string[] {
  const slice = a.slice.map((x) => `d.${quoteIdent(x.column)} IS NOT DISTINCT FROM (${x.value})`);
  return [
    `DELETE FROM ${quoteTable(a.to)} AS d${slice.length ? ` WHERE ${slice.join(' AND ')}` : ''}`,
    `DELETE FROM ${S}.row_clock WHERE sync_id = ${quoteLiteral(a.syncId)}`,
  ];
}

/**
 * A logged change as read back. Key and row stay JSON text, never parsed: a JavaScript number would round a bigint key
 * or a numeric's digits (0.0 would come back as 0) on the way to the other database.
 */
export interface Change {
  seq: string;
  op: 'U' | 'D' | 'T';
  key: string | null;
  stamp: string;
  origin: string;
}

/** JSON text of an array of JSON texts. */
export const jsonArray = (items: string[]) => `[${items.join(',')}]`;

/** The claim parameter of a batch (claimQuery): key, stamp and origin of each change, the key kept as it was logged. */
export function claimsOf(changes: Change[]): string {
  return jsonArray(
    changes.map((c) => `{"key":${c.key},"stamp":${JSON.stringify(c.stamp)},"origin":${JSON.stringify(c.origin)}}`),
  );
}

/** A run of changes without a truncate in it: per key, the last change only. */
export interface Segment {
  /** Whether the destination is emptied before this segment (a TRUNCATE was logged just before it). */
  truncateFirst: boolean;
  changes: Change[];
}

/** A stamp as PostgreSQL prints a timestamptz (ISO DateStyle), in microseconds since the epoch. */
export function stampMicros(stamp: string): bigint {
  const m = /^(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2})(?:\.(\d{1,6}))?([+-]\d{2})(?::?(\d{2}))?(?::\d{2})?$/.exec(stamp);
  if (!m) throw new Error(`unexpected stamp: ${stamp}`);
  const ms = Date.parse(`${m[1]}T${m[2]}${m[4]}:${m[5] ?? '00'}`);
  return BigInt(ms) * 1000n + BigInt((m[3] ?? '').padEnd(6, '0'));
}

/** Whether change `a` is later than `b` for its key: the later stamp, or at equal stamps the later place in the log. */
function later(a: Change, b: Change): boolean {
  const sa = stampMicros(a.stamp);
  const sb = stampMicros(b.stamp);
  return sa !== sb ? sa > sb : BigInt(a.seq) > BigInt(b.seq);
}

/**
 * Cuts a batch at its truncates and reduces each piece to the last change per key: the one with the latest stamp, at
 * equal stamps the one further along the log. A key's stamps rise in the order its writers held its row lock; the log
 * mostly holds them in that order too, but not always: changes pumped from a logical slot while the capture switches
 * to triggers come after newer changes the triggers logged.
 */
export function segments(changes: Change[]): Segment[] {
  const out: Segment[] = [];
  let current: Segment = { truncateFirst: false, changes: [] };
  let last = new Map<string, Change>();
  const close = () => {
    current.changes = [...last.values()];
    if (current.truncateFirst || current.changes.length) out.push(current);
  };
  for (const c of changes) {
    if (c.op === 'T') {
      close();
      current = { truncateFirst: true, changes: [] };
      last = new Map();
    } else {
      const seen = last.get(c.key!);
      if (!seen || later(c, seen)) last.set(c.key!, c);
    }
  }
  close();
  return out;
}

/** The session setting of an applying session: the job's own capture triggers leave its writes alone. */
export function applySettings(syncId: string): Record<string, string> {
  return { [SYNC_GUARD_SETTING]: syncId };
}

// ---- the copy across databases: batches streamed with COPY ---------------------------------------------------
//
// Why the copy is exact without locking what it reads. The capture is installed before any batch runs, so every
// write of the source from then on is in the log, and the applier writes the log on the target in order. A batch and
// the applier never interleave there: the applier holds the job's apply lock (applyLockSql) for each of its
// transactions, a batch holds it shared for its whole target transaction, and the batch reads the source only once
// it holds the lock. So every change the applier wrote before the batch was committed on the source before the
// batch's snapshot: the snapshot's rows are as new as any on the target, and the batch writes them all, overwriting
// the rows the applier (or an earlier attempt of the batch) wrote in its range. Every change committed after that
// snapshot is still in the log and applied after the batch commits. A row deleted before the snapshot is not in it;
// one deleted after is deleted by the applier later. The source transaction stays open until the target commits, so
// a TRUNCATE of the source waits for the batch and is applied after it.

/** A key value as a literal tuple of the key's types (COPY takes no parameters), each value through quoteLiteral. */
function keyLiteral(m: CopyMapping, v: EncodedKey): string {
  return tuple(decodeKey(m, v).map((x, i) => `${quoteLiteral(x)}::${m.keys[i].type}`));
}

/** `key > after AND key <= upTo` with the bounds as literals. */
function literalBounds(
  m: CopyMapping,
  alias: string,
  side: 'source' | 'target',
  after: EncodedKey | null,
  upTo: EncodedKey | null,
) {
  const k = tuple(keyCols(m, alias, side));
  const where: string[] = [];
  if (after !== null) where.push(`${k} > ${keyLiteral(m, after)}`);
  if (upTo !== null) where.push(`${k} <= ${keyLiteral(m, upTo)}`);
  return where;
}

/**
 * The advisory lock that keeps the applier of a job and the batches of its copy apart on the applying side: the
 * applier takes it for each transaction, a batch takes it shared (ranges copy side by side). $1: the job's sync id.
 */
export function applyLockSql(shared: boolean): string {
  return `SELECT pg_advisory_xact_lock${shared ? '_shared' : ''}(hashtextextended('tidemark-apply:' || $1, 0))`;
}

/** Which rows of a batch the source sends: all of them, all but some keys, or only some keys. */
export type BatchKeys = { except: EncodedKey[] } | { only: EncodedKey[] };

/**
 * The source rows of a batch mapped to the target's columns, streamed out with COPY: every row with a key in
 * (after, end], less (or only) the keys given. Nothing is locked: see "Why the copy is exact" above.
 */
export function copyOutSql(
  m: CopyMapping,
  after: EncodedKey | null,
  end: EncodedKey | null,
  keys?: BatchKeys,
  format: CopyFormat = 'text',
): string {
  const order = keyCols(m, 's', 'source');
  const cols = mappedColumns(m);
  const where = literalBounds(m, 's', 'source', after, end);
  const list = keys && ('only' in keys ? keys.only : keys.except);
  if (list?.length) {
    const k = tuple(order);
    const items = list.map((v) => keyLiteral(m, v)).join(', ');
    where.push('only' in keys! ? `${k} IN (${items})` : `${k} NOT IN (${items})`);
  }
  return `COPY (SELECT ${cols} FROM ${sourceFrom(m)}${whereOf(where)} ORDER BY ${order.join(', ')}) TO STDOUT${formatOption(format)}`;
}

/**
 * How a batch travels between the databases: `text` always works (each value printed by the source and parsed by
 * the target, as the target column's input); `binary` skips both, where every value's binary form is the one the
 * target column reads (see `binaryCopyAllowed` in across.ts).
 */
export type CopyFormat = 'text' | 'binary';

const formatOption = (format: CopyFormat) => (format === 'binary' ? ' (FORMAT binary)' : '');

/** The source row mapped to the target's columns, as a select list over the source aliased `s`. */
function mappedColumns(m: CopyMapping): string {
  return m.columns.map((c) => `(${c.expr}) AS ${quoteIdent(c.target)}`).join(', ');
}

/** No rows: what the mapped columns' types are on the source (read from the result's description). */
export function mappedTypesSql(m: CopyMapping): string {
  return `SELECT ${mappedColumns(m)} FROM ${sourceFrom(m)} LIMIT 0`;
}

/**
 * The keys of the job's target rows in (after, end], at most `limit` of them: rows the applier (or an earlier attempt
 * of the batch) wrote there, which the batch overwrites rather than inserts.
 */
export function presentKeysQuery(
  m: CopyMapping,
  after: EncodedKey | null,
  end: EncodedKey | null,
  limit: number,
): Query {
  const values: unknown[] = [limit];
  const where = [...keyBounds(m, 't', 'target', after, end, values), ...slicePredicate(m)];
  const keys = keyCols(m, 't', 'target');
  return {
    text: `SELECT ${encodedKeySql(m, keys)} AS k FROM ${quoteTable(m.target)} AS t${whereOf(where)} LIMIT $1`,
    values,
  };
}

/** COPY into a table (the target, or the staging table) of the mapped columns. */
export function copyInSql(table: string, m: CopyMapping, format: CopyFormat = 'text'): string {
  return `COPY ${table} (${m.columns.map((c) => quoteIdent(c.target)).join(', ')}) FROM STDIN${formatOption(format)}`;
}

/** The session's staging table of a job: the mapped columns only, emptied at each commit. */
export function stageName(m: CopyMapping): string {
  return quoteIdent(`tidemark_stage_${m.syncId}`);
}

export function createStageSql(m: CopyMapping): string {
  const cols = m.columns.map((c) => quoteIdent(c.target)).join(', ');
  return `CREATE TEMP TABLE IF NOT EXISTS ${stageName(m)} ON COMMIT DELETE ROWS AS SELECT ${cols} FROM ${quoteTable(m.target)} WITH NO DATA`;
}

/** Moves a staged batch into the target, overwriting the rows already there (see "Why the copy is exact"). */
export function unstageSql(m: CopyMapping): string {
  const conflict = [...m.slice.map((x) => x.column), ...m.keys.map((k) => k.target)];
  const cols = m.columns.map((c) => quoteIdent(c.target));
  const sets = m.columns
    .filter((c) => !conflict.includes(c.target))
    .map((c) => `${quoteIdent(c.target)} = EXCLUDED.${quoteIdent(c.target)}`);
  return (
    `INSERT INTO ${quoteTable(m.target)} (${cols.join(', ')}) SELECT ${cols.join(', ')} FROM ${stageName(m)} ` +
    `ON CONFLICT (${conflict.map(quoteIdent).join(', ')}) ${sets.length ? `DO UPDATE SET ${sets.join(', ')}` : 'DO NOTHING'}`
  );
}
