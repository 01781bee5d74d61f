// The copy's latency budget on a real server: while other sessions are busy the copy shares the server, measures its
// committing probe quiet and while copying, and says in status (text and JSON) what share of the time the plan's
// budget lets it take; once the others are gone it copies flat out again and ends exact. The same for the copy across
// two databases, whose application is on the source.
import { Client } from 'pg';
import { BLUE_CAMERAS_AS_GREEN, blueGreenPlan, exceptAcross, GREEN_CAMERAS, seedBlue } from '../helpers/blue-green';
import { exceptBothWays } from '../helpers/db-assert';
import type { ResolvedPlan } from '../../src/plan/types';
import { eventually, Harness, type TestDb } from '../helpers/env';
import { meetingsPlan } from '../helpers/plans';
import { MEETINGS_AS_V2, V2_COLUMNS } from '../helpers/writers';

const h = new Harness();
beforeAll(() => h.start());
afterAll(() => h.stop());
jest.setTimeout(600_000);

const READING =
  /^sharing the server with ~[\d.]+ busy session\(s\): copying \d+% of the time: probe p90 [\d.]+ms vs [\d.]+ms quiet \([+-]?\d+%, budget \+50%(, over: slowing down)?\)$/;

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

/**
 * Starts `plan` (which waits for approval of the copy) while `db`'s application is busy, lets the copy run in small
 * batches with a pause between them, so that it is still running when the first reading comes (a quiet window and
 * sixteen probes, about six seconds after it starts to share), and checks what `job` reports: a duty within its
 * bounds and the budget's reading. Then lets it finish; returns the migration's final status.
 */
async function runWhileShared(plan: ResolvedPlan, db: TestDb, job: string) {
  const { workflowId } = await h.client.start(plan, { autoApprove: false });
  const app = await busyApplication(db);
  try {
    await h.approvalPending(workflowId, 'copy');
    await h.client.throttle(workflowId, { batchSize: 100, delayMs: 50 });
    await h.client.approve(workflowId);
    const measured = await eventually(
      async () => {
        const c = (await h.client.status(workflowId)).copy.find((x) => x.job === job);
        return c?.latencyIncrease !== undefined ? c : undefined;
      },
      'the budget to measure the latency while copying',
      180_000,
    );
    expect(measured.duty).toBeGreaterThanOrEqual(0.02);
    expect(measured.duty).toBeLessThanOrEqual(1);
    expect(measured.throttleReason).toMatch(READING);
  } finally {
    await app.end();
  }
  await h.client.throttle(workflowId, { batchSize: null, delayMs: 0 });
  const final = await h.client.waitForEnd(workflowId);
  expect(final.state).toBe('completed');
  return final;
}

test('sharing the server, the copy reports the duty its latency budget allows and what it measured', async () => {
  const db = await h.db('budget');
  const rows = 30_000;
  const base = await meetingsPlan(db, { rows, approvals: ['copy'] });
  const plan = {
    ...base,
    copy: [{ ...base.copy[0], impact: { maxLatencyIncrease: 0.5 } }],
    validate: [{ rowCount: { copy: 'meetings' } }],
    traffic: undefined,
    cleanup: undefined,
  };
  const final = await runWhileShared(plan, db, 'meetings');
  expect(final.copy[0]).toMatchObject({ rowsCopied: rows, done: true });
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
  await runWhileShared(plan, blue, 'cameras');
  expect(await exceptAcross(blue, BLUE_CAMERAS_AS_GREEN, green, GREEN_CAMERAS)).toEqual({ onlyInA: [], onlyInB: [] });
});
