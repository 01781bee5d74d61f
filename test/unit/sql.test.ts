// SQL builders are pure: exact text for a known mapping, identifiers always quoted, values always parameters.
import { parseDuration, formatDuration } from '../../src/plan/durations';
import { dollarQuote, parseTableRef, quoteIdent, quoteLiteral, quoteTable } from '../../src/db/quote';
import { syncFunctionName, syncIdFor, syncTriggerName } from '../../src/db/names';
import {
  forwardTriggerDdl,
  limitBatchQuery,
  rangeBatchQuery,
  settleQuery,
  type CopyMapping,
} from '../../src/phases/copy/sql';
import { chunkDigestQuery } from '../../src/phases/validate/sql';

const m: CopyMapping = {
  job: 'orders',
  source: { kind: 'table', table: { schema: 'public', name: 'orders' } },
  target: { schema: 'public', name: 'orders_v2' },
  keys: [{ source: 'id', target: 'id', type: 'bigint' }],
  columns: [
    { target: 'id', expr: 'id', type: 'bigint' },
    { target: 'amount', expr: 'amount_cents / 100.0', type: 'numeric(12,2)' },
  ],
  reverse: [],
  writeBack: [],
  syncing: true,
  syncFrom: [],
  slice: [],
};

/** Two tenants' orders into one table: a composite key renamed in the target, and a slice telling the jobs apart. */
const composite: CopyMapping = {
  ...m,
  keys: [
    { source: 'tenant_id', target: 'tenant', type: 'integer' },
    { source: 'id', target: 'legacy_id', type: 'bigint' },
  ],
  columns: [
    { target: 'tenant', expr: '"tenant_id"', type: 'integer' },
    { target: 'legacy_id', expr: '"id"', type: 'bigint' },
    { target: 'kind', expr: "'order'", type: 'text' },
  ],
  slice: [{ column: 'kind', value: "'order'" }],
};

test('identifiers are quoted with doubled quotes, literals with doubled apostrophes', () => {
  expect(quoteIdent('orders')).toBe('"orders"');
  expect(quoteIdent('we"ird')).toBe('"we""ird"');
  expect(quoteTable('sales.Orders')).toBe('"sales"."Orders"');
  expect(parseTableRef('orders')).toEqual({ schema: 'public', name: 'orders' });
  expect(quoteLiteral("it's")).toBe("'it''s'");
  expect(() => quoteIdent('')).toThrow('empty SQL identifier');
});

test('a key-interval batch is one INSERT … SELECT with its bounds as parameters', () => {
  expect(rangeBatchQuery(m, '100', '200', 'fail')).toEqual({
    text: 'INSERT INTO "public"."orders_v2" ("id", "amount") SELECT (id) AS "id", (amount_cents / 100.0) AS "amount" FROM "public"."orders" AS s WHERE s."id" > $1::bigint AND s."id" <= $2::bigint',
    values: ['100', '200'],
  });
  expect(rangeBatchQuery(m, '100', '200', 'nothing').text).toMatch(/ ON CONFLICT \("id"\) DO NOTHING$/);
  expect(rangeBatchQuery(m, '100', '200', 'update').text).toMatch(
    / ON CONFLICT \("id"\) DO UPDATE SET "amount" = EXCLUDED\."amount"$/,
  );
});

test('a limit batch returns its row count and last key; a composite key is compared as a row, in index order', () => {
  const q = limitBatchQuery(m, null, null, 500, 'fail');
  expect(q.values).toEqual([500]);
  expect(q.text).toContain('ORDER BY s."id" LIMIT $1)');
  expect(q.text).toContain(
    '(SELECT (b.__tidemark_k0)::text FROM batch AS b ORDER BY b.__tidemark_k0 DESC LIMIT 1) AS last_key',
  );
  const c = limitBatchQuery(composite, JSON.stringify(['3', '700']), null, 10, 'nothing');
  expect(c.values).toEqual([10, '3', '700']);
  expect(c.text).toContain(
    'WHERE (s."tenant_id", s."id") > ($2::integer, $3::bigint) ORDER BY s."tenant_id", s."id" LIMIT $1',
  );
  expect(c.text).toContain('ON CONFLICT ("kind", "tenant", "legacy_id") DO NOTHING');
  expect(c.text).toContain('json_build_array((b.__tidemark_k0)::text, (b.__tidemark_k1)::text)::text');
});

test("the settle pass deletes the job's target rows whose key the source no longer has", () => {
  expect(settleQuery(m, '0', '10')).toEqual({
    text: 'DELETE FROM "public"."orders_v2" AS t WHERE t."id" > $1::bigint AND t."id" <= $2::bigint AND NOT EXISTS (SELECT 1 FROM (SELECT s."id" FROM "public"."orders" AS s WHERE s."id" > $3::bigint AND s."id" <= $4::bigint) AS src WHERE src."id" = t."id")',
    values: ['0', '10', '0', '10'],
  });
  expect(settleQuery(composite, null, null).text).toBe(
    'DELETE FROM "public"."orders_v2" AS t WHERE t."kind" IS NOT DISTINCT FROM (\'order\') AND NOT EXISTS (SELECT 1 FROM (SELECT s."tenant_id", s."id" FROM "public"."orders" AS s) AS src WHERE src."tenant_id" = t."tenant" AND src."id" = t."legacy_id")',
  );
});

test("sync triggers find the target's rows of deleted keys by one index scan for an integer key, IN (…) otherwise", () => {
  const body = (mapping: CopyMapping) => forwardTriggerDdl({ ...mapping, syncId: 's1' })[0];
  // An integer key: the keys as one sorted array, small enough to build whole in memory.
  expect(body(m)).toContain(
    'DELETE FROM "public"."orders_v2" AS d WHERE d."id" = ANY (ARRAY(SELECT o."id" FROM old_rows AS o WHERE true));',
  );
  // A composite key, or a text one (whose array could outgrow memory): IN (…), which spills to disk.
  expect(body(composite)).toContain(
    'WHERE (d."tenant", d."legacy_id") IN (SELECT o."tenant_id", o."id" FROM old_rows AS o WHERE true)',
  );
  const textKey = { ...m, keys: [{ source: 'id', target: 'id', type: 'text' }] };
  expect(body(textKey)).toContain('WHERE d."id" IN (SELECT o."id" FROM old_rows AS o WHERE true)');
  expect(body(textKey)).not.toContain('ANY (ARRAY(');
});

test('a checksum chunk hashes each row of both sides, the source cast to the target column types', () => {
  const q = chunkDigestQuery(m, { after: '0', upTo: '1000' });
  expect(q.values).toEqual(['0', '1000', '0', '1000']);
  expect(q.text).toContain('hashtextextended(ROW((id)::bigint, (amount_cents / 100.0)::numeric(12,2))::text, 0)');
  expect(q.text).toContain('hashtextextended(ROW(t."id", t."amount")::text, 0)');
});

test("generated names fit PostgreSQL's 63 bytes and stay distinct", () => {
  const long = 'a'.repeat(80);
  const id = syncIdFor('run-1', long);
  expect(Buffer.byteLength(syncTriggerName(long, id, 'forward', 'upd'))).toBeLessThanOrEqual(63);
  expect(syncTriggerName(long, id, 'forward', 'upd')).not.toBe(syncTriggerName(long, id, 'reverse', 'upd'));
  expect(syncTriggerName(long, id, 'forward', 'ins')).not.toBe(syncTriggerName(long, id, 'forward', 'del'));
  expect(syncTriggerName('room-states', 'abc', 'forward', 'ins')).toBe('tidemark_sync_room_states_abc_forward_ins');
});

test('sync objects belong to one job of one run: jobs that slug alike, or share a name across runs, never share one', () => {
  const names = (run: string, job: string) => syncFunctionName(job, syncIdFor(run, job), 'forward');
  expect(names('run-1', 'a-b')).not.toBe(names('run-1', 'a_b'));
  expect(names('run-1', 'orders')).not.toBe(names('run-2', 'orders'));
  expect(names('run-1', 'orders')).toBe(names('run-1', 'orders'));
});

test('a function body is dollar-quoted with a tag it does not contain', () => {
  expect(dollarQuote('BEGIN RETURN NULL; END')).toBe('$tidemark$BEGIN RETURN NULL; END$tidemark$');
  expect(dollarQuote('INSERT INTO "x$tidemark$y" …')).toBe('$tidemark1$INSERT INTO "x$tidemark$y" …$tidemark1$');
  expect(dollarQuote('"$tidemark$" "$tidemark1$"')).toBe('$tidemark2$"$tidemark$" "$tidemark1$"$tidemark2$');
});

test('durations', () => {
  expect(parseDuration('500ms')).toBe(500);
  expect(parseDuration('1h30m')).toBe(5_400_000);
  expect(parseDuration('7d')).toBe(604_800_000);
  expect(parseDuration('10 minutes')).toBeUndefined();
  expect(parseDuration('')).toBeUndefined();
  expect(formatDuration(90_000)).toBe('1m30s');
  expect(formatDuration(86_400_000 * 2)).toBe('2d');
});
