// The copy's latency budget on a real server: while other sessions are busy the copy shares the server, measures its
// committing probe quiet and while copying, and says in status (text and JSON) what share of the time the plan's
// budget lets it take; once the others are gone it copies flat out again and ends exact.
import { Client } from 'pg';
import { exceptBothWays } from '../helpers/db-assert';
import { eventually, Harness } from '../helpers/env';
import { meetingsPlan } from '../helpers/plans';
import { MEETINGS_AS_V2, V2_COLUMNS } from '../helpers/writers';

const h = new Harness();
beforeAll(() => h.start());
afterAll(() => h.stop());
jest.setTimeout(600_000);

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
  // Two sessions of "the application" inside open transactions: busy, as far as the throttler can tell.
  const app = [new Client({ connectionString: db.url }), new Client({ connectionString: db.url })];
  const { workflowId } = await h.client.start(plan, { autoApprove: false });
  try {
    for (const c of app) {
      await c.connect();
      await c.query('BEGIN');
      await c.query('SELECT 1');
    }
    await h.approvalPending(workflowId, 'copy');
    // Small fixed batches with a pause between them: the copy is still running when the first reading comes (a quiet
    // window and sixteen probes, about six seconds after it starts to share).
    await h.client.throttle(workflowId, { batchSize: 100, delayMs: 50 });
    await h.client.approve(workflowId);
    const measured = await eventually(
      async () => {
        const s = await h.client.status(workflowId);
        return s.copy[0]?.latencyIncrease !== undefined ? s.copy[0] : undefined;
      },
      'the budget to measure the latency while copying',
      180_000,
    );
    expect(measured.duty).toBeGreaterThanOrEqual(0.02);
    expect(measured.duty).toBeLessThanOrEqual(1);
    expect(measured.throttleReason).toMatch(
      /^sharing the server with ~[\d.]+ busy session\(s\): copying \d+% of the time: probe p90 [\d.]+ms vs [\d.]+ms quiet \([+-]?\d+%, budget \+50%(, over: slowing down)?\)$/,
    );
  } finally {
    for (const c of app) await c.end().catch(() => undefined);
  }
  await h.client.throttle(workflowId, { batchSize: null, delayMs: 0 });
  const final = await h.client.waitForEnd(workflowId);
  expect(final.state).toBe('completed');
  expect(final.copy[0]).toMatchObject({ rowsCopied: rows, done: true });
  expect(await exceptBothWays(db, MEETINGS_AS_V2, V2_COLUMNS)).toEqual({ onlyInA: 0, onlyInB: 0 });
});
