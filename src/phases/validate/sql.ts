// Pure SQL builders for exact validation: chunk digests of the source seen through the mapping and of the target
// (the job's slice of it), and the row-level diff that narrows a differing chunk to its keys.
import { TIDEMARK_SCHEMA } from '../../db/names';
import { quoteIdent, quoteLiteral, quoteTable } from '../../db/quote';
import type { ChunkBounds } from '../copy/chunks';
import {
  encodedKeySql,
  keyBounds,
  keyCols,
  slicePredicate,
  sourceFrom,
  tuple,
  whereOf,
  type CopyMapping,
  type Query,
} from '../copy/sql';

export type { ChunkBounds } from '../copy/chunks';

/** One side's rows of a chunk: in the key interval, with no NULL in the key (nullKeyQuery counts those). */
export function chunkWhere(m: CopyMapping, side: 'source' | 'target', b: ChunkBounds, values: unknown[]): string {
  const alias = side === 'source' ? 's' : 't';
  const cols = keyCols(m, alias, side);
  return whereOf([
    ...cols.map((c) => `${c} IS NOT NULL`),
    ...keyBounds(m, alias, side, b.after, b.upTo, values),
    ...(side === 'target' ? slicePredicate(m) : []),
  ]);
}

/** The row as text, source side: each mapped expression cast to its target column's type, in target column order. */
export function sourceRowText(m: CopyMapping): string {
  return `ROW(${m.columns.map((c) => `(${c.expr})::${c.type}`).join(', ')})::text`;
}

export function targetRowText(m: CopyMapping): string {
  return `ROW(${m.columns.map((c) => `t.${quoteIdent(c.target)}`).join(', ')})::text`;
}

/** Source and target row counts of the job (the target's: its slice), in one snapshot. */
export function rowCountQuery(m: CopyMapping): Query {
  return {
    text:
      `SELECT (SELECT count(*) FROM ${sourceFrom(m)})::float8 AS source, ` +
      `(SELECT count(*) FROM ${quoteTable(m.target)} AS t${whereOf(slicePredicate(m))})::float8 AS target`,
    values: [],
  };
}

/**
 * Digest of one key range on both sides, computed in the caller's transaction (REPEATABLE READ, so both sides are read
 * from one snapshot): the row count and the sum of a 64-bit hash of each row's full text (key included). Any changed,
 * missing or extra row changes the digest unless another change cancels it exactly — a 2^-64 coincidence — and a
 * differing chunk is then compared row by row (chunkDiffQuery), which reports nothing it cannot show.
 */
export function chunkDigestQuery(m: CopyMapping, b: ChunkBounds): Query {
  const values: unknown[] = [];
  const sWhere = chunkWhere(m, 'source', b, values);
  const tWhere = chunkWhere(m, 'target', b, values);
  const text =
    `SELECT src.n AS source_rows, src.d AS source_digest, tgt.n AS target_rows, tgt.d AS target_digest FROM ` +
    `(SELECT count(*)::int AS n, coalesce(sum(hashtextextended(${sourceRowText(m)}, 0)), 0)::text AS d FROM ${sourceFrom(m)}${sWhere}) AS src, ` +
    `(SELECT count(*)::int AS n, coalesce(sum(hashtextextended(${targetRowText(m)}, 0)), 0)::text AS d FROM ${quoteTable(m.target)} AS t${tWhere}) AS tgt`;
  return { text, values };
}

/** How many characters of a value a difference report shows. */
export const SHOWN_VALUE_CHARS = 200;

/**
 * A value as PostgreSQL prints it, cut to SHOWN_VALUE_CHARS; a cut value says its length and the start of its md5,
 * so two long values that differ only past the cut still show as different.
 */
export function shown(expr: string): string {
  return (
    `(SELECT CASE WHEN length(v) > ${SHOWN_VALUE_CHARS} ` +
    `THEN left(v, ${SHOWN_VALUE_CHARS}) || '… (' || length(v) || ' characters, md5 ' || left(md5(v), 8) || ')' ` +
    `ELSE v END FROM (SELECT (${expr})::text AS v) AS x)`
  );
}

/**
 * The keys in a range whose mapped source row and target row differ (missing on either side included), with each
 * side's values as PostgreSQL prints them — 0.7 and 0.70, -0 and 0, or JSON differing in spaces show as they differ.
 * Keys are reported encoded (a composite key as a JSON array of its values).
 */
export function chunkDiffQuery(m: CopyMapping, b: ChunkBounds, limit: number): Query {
  const values: unknown[] = [limit];
  const sWhere = chunkWhere(m, 'source', b, values);
  const tWhere = chunkWhere(m, 'target', b, values);
  const side = (value: (c: CopyMapping['columns'][number]) => string) =>
    `json_build_object(${m.columns.map((c) => `${quoteLiteral(c.target)}, ${shown(value(c))}`).join(', ')})`;
  const srcJson = side((c) => `(${c.expr})::${c.type}`);
  const tgtJson = side((c) => `t.${quoteIdent(c.target)}`);
  const ks = m.keys.map((_, i) => `k${i}`);
  const src = keyCols(m, 's', 'source').map((c, i) => `${c} AS k${i}`);
  const tgt = keyCols(m, 't', 'target').map((c, i) => `${c} AS k${i}`);
  const either = ks.map((k) => `coalesce(src.${k}, tgt.${k})`);
  const text =
    `SELECT ${shown(encodedKeySql(m, either))} AS key, src.j AS source, tgt.j AS target FROM ` +
    `(SELECT ${src.join(', ')}, ${sourceRowText(m)} AS r, ${srcJson} AS j FROM ${sourceFrom(m)}${sWhere}) AS src ` +
    `FULL JOIN (SELECT ${tgt.join(', ')}, ${targetRowText(m)} AS r, ${tgtJson} AS j FROM ${quoteTable(m.target)} AS t${tWhere}) AS tgt ` +
    `ON ${tuple(ks.map((k) => `src.${k}`))} = ${tuple(ks.map((k) => `tgt.${k}`))} ` +
    `WHERE src.r IS DISTINCT FROM tgt.r ORDER BY ${either.join(', ')} LIMIT $1`;
  return { text, values };
}

/** Rows with a NULL in their key on either side: no chunk holds them, so they are counted apart (and fail the check). */
export function nullKeyQuery(m: CopyMapping): Query {
  const anyNull = (cols: string[]) => cols.map((c) => `${c} IS NULL`).join(' OR ');
  const slice = slicePredicate(m);
  return {
    text:
      `SELECT (SELECT count(*) FROM ${sourceFrom(m)} WHERE ${anyNull(keyCols(m, 's', 'source'))})::int AS source, ` +
      `(SELECT count(*) FROM ${quoteTable(m.target)} AS t WHERE (${anyNull(keyCols(m, 't', 'target'))})${slice.map((p) => ` AND ${p}`).join('')})::int AS target`,
    values: [],
  };
}

// ---- across two databases (blue-green): each side read on its own -----------------------------------------------

/** What one side's row is compared by: the full mapped row, or (a row count) its key only. */
function sideRowText(m: CopyMapping, side: 'source' | 'target', keyOnly: boolean): string {
  if (keyOnly) return encodedKeySql(m, keyCols(m, side === 'source' ? 's' : 't', side));
  return side === 'source' ? sourceRowText(m) : targetRowText(m);
}

const sideFrom = (m: CopyMapping, side: 'source' | 'target') =>
  side === 'source' ? sourceFrom(m) : `${quoteTable(m.target)} AS t`;

/** One side's digest of a chunk: its row count and the sum of its rows' hashes (see chunkDigestQuery). */
export function sideDigestQuery(m: CopyMapping, side: 'source' | 'target', b: ChunkBounds, keyOnly: boolean): Query {
  const values: unknown[] = [];
  const where = chunkWhere(m, side, b, values);
  return {
    text:
      `SELECT count(*)::int AS n, coalesce(sum(hashtextextended(${sideRowText(m, side, keyOnly)}, 0)), 0)::text AS d ` +
      `FROM ${sideFrom(m, side)}${where}`,
    values,
  };
}

/**
 * One side's rows of a chunk (or of some of its keys): the key, the compared text, the values as shown in a report,
 * and the stamp of the last write of the row this side holds (tidemark.row_clock; null for a row not written since
 * it was copied). Two sides holding the same stamp hold the same write, so their rows must be equal.
 */
export function sideRowsQuery(
  m: CopyMapping,
  side: 'source' | 'target',
  b: ChunkBounds,
  keyOnly: boolean,
  syncId: string,
  only?: string[],
): Query {
  const alias = side === 'source' ? 's' : 't';
  const values: unknown[] = [syncId];
  const where = chunkWhere(m, side, b, values);
  const cols = keyCols(m, alias, side);
  const key = encodedKeySql(m, cols);
  let filter = '';
  if (only) {
    values.push(only);
    filter = `${where ? ' AND' : ' WHERE'} ${key} = ANY($${values.length}::text[])`;
  }
  const shownRow = `json_build_object(${m.columns
    .map(
      (c) =>
        `${quoteLiteral(c.target)}, ${shown(side === 'source' ? `(${c.expr})::${c.type}` : `t.${quoteIdent(c.target)}`)}`,
    )
    .join(', ')})`;
  return {
    text:
      `SELECT ${key} AS key, jsonb_build_array(${cols.join(', ')})::text AS ck, ` +
      `${sideRowText(m, side, keyOnly)} AS r, ${keyOnly ? 'NULL::json' : shownRow} AS j, ` +
      `(SELECT c.stamp::text || ' ' || c.origin FROM ${quoteIdent(TIDEMARK_SCHEMA)}.row_clock AS c ` +
      `WHERE c.sync_id = $1 AND c.key = jsonb_build_array(${cols.join(', ')})) AS stamp ` +
      `FROM ${sideFrom(m, side)}${where}${filter}`,
    values,
  };
}

/** One side's rows with a NULL in their key (in no chunk). */
export function sideNullKeyQuery(m: CopyMapping, side: 'source' | 'target'): Query {
  const alias = side === 'source' ? 's' : 't';
  const anyNull = keyCols(m, alias, side)
    .map((c) => `${c} IS NULL`)
    .join(' OR ');
  const slice =
    side === 'target'
      ? slicePredicate(m)
          .map((p) => ` AND ${p}`)
          .join('')
      : '';
  return { text: `SELECT count(*)::int AS n FROM ${sideFrom(m, side)} WHERE (${anyNull})${slice}`, values: [] };
}

/**
 * The stamps one side holds for keys it may no longer have a row for (a deletion's stamp stays as a tombstone).
 * $1: sync id, $2: a jsonb array of keys (each an array of the key's values, as sideRowsQuery's ck).
 */
export function stampsQuery(): string {
  return (
    `SELECT key::text AS ck, stamp::text || ' ' || origin AS stamp FROM ${quoteIdent(TIDEMARK_SCHEMA)}.row_clock ` +
    `WHERE sync_id = $1 AND key IN (SELECT jsonb_array_elements($2::jsonb))`
  );
}
