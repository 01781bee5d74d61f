// Pure SQL builders for exact validation: chunk digests of the source seen through the mapping and of the target,
// and the row-level diff that narrows a differing chunk to its keys.
import { quoteIdent, quoteLiteral, quoteTable } from '../../db/quote';
import { sourceFrom, type CopyMapping, type Query } from '../copy/sql';

export interface ChunkBounds {
  after: string | null;
  upTo: string | null;
}

function rangeWhere(alias: string, m: CopyMapping, b: ChunkBounds, values: unknown[]): string {
  const k = `${alias}.${quoteIdent(m.key)}`;
  // NULL keys fall in no key range; nullKeyQuery counts them.
  const where: string[] = [`${k} IS NOT NULL`];
  if (b.after !== null) {
    values.push(b.after);
    where.push(`${k} > $${values.length}::${m.keyType}`);
  }
  if (b.upTo !== null) {
    values.push(b.upTo);
    where.push(`${k} <= $${values.length}::${m.keyType}`);
  }
  return ` WHERE ${where.join(' AND ')}`;
}

/** The row as text, source side: each mapped expression cast to its target column's type, in target column order. */
function sourceRowText(m: CopyMapping): string {
  return `ROW(${m.columns.map((c) => `(${c.expr})::${c.type}`).join(', ')})::text`;
}

function targetRowText(m: CopyMapping): string {
  return `ROW(${m.columns.map((c) => `t.${quoteIdent(c.target)}`).join(', ')})::text`;
}

/** The key that ends a chunk of `size` source rows after `after` (null when fewer rows remain: the last chunk). */
export function chunkEndQuery(m: CopyMapping, after: string | null, size: number): Query {
  const values: unknown[] = [size - 1];
  const where = rangeWhere('s', m, { after, upTo: null }, values);
  const k = `s.${quoteIdent(m.key)}`;
  return { text: `SELECT ${k}::text AS k FROM ${sourceFrom(m)}${where} ORDER BY ${k} OFFSET $1 LIMIT 1`, values };
}

/**
 * Digest of one key range on both sides, computed in the caller's transaction (REPEATABLE READ, so both sides are read
 * from one snapshot): the row count and the sum of a 64-bit hash of each row's full text (key included). Any changed,
 * missing or extra row changes the digest unless another change cancels it exactly — a 2^-64 coincidence — and a
 * differing chunk is then compared row by row (chunkDiffQuery), which reports nothing it cannot show.
 */
export function chunkDigestQuery(m: CopyMapping, b: ChunkBounds): Query {
  const values: unknown[] = [];
  const sWhere = rangeWhere('s', m, b, values);
  const tWhere = rangeWhere('t', m, b, values);
  const text =
    `SELECT src.n AS source_rows, src.d AS source_digest, tgt.n AS target_rows, tgt.d AS target_digest FROM ` +
    `(SELECT count(*)::int AS n, coalesce(sum(hashtextextended(${sourceRowText(m)}, 0)), 0)::text AS d FROM ${sourceFrom(m)}${sWhere}) AS src, ` +
    `(SELECT count(*)::int AS n, coalesce(sum(hashtextextended(${targetRowText(m)}, 0)), 0)::text AS d FROM ${quoteTable(m.target)} AS t${tWhere}) AS tgt`;
  // rangeWhere numbered the target's parameters after the source's; both use the same bounds.
  return { text, values };
}

/** How many characters of a value a difference report shows. */
export const SHOWN_VALUE_CHARS = 200;

/**
 * A value as PostgreSQL prints it, cut to SHOWN_VALUE_CHARS; a cut value says its length and the start of its md5,
 * so two long values that differ only past the cut still show as different.
 */
function shown(expr: string): string {
  return (
    `(SELECT CASE WHEN length(v) > ${SHOWN_VALUE_CHARS} ` +
    `THEN left(v, ${SHOWN_VALUE_CHARS}) || '… (' || length(v) || ' characters, md5 ' || left(md5(v), 8) || ')' ` +
    `ELSE v END FROM (SELECT (${expr})::text AS v) AS x)`
  );
}

/**
 * The keys in a range whose mapped source row and target row differ (missing on either side included), with each
 * side's values as PostgreSQL prints them — 0.7 and 0.70, -0 and 0, or JSON differing in spaces show as they differ.
 */
export function chunkDiffQuery(m: CopyMapping, b: ChunkBounds, limit: number): Query {
  const values: unknown[] = [limit];
  const sWhere = rangeWhere('s', m, b, values);
  const tWhere = rangeWhere('t', m, b, values);
  const side = (value: (c: CopyMapping['columns'][number]) => string) =>
    `json_build_object(${m.columns.map((c) => `${quoteLiteral(c.target)}, ${shown(value(c))}`).join(', ')})`;
  const srcJson = side((c) => `(${c.expr})::${c.type}`);
  const tgtJson = side((c) => `t.${quoteIdent(c.target)}`);
  const text =
    `SELECT ${shown('coalesce(src.k, tgt.k)')} AS key, src.j AS source, tgt.j AS target FROM ` +
    `(SELECT s.${quoteIdent(m.key)} AS k, ${sourceRowText(m)} AS r, ${srcJson} AS j FROM ${sourceFrom(m)}${sWhere}) AS src ` +
    `FULL JOIN (SELECT t.${quoteIdent(m.key)} AS k, ${targetRowText(m)} AS r, ${tgtJson} AS j FROM ${quoteTable(m.target)} AS t${tWhere}) AS tgt ` +
    `ON src.k = tgt.k WHERE src.r IS DISTINCT FROM tgt.r ORDER BY coalesce(src.k, tgt.k) LIMIT $1`;
  return { text, values };
}

/** Rows whose key is NULL on either side: no chunk holds them, so they are counted apart (and fail the check). */
export function nullKeyQuery(m: CopyMapping): Query {
  const k = quoteIdent(m.key);
  return {
    text:
      `SELECT (SELECT count(*) FROM ${sourceFrom(m)} WHERE s.${k} IS NULL)::int AS source, ` +
      `(SELECT count(*) FROM ${quoteTable(m.target)} AS t WHERE t.${k} IS NULL)::int AS target`,
    values: [],
  };
}
