// The copy's latency budget on a real server: while other sessions are busy the copy shares the server, measures its
// committing probe quiet and while copying, and says in status (text and JSON) what share of the time the plan's
// budget lets it take; once the others are gone it copies flat out again and ends exact. The same for the copy across
// two databases, whose application is on the source.
import { Client } from 'pg';
import { BLUE_CAMERAS_AS_GREEN, blueGreenPlan, exceptAcross, GREEN_CAMERAS, seedBlue } from '../helpers/blue-green';
import { exceptBothWays } from '../helpers/db-assert';
import type { ResolvedPlan } from '../../src/plan/types';
import { eventually, Harness, type TestDb } from '../helpers/env';
import { runCli } from '../helpers/cli';
import { meetingsPlan } from '../helpers/plans';
import { MEETINGS_AS_V2, V2_COLUMNS } from '../helpers/writers';

const h = new Harness();
beforeAll(() => h.start());
afterAll(() => h.stop());
jest.setTimeout(600_000);

const READING =
  /^sharing the server with ~[\d.]+ busy session\(s\): copying \d+% of the time: probe p90 [\d.]+ms vs [\d.]+ms quiet \([+-]?\d+%, budget \+50%(, over: slowing down)?\)$/;

/** The same beside sessions that are light (rarely caught at work): the share then grows faster (budget.ts). */
const LIGHT_READING =
  /^sharing the server with ~[\d.]+ busy session\(s\), light: copying \d+% of the time: probe p90 [\d.]+ms vs [\d.]+ms quiet \([+-]?\d+%, budget \+50%(, over: slowing down)?\)$/;

/** Two sessions of "the application" inside open transactions on `db`: busy, as far as the throttler can tell. */
async function busyApplication(db: TestDb): Promise<{ end(): Promise<void> }> {
  const app = [new Client({ connectionString: db.url }), new Client({ connectionString: db.url })];
  for (const c of app) {
    await c.connect();
    await c.query('BEGIN');
    await c.query('SELECT 1');
  }
  return { end: async () => void (await Promise.all(app.map((c) => c.end().catch(() => undefined)))) };
}

type CopyStatus = Awaited<ReturnType<typeof h.client.status>>['copy'][number];

/**
 * A light application on `db`: one session running a trivial query every 100 ms, as a monitoring poller does. Busy as
 * far as the throttler can tell (it was idle for less than a second at every look), but rarely caught at work.
 */
async function lightApplication(db: TestDb): Promise<{ end(): Promise<void> }> {
  const c = new Client({ connectionString: db.url, application_name: 'poller' });
  await c.connect();
  let stopped = false;
  const polling = (async () => {
    while (!stopped) {
      await c.query('SELECT count(*) FROM pg_stat_activity');
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  return {
    end: async () => {
      stopped = true;
      await polling.catch(() => undefined);
      await c.end().catch(() => undefined);
    },
  };
}

/**
 * Starts `plan` (which waits for approval of the copy) while `db`'s application (busy by default) runs, lets the copy
 * run in small batches with a pause between them, so that it is still running when what the test waits for comes,
 * waits until `job`'s status shows `what` (`until`), and checks it. Then lets it finish; returns the migration's
 * final status.
 */
async function runWhileShared(
  plan: ResolvedPlan,
  db: TestDb,
  job: string,
  what: string,
  until: (c: CopyStatus) => boolean,
  check: (c: CopyStatus) => void,
  application = busyApplication,
) {
  const { workflowId } = await h.client.start(plan, { autoApprove: false });
  const app = await application(db);
  try {
    await h.approvalPending(workflowId, 'copy');
    await h.client.throttle(workflowId, { batchSize: 100, delayMs: 50 });
    await h.client.approve(workflowId);
    const seen = await eventually(
      async () => {
        const c = (await h.client.status(workflowId)).copy.find((x) => x.job === job);
        return c && until(c) ? c : undefined;
      },
      what,
      180_000,
    );
    check(seen);
  } finally {
    await app.end();
  }
  await h.client.throttle(workflowId, { batchSize: null, delayMs: 0 });
  const final = await h.client.waitForEnd(workflowId);
  expect(final.state).toBe('completed');
  return final;
}

const ROWS = 30_000;

/** The meetings copy alone (ROWS rows, waiting for approval of the copy) under the budget `maxLatencyIncrease`. */
async function meetingsCopy(db: TestDb, maxLatencyIncrease: number | 'unlimited'): Promise<ResolvedPlan> {
  const base = await meetingsPlan(db, { rows: ROWS, approvals: ['copy'] });
  return {
    ...base,
    copy: [{ ...base.copy[0], impact: { maxLatencyIncrease } }],
    validate: [{ rowCount: { copy: 'meetings' } }],
    traffic: undefined,
    cleanup: undefined,
  };
}

/**
 * The budget's first reading: a quiet window and sixteen probes, about six seconds after the copy starts to share.
 * The duty is within its bounds and status says what was measured against what.
 */
const measuresTheBudget = [
  'the budget to measure the latency while copying',
  (c: CopyStatus) => c.latencyIncrease !== undefined,
  (c: CopyStatus) => {
    expect(c.duty).toBeGreaterThanOrEqual(0.02);
    expect(c.duty).toBeLessThanOrEqual(1);
    expect(c.throttleReason).toMatch(READING);
  },
] as const;

test('sharing the server, the copy reports the duty its latency budget allows and what it measured', async () => {
  const db = await h.db('budget');
  const plan = await meetingsCopy(db, 0.5);
  const final = await runWhileShared(plan, db, 'meetings', ...measuresTheBudget);
  expect(final.copy[0]).toMatchObject({ rowsCopied: ROWS, done: true });
  expect(await exceptBothWays(db, MEETINGS_AS_V2, V2_COLUMNS)).toEqual({ onlyInA: 0, onlyInB: 0 });
});

test('beside a light application the copy still shares the server, and says the sessions are light', async () => {
  const db = await h.db('budget_light');
  const plan = await meetingsCopy(db, 0.5);
  const final = await runWhileShared(
    plan,
    db,
    'meetings',
    'the budget to measure the latency beside the light application',
    (c) => c.latencyIncrease !== undefined,
    (c) => {
      expect(c.duty).toBeGreaterThanOrEqual(0.02);
      expect(c.duty).toBeLessThanOrEqual(1);
      expect(c.throttleReason).toMatch(LIGHT_READING);
    },
    lightApplication,
  );
  expect(final.copy[0]).toMatchObject({ rowsCopied: ROWS, done: true });
  expect(await exceptBothWays(db, MEETINGS_AS_V2, V2_COLUMNS)).toEqual({ onlyInA: 0, onlyInB: 0 });
});

test('across two databases, the copy holds the budget on the source, where the application is', async () => {
  const blue = await h.db('budget_blue');
  const green = await h.db('budget_green');
  await seedBlue(blue, 20_000);
  const base = blueGreenPlan(blue, green, { stages: [{ percent: 100, soak: 100 }] });
  const plan = {
    ...base,
    approvals: ['copy' as const],
    copy: base.copy.map((j) => ({ ...j, impact: { maxLatencyIncrease: 0.5 } })),
  };
  await runWhileShared(plan, blue, 'cameras', ...measuresTheBudget);
  expect(await exceptAcross(blue, BLUE_CAMERAS_AS_GREEN, green, GREEN_CAMERAS)).toEqual({ onlyInA: [], onlyInB: [] });
});

test("an unlimited budget: busy sessions do not hold the copy back (only the operator's delay does)", async () => {
  const db = await h.db('budget_unlimited');
  const plan = await meetingsCopy(db, 'unlimited');
  // The throttler looks before the first batch, and two sessions in open transactions count as busy at once: under a
  // budget the first heartbeat would already show a duty (10 % until measured).
  const final = await runWhileShared(
    plan,
    db,
    'meetings',
    'the copy to report progress while the application is busy',
    (c) => c.rowsCopied >= 1000,
    (c) => {
      expect(c.duty).toBeUndefined();
      expect(c.throttleReason).toBe('operator delay 50ms');
    },
  );
  expect(final.copy[0]).toMatchObject({ rowsCopied: ROWS, done: true });
  expect(await exceptBothWays(db, MEETINGS_AS_V2, V2_COLUMNS)).toEqual({ onlyInA: 0, onlyInB: 0 });
});

test("the operator lifts the latency budget of a running copy (throttle --max-latency-increase unlimited), then gives the plan's back", async () => {
  const db = await h.db('budget_operator');
  const plan = await meetingsCopy(db, 0.5);
  const { workflowId } = await h.client.start(plan, { autoApprove: false });
  const app = await busyApplication(db);
  const copyOf = async () => (await h.client.status(workflowId)).copy.find((x) => x.job === 'meetings');
  try {
    await h.approvalPending(workflowId, 'copy');
    await h.client.throttle(workflowId, { batchSize: 100, delayMs: 50 });
    await h.client.approve(workflowId);
    await eventually(
      async () => (await copyOf())?.throttleReason?.match(READING),
      'the copy to share the server',
      180_000,
    );

    // As an operator would, through the command line: the application is still busy.
    const lifted = await runCli(['throttle', workflowId, '--max-latency-increase', 'unlimited', '--json']);
    expect(lifted.stderr).toBe('');
    expect(JSON.parse(lifted.stdout).message).toBe('batch size 100, delay 50ms, latency budget unlimited');
    const free = await eventually(
      async () => {
        const c = await copyOf();
        return c?.throttleReason === 'operator delay 50ms' ? c : undefined;
      },
      'the copy to stop sharing',
      120_000,
    );
    expect(free.duty).toBeUndefined();
    expect((await runCli(['status', workflowId])).stdout).toContain(
      "throttle: batch size 100, delay 50ms, latency budget unlimited (the operator's)",
    );
    const bad = await runCli(['throttle', workflowId, '--max-latency-increase', 'fast']);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain('--max-latency-increase must be a percentage from 1% to 1000%, unlimited or plan');

    const back = await runCli(['throttle', workflowId, '--max-latency-increase', 'plan', '--json']);
    expect(JSON.parse(back.stdout).message).toBe("batch size 100, delay 50ms, the plan's latency budget");
    await eventually(async () => (await copyOf())?.throttleReason?.match(READING), 'the copy to share again', 120_000);
  } finally {
    await app.end();
  }
  await h.client.throttle(workflowId, { batchSize: null, delayMs: 0 });
  const final = await h.client.waitForEnd(workflowId);
  expect(final.state).toBe('completed');
  expect(final.copy[0]).toMatchObject({ rowsCopied: ROWS, done: true });
  expect(await exceptBothWays(db, MEETINGS_AS_V2, V2_COLUMNS)).toEqual({ onlyInA: 0, onlyInB: 0 });
});
