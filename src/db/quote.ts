// The one place SQL identifiers are quoted; every name tidemark puts into SQL text goes through here.

/** Quotes one identifier: wraps it in double quotes and doubles any embedded quote. */
export function quoteIdent(name: string): string {
  if (name.length === 0) throw new Error('empty SQL identifier');
  if (name.includes('\0')) throw new Error('SQL identifier contains a NUL byte');
  return '"' + name.replace(/"/g, '""') + '"';
}

/** A table reference as written in a plan: `name` or `schema.name`. */
export interface TableRef {
  schema: string;
  name: string;
}

/** Splits `schema.table` (or `table`, meaning schema `public`) into its parts. */
export function parseTableRef(ref: string, defaultSchema = 'public'): TableRef {
  const parts = ref.split('.');
  if (parts.length === 1) return { schema: defaultSchema, name: parts[0] };
  if (parts.length === 2) return { schema: parts[0], name: parts[1] };
  throw new Error(`bad table reference "${ref}": expected table or schema.table`);
}

/** Quotes a schema-qualified table reference. */
export function quoteTable(ref: TableRef | string): string {
  const t = typeof ref === 'string' ? parseTableRef(ref) : ref;
  return `${quoteIdent(t.schema)}.${quoteIdent(t.name)}`;
}

/**
 * Dollar-quotes a function body with a tag the body does not contain. Identifiers can hold any text, so no fixed tag
 * is safe: a column named `x$tidemark$y` would end a `$tidemark$` body early.
 */
export function dollarQuote(body: string): string {
  let tag = '$tidemark$';
  for (let n = 1; body.includes(tag); n++) tag = `$tidemark${n}$`;
  return `${tag}${body}${tag}`;
}

/** Quotes a string as an SQL literal; only for places where a parameter cannot go (DDL, trigger bodies). */
export function quoteLiteral(value: string): string {
  if (value.includes('\0')) throw new Error('SQL literal contains a NUL byte');
  return "'" + value.replace(/'/g, "''") + "'";
}
