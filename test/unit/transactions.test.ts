// Waiting for other sessions' transactions to end (the settle pass of a copy): a transaction is its session and its
// start, so a session that went on to another transaction no longer holds the wait; a prepared one is its global id.
import type { Pool } from 'pg';
import { describeTransactions, transactionsEnded, type OpenTransaction } from '../../src/db/transactions';

const tx = (pid: number | null, since: string, name = 'app', state = 'idle in transaction'): OpenTransaction => ({
  pid,
  since,
  state: pid === null ? 'prepared' : state,
  name,
});

/** A database whose pg_stat_activity shows each of `looks` in turn (the last one from then on). */
function fakeDb(looks: OpenTransaction[][]): { db: Pool; looked: () => number } {
  let n = 0;
  const db = { query: async () => ({ rows: looks[Math.min(n++, looks.length - 1)] }) } as unknown as Pool;
  return { db, looked: () => n };
}

test('the wait lasts while one of the transactions is open, and not for the ones that began after', async () => {
  const waitFor = [tx(10, 't1'), tx(11, 't1'), tx(null, 't0', 'gid-1')];
  const { db, looked } = fakeDb([
    // Session 10 went on to another transaction; 11 is still in its own; the prepared one is there; 12 is new.
    [tx(10, 't2'), tx(11, 't1'), tx(null, 't0', 'gid-1'), tx(12, 't1')],
    // 11 ended; the prepared transaction is still there.
    [tx(10, 't3'), tx(null, 't0', 'gid-1'), tx(12, 't1')],
    // Only transactions that began later remain.
    [tx(10, 't3'), tx(null, 't5', 'gid-2'), tx(12, 't1')],
  ]);
  const heard: number[][] = [];
  await transactionsEnded(
    db,
    waitFor,
    (open) => heard.push(open.map((t) => t.pid ?? -1)),
    async () => {
      if (looked() > 10) throw new Error('still waiting after 10 looks');
    },
  );
  expect(heard).toEqual([[11, -1], [-1]]);
  expect(looked()).toBe(3);
});

test('nothing open: no wait at all', async () => {
  const { db, looked } = fakeDb([[tx(1, 't1')]]);
  await transactionsEnded(
    db,
    [],
    () => undefined,
    async () => undefined,
  );
  expect(looked()).toBe(0);
});

test('what status says: sessions by pid and application, prepared ones by global id, at most five', () => {
  expect(describeTransactions([tx(4242, '2026-11-30 10:00:00+00'), tx(null, '2026-11-30 09:00:00+00', 'g1')])).toBe(
    'pid 4242 (app, idle in transaction since 2026-11-30 10:00:00+00), prepared transaction g1 (since 2026-11-30 09:00:00+00)',
  );
  const many = Array.from({ length: 7 }, (_, i) => tx(i + 1, 't', ''));
  expect(describeTransactions(many)).toBe(
    'pid 1 (idle in transaction since t), pid 2 (idle in transaction since t), pid 3 (idle in transaction since t), ' +
      'pid 4 (idle in transaction since t), pid 5 (idle in transaction since t), 2 more',
  );
});
