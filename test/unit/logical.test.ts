// Reading logical decoding's output (the test_decoding plugin): what the slot says becomes the changes tidemark logs.
import { commitTime, parseChange, UNCHANGED } from '../../src/phases/copy/logical';

test('an insert: quoted and bare values, NULL, quotes inside text, bit strings, array types', () => {
  const c = parseChange(
    `table public.items: INSERT: id[bigint]:5 note[text]:'it''s ''quoted''' gone[text]:null tags[text[]]:'{a,"b c"}' flags[bit(3)]:B'101' ok[boolean]:true`,
  );
  expect(c).toEqual({
    table: { schema: 'public', name: 'items' },
    op: 'INSERT',
    tuple: new Map<string, unknown>([
      ['id', '5'],
      ['note', "it's 'quoted'"],
      ['gone', null],
      ['tags', '{a,"b c"}'],
      ['flags', '101'],
      ['ok', 'true'],
    ]),
  });
});

test('quoted identifiers: a schema, a table and a column that need quotes', () => {
  const c = parseChange(`table "Sales"."order ""lines""": DELETE: "Line Id"[integer]:7`);
  expect(c.table).toEqual({ schema: 'Sales', name: 'order "lines"' });
  expect(c.op).toBe('DELETE');
  expect([...c.tuple!]).toEqual([['Line Id', '7']]);
});

test('an update that changed the key: the old key, then the new row; an unchanged TOASTed value is marked', () => {
  const c = parseChange(
    `table public.ledger: UPDATE: old-key: tenant[text]:'t2' id[bigint]:5 new-tuple: tenant[text]:'t2' id[bigint]:1000677 blob[text]:unchanged-toast-datum note[character varying(20)]:'a b'`,
  );
  expect([...c.oldKey!]).toEqual([
    ['tenant', 't2'],
    ['id', '5'],
  ]);
  expect([...c.tuple!]).toEqual([
    ['tenant', 't2'],
    ['id', '1000677'],
    ['blob', UNCHANGED],
    ['note', 'a b'],
  ]);
});

test('a truncate, a delete without a replica identity, and the commit time', () => {
  expect(parseChange('table public.items: TRUNCATE: (no-flags)')).toEqual({
    table: { schema: 'public', name: 'items' },
    op: 'TRUNCATE',
  });
  expect(parseChange('table public.items: DELETE: (no-tuple-data)').tuple).toBeUndefined();
  expect(commitTime('COMMIT (at 2026-11-29 21:36:05.072418+00)')).toBe('2026-11-29 21:36:05.072418+00');
  expect(commitTime('COMMIT 1234 (at 2026-11-29 21:36:05+05:30)')).toBe('2026-11-29 21:36:05+05:30');
  expect(commitTime('BEGIN')).toBeUndefined();
});
