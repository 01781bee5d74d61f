// The copy under live writes: exact through the mapping (EXCEPT both ways), validation passing while writes continue,
// bidirectional sync without ping-pong, a query source merging two tables, and backing off from a held lock.
import { Client } from 'pg';
import { loadPlan } from '../../src/plan/load';
import type { ResolvedPlan } from '../../src/plan/types';
import { exceptBothWays } from '../helpers/db-assert';
import { eventually, Harness, type TestDb } from '../helpers/env';
import { LOOSE_BUDGET, LOOSE_BUDGET_IN_PLAN, meetingsPlan, writePlan } from '../helpers/plans';
import {
  meetingsSourceOps,
  meetingsTargetOps,
  MEETINGS_AS_V2,
  startWorkload,
  V2_COLUMNS,
  type Workload,
} from '../helpers/writers';

const h = new Harness();
beforeAll(() => h.start());
afterAll(() => h.stop());
// Copies under live writers: on a loaded machine they take minutes; the waits fail only when nothing moves.
jest.setTimeout(600_000);

/** The meetings job alone, gated before the copy and before traffic so the test can act at those points. */
async function meetingsOnly(db: TestDb, rows: number, sync: 'forward' | 'bidirectional'): Promise<ResolvedPlan> {
  const base = await meetingsPlan(db, { rows, approvals: ['copy', 'traffic'] });
  const meetings = {
    ...base.copy[0],
    sync,
    batchSize: 500,
    maxBatchSize: 500,
    impact: LOOSE_BUDGET,
    discardNewPathWrites: sync === 'forward',
  };
  return {
    ...base,
    copy: [meetings],
    validate: [{ rowCount: { copy: 'meetings' } }, { checksum: { copy: 'meetings', chunkSize: 2000 } }],
    cleanup: undefined,
  };
}

/** Approval of `gate`, however long a loaded machine takes to get there while the copy keeps moving. */
const waitForGate = (workflowId: string, gate: string) => h.approvalPending(workflowId, gate);

test('INSERT/UPDATE/DELETE on the source throughout copy and validation: target identical through the mapping', async () => {
  const db = await h.db('liveforward');
  const rows = 30_000;
  const plan = await meetingsOnly(db, rows, 'forward');
  const writers = startWorkload(
    db.url,
    meetingsSourceOps(() => rows),
    { opsPerSecond: 300 },
  );
  let stopped: Workload['stats'] | undefined;
  try {
    const { workflowId } = await h.client.start(plan, { autoApprove: false });
    await waitForGate(workflowId, 'copy');
    await h.client.throttle(workflowId, { delayMs: 50 }); // stretch the copy so many writes land during it
    await h.client.approve(workflowId);
    const atTraffic = await waitForGate(workflowId, 'traffic');
    stopped = await writers.stop();

    expect(atTraffic.validation?.ok).toBe(true);
    expect(atTraffic.validation?.checks.map((c) => c.message)[1]).toMatch(/rows identical in \d+ chunks/);
    expect(await exceptBothWays(db, MEETINGS_AS_V2, V2_COLUMNS)).toEqual({ onlyInA: 0, onlyInB: 0 });
    expect(stopped.inserts).toBeGreaterThan(100);
    expect(stopped.updates).toBeGreaterThan(100);
    expect(stopped.deletes).toBeGreaterThan(50);
    expect(stopped.keyChanges).toBeGreaterThan(5);
    await h.client.abort(workflowId, { reason: 'test over' });
    expect((await h.client.waitForEnd(workflowId)).state).toBe('rolled-back');
  } finally {
    if (!stopped) await writers.stop();
  }
});

test('sync: bidirectional with writers on both tables keeps both identical, with no trigger ping-pong', async () => {
  const db = await h.db('livebidi');
  const rows = 20_000;
  const plan = await meetingsOnly(db, rows, 'bidirectional');
  const onSource = startWorkload(
    db.url,
    meetingsSourceOps(() => rows),
    { opsPerSecond: 150, seed: 1 },
  );
  let onTarget: Workload | undefined;
  try {
    const { workflowId } = await h.client.start(plan, { autoApprove: false });
    await waitForGate(workflowId, 'copy');
    await h.client.throttle(workflowId, { delayMs: 50 });
    await h.client.approve(workflowId);
    // The new path takes writes once the copy phase has installed the sync triggers (as a rollout would).
    await eventually(
      async () => (await h.client.status(workflowId)).copy[0]?.rowsCopied > 0,
      'the copy to start',
      60_000,
      50,
    );
    onTarget = startWorkload(
      db.url,
      meetingsTargetOps(() => rows),
      { opsPerSecond: 150, seed: 2 },
    );
    const atTraffic = await waitForGate(workflowId, 'traffic');
    // Writers keep going on both paths for a while after validation, as during a 50 % rollout: counted, not timed.
    const writes = (w: Workload) => w.stats.inserts + w.stats.updates + w.stats.deletes;
    const both = onTarget;
    const [sourceBefore, targetBefore] = [writes(onSource), writes(both)];
    await eventually(
      async () => writes(onSource) >= sourceBefore + 50 && writes(both) >= targetBefore + 50,
      '50 more writes on each path',
      120_000,
      50,
    );
    const s1 = await onSource.stop();
    const s2 = await onTarget.stop();

    expect(atTraffic.validation?.ok).toBe(true);
    expect(await exceptBothWays(db, MEETINGS_AS_V2, V2_COLUMNS)).toEqual({ onlyInA: 0, onlyInB: 0 });
    expect(s1.inserts + s1.updates + s1.deletes).toBeGreaterThan(200);
    expect(s2.inserts + s2.updates + s2.deletes).toBeGreaterThan(200);
    await h.client.abort(workflowId, { reason: 'test over' });
    await h.client.waitForEnd(workflowId);
  } finally {
    await onSource.stop().catch(() => undefined);
    await onTarget?.stop().catch(() => undefined);
  }
});

test('a query source merging two tables copies exactly, and replays writes to either table', async () => {
  const db = await h.db('querymerge');
  await db.query(`
    CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, email text NOT NULL);
    CREATE TABLE profiles (user_id bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE, bio text, country text);
    INSERT INTO users SELECT g, 'user ' || g, 'u' || g || '@example.com' FROM generate_series(1, 20000) g;
    INSERT INTO profiles SELECT g, 'bio ' || g, (ARRAY['VN', 'ID', 'DE', 'BR'])[1 + g % 4] FROM generate_series(1, 20000) g WHERE g % 10 <> 0;`);
  const file = writePlan(
    {
      name: 'merge-accounts',
      database: { urlEnv: db.urlEnv },
      backup: { enabled: false },
      schema: [{ id: '001_accounts', up: 'up.sql', down: 'down.sql' }],
      approvals: ['copy', 'traffic'],
      copy: [
        {
          name: 'accounts',
          query: 'SELECT u.id, u.name, u.email, p.bio, p.country FROM users u JOIN profiles p ON p.user_id = u.id',
          to: 'accounts',
          key: 'id',
          columns: { id: 'id', display_name: 'name', email: 'lower(email)', bio: 'bio', country: 'country' },
          sync: 'forward',
          discardNewPathWrites: true,
          syncFrom: [
            { table: 'users', key: 'id' },
            { table: 'profiles', key: 'user_id' },
          ],
          batchSize: 500,
          maxBatchSize: 500,
          impact: LOOSE_BUDGET_IN_PLAN,
        },
      ],
      traffic: { flag: 'use_accounts', stages: [{ percent: 100, soak: '1s' }] },
    },
    {
      'up.sql':
        'CREATE TABLE accounts (id bigint PRIMARY KEY, display_name text NOT NULL, email text NOT NULL, bio text, country text);',
      'down.sql': 'DROP TABLE IF EXISTS accounts;',
    },
  );
  const plan = loadPlan(file);
  const ops = [
    async (pool: import('pg').Pool, rnd: () => number) => {
      await pool.query(`UPDATE users SET name = $1 WHERE id = $2`, [`renamed ${rnd()}`, 1 + Math.floor(rnd() * 20000)]);
    },
    async (pool: import('pg').Pool, rnd: () => number) => {
      await pool.query(`UPDATE profiles SET bio = $1 WHERE user_id = $2`, [
        `bio ${rnd()}`,
        1 + Math.floor(rnd() * 20000),
      ]);
    },
    async (pool: import('pg').Pool, rnd: () => number) => {
      // A user without a profile gains one: the merged row appears.
      const id = 10 * (1 + Math.floor(rnd() * 1999));
      // (only if the user still exists: another writer may have deleted it)
      await pool.query(
        `INSERT INTO profiles SELECT id, 'late profile', 'VN' FROM users WHERE id = $1 ON CONFLICT DO NOTHING`,
        [id],
      );
    },
    async (pool: import('pg').Pool, rnd: () => number) => {
      await pool.query(`DELETE FROM users WHERE id = $1`, [1 + Math.floor(rnd() * 20000)]);
    },
  ];
  const writers = startWorkload(db.url, ops, { opsPerSecond: 200 });
  let done = false;
  try {
    const { workflowId } = await h.client.start(plan, { autoApprove: false });
    await waitForGate(workflowId, 'copy');
    await h.client.throttle(workflowId, { delayMs: 40 });
    await h.client.approve(workflowId);
    const atTraffic = await waitForGate(workflowId, 'traffic');
    await writers.stop();
    done = true;
    expect(atTraffic.validation?.ok).toBe(true);
    expect(
      await exceptBothWays(
        db,
        'SELECT u.id, u.name, lower(u.email), p.bio, p.country FROM users u JOIN profiles p ON p.user_id = u.id',
        'SELECT id, display_name, email, bio, country FROM accounts',
      ),
    ).toEqual({ onlyInA: 0, onlyInB: 0 });
    await h.client.approve(workflowId);
    expect((await h.client.waitForEnd(workflowId)).state).toBe('completed');
  } finally {
    if (!done) await writers.stop();
  }
});

test('a lock held on a source row makes the copy back off and say why; it finishes once the lock is gone', async () => {
  const db = await h.db('lockwait');
  const base = await meetingsPlan(db, { rows: 20_000, approvals: ['copy'] });
  const plan = {
    ...base,
    lockTimeout: 500,
    copy: [{ ...base.copy[0], batchSize: 500, maxBatchSize: 500, impact: LOOSE_BUDGET }],
    validate: [{ rowCount: { copy: 'meetings' } }],
    traffic: undefined,
    cleanup: undefined,
  };
  const { workflowId } = await h.client.start(plan, { autoApprove: false });
  await waitForGate(workflowId, 'copy');
  await h.client.throttle(workflowId, { delayMs: 300 });
  await h.client.approve(workflowId);
  // Take the lock once the copy runs (before, it would hold up installing the sync triggers instead).
  await eventually(
    async () => (await h.client.status(workflowId)).copy[0]?.rowsCopied > 0,
    'the copy to start',
    60_000,
    50,
  );
  const holder = new Client({ connectionString: db.url });
  await holder.connect();
  try {
    await holder.query('BEGIN');
    await holder.query(`UPDATE meetings SET title = 'held' WHERE id = 14600`);
    // A count of conflicts, not the current throttle reason: another reason (a busy server) can replace that at any time.
    const throttled = await eventually(
      async () => {
        const s = await h.client.status(workflowId);
        return s.copy[0]?.lockConflicts > 0 ? s : undefined;
      },
      'the copy to report the lock conflict',
      120_000,
    );
    expect(throttled.copy[0].lastLockConflict).toMatch(/^lock conflict \(55P03\); retrying with \d+ rows$/);
    expect(throttled.copy[0].rowsCopied).toBeLessThan(14600);
  } finally {
    await holder.query('COMMIT');
    await holder.end();
  }
  const final = await h.client.waitForEnd(workflowId);
  expect(final.state).toBe('completed');
  expect(await exceptBothWays(db, MEETINGS_AS_V2, V2_COLUMNS)).toEqual({ onlyInA: 0, onlyInB: 0 });
});
