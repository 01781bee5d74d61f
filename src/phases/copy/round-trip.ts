// Whether a row written back gives the old table what it had. A sample of the old table's rows is mapped forward into
// the target's column types, then back through `reverse`, and compared with itself. A lossy reverse (`amount_milli /
// 1000` into an integer, a target column with fewer decimals) changes an old row each time the application writes its
// new row, in columns that write never touched, and a rollback keeps what it changed. Said as a warning, not a
// failure: a reverse may normalise on purpose (lower-casing a status).
//
// Three reads, values passed between them as text (as the copy across databases passes them): the forward images and
// the old values on the source, the reverse images on the target, the comparison on the source. Within one database the two sides are
// one session, inside the caller's transaction (each read behind a savepoint). Nothing is written.
import type { PoolClient } from 'pg';
import { tableColumns } from '../../db/catalog';
import { isConnectionLoss, isLockConflict } from '../../db/errors';
import { inSavepoint } from '../../db/tx';
import { quoteIdent, quoteTable } from '../../db/quote';
import type { CopyMapping } from './sql';

/** How many rows of the old table the round trip is tried on. */
export const ROUND_TRIP_SAMPLE = 1000;

interface Side {
  c: PoolClient;
  /** Inside a transaction: a failed read must not abort it. */
  inTransaction: boolean;
}

/** One read; undefined when it fails on the mapping's own terms (not a lock conflict or a lost connection). */
async function read(side: Side, text: string, values: unknown[] = []): Promise<Record<string, unknown>[] | undefined> {
  const query = async () => (await side.c.query(text, values)).rows as Record<string, unknown>[];
  try {
    return await (side.inTransaction ? inSavepoint(side.c, query) : query());
  } catch (e) {
    if (isLockConflict(e) || isConnectionLoss(e)) throw e;
    return undefined;
  }
}

/** The first of `texts` that reads; undefined when none does. */
async function firstRead(
  side: Side,
  texts: string[],
  values: unknown[],
): Promise<Record<string, unknown>[] | undefined> {
  for (const text of texts) {
    const rows = await read(side, text, values);
    if (rows) return rows;
  }
  return undefined;
}

/**
 * The round trip of `m` (a table source with `reverse`): a warning naming what would change, or undefined when every
 * sampled row comes back as it was, or when it cannot be tried (a reverse reading a target column the mapping does not
 * fill, a value with no text form the other side reads): the sync probe's writes say whether the sync works at all.
 * `target` is the source's own session within one database.
 */
export async function reverseRoundTrip(
  m: CopyMapping,
  source: Side,
  target: Side = source,
): Promise<string | undefined> {
  if (m.source.kind !== 'table') return undefined;
  const table = m.source.table;
  const types = new Map((await tableColumns(source.c, table)).map((col) => [col.name, col.type]));
  const back = m.reverse.filter((r) => types.has(r.source));
  const keys = m.keys.map((k) => ({ name: k.source, type: types.get(k.source) }));
  if (!back.length || keys.some((k) => !k.type)) return undefined;
  const n = (prefix: string, count: number) => Array.from({ length: count }, (_, i) => `${prefix}${i}`);
  const [kCols, fCols, oCols, rCols] = [
    n('k', keys.length),
    n('f', m.columns.length),
    n('o', back.length),
    n('r', back.length),
  ];

  // 1. The forward images, as the target's column types print them (cast on the source when the type exists there),
  // with the old values they came from: compared with those, not with the row read again, which the application may
  // have written meanwhile.
  const forward = (cast: boolean) =>
    `SELECT ${keys.map((k, i) => `s.${quoteIdent(k.name)}::text AS ${kCols[i]}`).join(', ')},
            ${m.columns.map((c, i) => `(${cast ? `(${c.expr})::${c.type}` : `(${c.expr})`})::text AS ${fCols[i]}`).join(', ')},
            ${back.map((r, i) => `s.${quoteIdent(r.source)}::text AS ${oCols[i]}`).join(', ')}
       FROM ${quoteTable(table)} AS s LIMIT ${ROUND_TRIP_SAMPLE}`;
  const sample = await firstRead(source, [forward(true), forward(false)], []);
  if (!sample?.length) return undefined;
  const column = (rows: Record<string, unknown>[], col: string) => rows.map((r) => r[col] as string | null);

  // 2. The reverse images, on the target: its row rebuilt from the forward images, `reverse` evaluated over it.
  const params = (cols: string[], rows: Record<string, unknown>[]) => cols.map((col) => column(rows, col));
  const unnest = (cols: string[], alias: string) =>
    `unnest(${cols.map((_, i) => `$${i + 1}::text[]`).join(', ')}) AS ${alias}(${cols.join(', ')})`;
  const rebuilt =
    `SELECT ${kCols.map((k) => `u.${k} AS __tidemark_${k}`).join(', ')}, ` +
    `${m.columns.map((c, i) => `u.${fCols[i]}::${c.type} AS ${quoteIdent(c.target)}`).join(', ')} ` +
    `FROM ${unnest([...kCols, ...fCols], 'u')}`;
  const reversed = await read(
    target,
    `SELECT ${kCols.map((k) => `s.__tidemark_${k} AS ${k}`).join(', ')},
            ${back.map((r, i) => `((${r.expr}))::text AS ${rCols[i]}`).join(', ')}
       FROM (${rebuilt}) AS s`,
    params([...kCols, ...fCols], sample),
  );
  if (!reversed) return undefined;

  // 3. The comparison, on the source: each reverse image and its old value read as the old column's type.
  const rowKey = (r: Record<string, unknown>) => JSON.stringify(kCols.map((k) => r[k]));
  const olds = new Map(sample.map((r) => [rowKey(r), r]));
  const pairs = reversed.flatMap((r) => {
    const o = olds.get(rowKey(r));
    return o ? [{ ...o, ...r }] : [];
  });
  const typed = (col: string, i: number) => `b.${col}::${types.get(back[i].source)}`;
  const differs = (i: number, asText: boolean) =>
    asText
      ? `(${typed(rCols[i], i)})::text IS DISTINCT FROM b.${oCols[i]}`
      : `${typed(rCols[i], i)} IS DISTINCT FROM ${typed(oCols[i], i)}`;
  const compare = (asText: boolean) =>
    `SELECT ${kCols.map((k) => `b.${k}`).join(', ')},
            ${back.map((_, i) => `${differs(i, asText)} AS d${i}, b.${oCols[i]} AS o${i}, b.${rCols[i]} AS b${i}`).join(', ')}
       FROM ${unnest([...kCols, ...oCols, ...rCols], 'b')}
      WHERE ${back.map((_, i) => differs(i, asText)).join(' OR ')}`;
  // A column type without equality (json, point) is compared as text.
  const changed = await firstRead(
    source,
    [compare(false), compare(true)],
    params([...kCols, ...oCols, ...rCols], pairs),
  );
  if (!changed?.length) return undefined;

  const shown = (v: unknown) => (v === null ? 'NULL' : JSON.stringify(String(v).slice(0, 60)));
  const keyOf = (r: Record<string, unknown>) => kCols.map((k) => String(r[k])).join(', ');
  const parts = back.flatMap((r, i) => {
    const hit = changed.filter((x) => x[`d${i}`]);
    if (!hit.length) return [];
    const e = hit[0];
    return [
      `${quoteIdent(r.source)} on ${hit.length} (key ${keyOf(e)}: ${shown(e[`o${i}`])} comes back ${shown(e[`b${i}`])})`,
    ];
  });
  return (
    `written back, ${changed.length} of ${sample.length} sampled row(s) of ${quoteTable(table)} would change: ` +
    `${parts.join('; ')}. Each application write on the new path rewrites its old row this way, and a rollback keeps ` +
    `it: make reverse give the old values back, or accept the change`
  );
}
