// The pure parts of blue-green change capture: how a batch read from the log is reduced before it is applied.
import { claimsOf, segments, stampMicros, type Change } from '../../src/phases/copy/capture-sql';

const change = (
  seq: number,
  op: Change['op'],
  key: string | null,
  stamp = `2026-01-01 00:00:${String(seq % 60).padStart(2, '0')}+00`,
): Change => ({
  seq: String(seq),
  op,
  key,
  stamp,
  origin: 'source',
});

test('per key, the change furthest along the log is kept, even when the batch came in another order', () => {
  const batch = [
    change(10000, 'U', '[1]'),
    change(9999, 'U', '[1]'),
    change(10001, 'D', '[2]'),
    change(9998, 'U', '[2]'),
  ];
  const [seg] = segments(batch);
  expect(seg.truncateFirst).toBe(false);
  expect(seg.changes.map((c) => c.seq).sort()).toEqual(['10000', '10001']);
});

test('per key, the change with the latest stamp is kept, also when an older one came later in the log', () => {
  // A change pumped from a logical slot during the switch to triggers, logged after a newer one the triggers logged.
  const batch = [
    change(7, 'U', '[1]', '2026-01-01 00:00:05.5+00'),
    change(8, 'U', '[1]', '2026-01-01 00:00:05.123456+00'),
    change(9, 'D', '[2]', '2026-01-01 00:00:06+00'),
    change(10, 'U', '[2]', '2026-01-01 00:00:06+00'),
  ];
  const [seg] = segments(batch);
  expect(seg.changes.map((c) => c.seq).sort()).toEqual(['10', '7']);
  expect(stampMicros('2026-01-01 00:00:05.5+00') - stampMicros('2026-01-01 00:00:05.123456+00')).toBe(376544n);
  expect(stampMicros('2026-01-01 05:30:00+05:30')).toBe(stampMicros('2026-01-01 00:00:00+00'));
});

test('a truncate cuts the batch: what came before it is applied, then the table is emptied, then the rest', () => {
  const batch = [change(1, 'U', '[1]'), change(2, 'T', null), change(3, 'U', '[1]'), change(4, 'U', '[2]')];
  const segs = segments(batch);
  expect(segs.map((s) => ({ t: s.truncateFirst, seqs: s.changes.map((c) => c.seq) }))).toEqual([
    { t: false, seqs: ['1'] },
    { t: true, seqs: ['3', '4'] },
  ]);
});

test('keys and stamps travel as the log holds them: a bigint beyond 2^53 and a numeric keep every digit', () => {
  const c = change(5, 'U', '[9007199254740993, 0.10]');
  expect(JSON.parse(claimsOf([c]).replace(/\[9007199254740993, 0.10\]/, '"kept"'))[0].key).toBe('kept');
  expect(claimsOf([c])).toContain('9007199254740993, 0.10');
});
