// Losing a database connection fails only the current attempt: tidemark's sessions are terminated again and again
// (pg_terminate_backend, idle between batches or in the middle of one) while a copy runs; the worker process keeps
// running, each attempt resumes on a fresh connection from its checkpoint, and the copy ends exact.
import type { ChildProcess } from 'node:child_process';
import type { ResolvedPlan } from '../../src/plan/types';
import { removeCluster, startPrivateCluster } from '../helpers/blue-green';
import { exceptBothWays } from '../helpers/db-assert';
import { eventually, Harness, type TestDb } from '../helpers/env';
import { meetingsPlan } from '../helpers/plans';
import { killed, workerProcess } from '../helpers/worker-process';
import { MEETINGS_AS_V2, V2_COLUMNS } from '../helpers/writers';

const h = new Harness();
beforeAll(() => h.start({ worker: false }));
afterAll(() => h.stop());

const committedRows = async (db: TestDb) =>
  Number(
    (
      await db.query<{ n: string | null }>(
        `SELECT sum(rows_copied) AS n FROM tidemark.copy_progress WHERE job = 'meetings'`,
      )
    )[0]?.n ?? 0,
  );

async function terminateTidemarkSessions(db: TestDb): Promise<number> {
  const r = await db.query<{ n: number }>(
    `SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
      WHERE datname = current_database() AND application_name LIKE 'tidemark%' AND pid <> pg_backend_pid()`,
  );
  return r[0].n;
}

test('sessions terminated over and over during a copy: the worker keeps running and the copy ends exact', async () => {
  const db = await h.db('connloss');
  const rows = 40_000;
  const base = await meetingsPlan(db, { rows, approvals: ['copy'] });
  const plan: ResolvedPlan = {
    ...base,
    copy: [{ ...base.copy[0], sync: 'forward', batchSize: 500, maxBatchSize: 500, parallel: 2 }],
    validate: [{ rowCount: { copy: 'meetings' } }, { checksum: { copy: 'meetings', chunkSize: 5000 } }],
    traffic: undefined,
    cleanup: undefined,
  };
  // The worker also knows a database that does not answer (another plan's, gone): the attempts killed below wait
  // for their own database only, which answers at once, not for that one.
  const nowhere = 'postgres://postgres@127.0.0.1:1/tidemark_nowhere';
  const worker = workerProcess(h.client.address, h.taskQueue, { [db.urlEnv]: db.url, NOWHERE_URL: nowhere });
  let exitedBy: string | null = null;
  worker.once('exit', (code, signal) => (exitedBy = `exit code ${code}, signal ${signal}`));
  try {
    const elsewhere = await h.client.start(
      { ...plan, name: 'elsewhere', database: { urlEnv: 'NOWHERE_URL' } },
      { autoApprove: true },
    );
    expect((await h.client.waitForEnd(elsewhere.workflowId)).state).not.toBe('completed');
    const { workflowId } = await h.client.start(plan, { autoApprove: false });
    await h.approvalPending(workflowId, 'copy');
    await h.client.throttle(workflowId, { delayMs: 20 });
    await h.client.approve(workflowId);
    let terminated = 0;
    for (let round = 1; round <= 4; round++) {
      // Each round waits for the copy to make progress after the previous kill: it resumed on new connections.
      const before = await committedRows(db);
      await eventually(async () => (await committedRows(db)) > before, `progress before kill ${round}`, 120_000, 20);
      terminated += await terminateTidemarkSessions(db);
      expect(exitedBy).toBeNull();
    }
    expect(terminated).toBeGreaterThanOrEqual(4);
    const final = await h.client.waitForEnd(workflowId);
    expect(exitedBy).toBeNull();
    expect(final.state).toBe('completed');
    expect(final.copy[0]).toMatchObject({ rowsCopied: rows, done: true });
    expect(await exceptBothWays(db, MEETINGS_AS_V2, V2_COLUMNS)).toEqual({ onlyInA: 0, onlyInB: 0 });
    // Killed attempts were retried (on fresh connections) rather than failing the migration.
    const history = await (await h.client.handle(workflowId)).fetchHistory();
    const attempts = history.events!.flatMap((e) =>
      e.activityTaskStartedEventAttributes ? [e.activityTaskStartedEventAttributes.attempt ?? 1] : [],
    );
    expect(Math.max(...attempts)).toBeGreaterThanOrEqual(2);
  } finally {
    await killed(worker, 'SIGTERM');
  }
});

test('the database down for a while: the attempt that meets the outage waits it out instead of spending its retries', async () => {
  const cluster = await startPrivateCluster('replica');
  const log = { text: '' };
  let worker: ChildProcess | undefined;
  try {
    const db = await h.db('outage', cluster.adminUrl);
    const base = await meetingsPlan(db, { rows: 2000, approvals: ['copy'] });
    const plan: ResolvedPlan = {
      ...base,
      copy: [{ ...base.copy[0], sync: 'forward', batchSize: 100, maxBatchSize: 100 }],
      validate: [{ rowCount: { copy: 'meetings' } }],
      traffic: undefined,
      cleanup: undefined,
    };
    worker = workerProcess(h.client.address, h.taskQueue, { [db.urlEnv]: db.url }, log);
    const { workflowId } = await h.client.start(plan, { autoApprove: false });
    await h.approvalPending(workflowId, 'copy');
    // Slow enough to be stopped in the middle (the operator's answers themselves wait for the database).
    await h.client.throttle(workflowId, { delayMs: 500 });
    await h.client.approve(workflowId);
    await eventually(async () => (await committedRows(db)) > 0, 'the copy under way', 120_000, 20);
    cluster.stop('fast');
    // Down for longer than the first retries' back-offs together (1 + 2 + 4 + 8 s).
    await new Promise((r) => setTimeout(r, 25_000));
    cluster.start();
    const final = await h.client.waitForEnd(workflowId);
    expect(final.state).toBe('completed');
    expect(await exceptBothWays(db, MEETINGS_AS_V2, V2_COLUMNS)).toEqual({ onlyInA: 0, onlyInB: 0 });
    // The outage cost the attempt that met it, not one retry after another.
    const history = await (await h.client.handle(workflowId)).fetchHistory();
    const attempts = history.events!.flatMap((e) =>
      e.activityTaskStartedEventAttributes ? [e.activityTaskStartedEventAttributes.attempt ?? 1] : [],
    );
    expect(Math.max(...attempts)).toBeLessThanOrEqual(2);
    expect(log.text).toContain('waiting for the database');
  } finally {
    if (worker) await killed(worker, 'SIGTERM');
    removeCluster(cluster);
  }
});
