// Resume: a worker SIGKILLed mid-copy, or the Temporal server restarted from its state file, and the migration still
// finishes exactly, re-doing at most one batch. Workers run as child processes (`tidemark worker`), as in production.
import { join } from 'node:path';
import { TidemarkClient } from '../../src/client';
import { freePort, startDevServer, type DevServer } from '../../src/infra/devserver';
import type { ResolvedPlan } from '../../src/plan/types';
import { countRowWrites, exceptBothWays, rowWrites } from '../helpers/db-assert';
import { eventually, Harness, type TestDb } from '../helpers/env';
import { meetingsPlan, tempDir } from '../helpers/plans';
import { MEETINGS_AS_V2, V2_COLUMNS } from '../helpers/writers';
import { killed, workerProcess as spawnWorker } from '../helpers/worker-process';

const h = new Harness();
beforeAll(() => h.start({ worker: false }));
afterAll(() => h.stop());

const workerProcess = (address: string, taskQueue: string, db: TestDb) =>
  spawnWorker(address, taskQueue, { [db.urlEnv]: db.url });

const BATCH = 1000;

async function copyOnlyPlan(db: TestDb, rows: number): Promise<ResolvedPlan> {
  const base = await meetingsPlan(db, { rows, approvals: ['copy'] });
  return {
    ...base,
    copy: [{ ...base.copy[0], sync: 'forward', batchSize: BATCH, maxBatchSize: BATCH }],
    validate: [{ rowCount: { copy: 'meetings' } }, { checksum: { copy: 'meetings', chunkSize: 10_000 } }],
    traffic: undefined,
    cleanup: undefined,
  };
}

const committedRows = async (db: TestDb) =>
  Number(
    (
      await db.query<{ n: string | null }>(
        `SELECT sum(rows_copied) AS n FROM tidemark.copy_progress WHERE job = 'meetings'`,
      )
    )[0]?.n ?? 0,
  );

test('a worker SIGKILLed mid-copy: a new worker finishes the copy exactly, re-doing at most one batch', async () => {
  const db = await h.db('sigkill');
  const rows = 60_000;
  const plan = await copyOnlyPlan(db, rows);
  let worker = workerProcess(h.client.address, h.taskQueue, db);
  try {
    const { workflowId } = await h.client.start(plan, { autoApprove: false });
    await eventually(
      async () => (await h.client.status(workflowId)).pendingApproval?.gate === 'copy',
      'copy approval',
      120_000,
    );
    await countRowWrites(db, 'meetings_v2');
    await h.client.throttle(workflowId, { delayMs: 20 });
    await h.client.approve(workflowId);
    await eventually(async () => (await committedRows(db)) >= 15_000, '15000 rows copied', 120_000, 20);

    await killed(worker, 'SIGKILL');
    const atKill = await committedRows(db);
    expect(atKill).toBeLessThan(rows);
    worker = workerProcess(h.client.address, h.taskQueue, db);

    const final = await h.client.waitForEnd(workflowId);
    expect(final.state).toBe('completed');
    expect(final.copy[0]).toMatchObject({ rowsCopied: rows, done: true });
    expect(await exceptBothWays(db, MEETINGS_AS_V2, V2_COLUMNS)).toEqual({ onlyInA: 0, onlyInB: 0 });

    // The copy activity really was interrupted and retried…
    const handle = await h.client.handle(workflowId);
    const attempts = (await handle.fetchHistory()).events!.flatMap((e) =>
      e.activityTaskStartedEventAttributes ? [e.activityTaskStartedEventAttributes.attempt ?? 1] : [],
    );
    expect(Math.max(...attempts)).toBeGreaterThanOrEqual(2);
    // …and the target saw each row written once, plus at most the one batch that was in flight.
    const writes = await rowWrites(db);
    expect(writes).toBeGreaterThanOrEqual(rows);
    expect(writes - rows).toBeLessThanOrEqual(BATCH);
  } finally {
    await killed(worker, 'SIGTERM');
  }
});

test('the Temporal server restarted mid-copy from its state file: the migration finishes exactly', async () => {
  const db = await h.db('restart');
  const rows = 40_000;
  const plan = await copyOnlyPlan(db, rows);
  const port = await freePort();
  const dbFile = join(tempDir('tidemark-temporal-'), 'temporal.db');
  let server: DevServer = await startDevServer({ port, dbFile, headless: true });
  const taskQueue = `${h.taskQueue}-restart`;
  const worker = workerProcess(server.address, taskQueue, db);
  const client = await TidemarkClient.connect({ address: server.address, taskQueue });
  try {
    const { workflowId } = await client.start(plan, { autoApprove: false });
    await eventually(
      async () => (await client.status(workflowId)).pendingApproval?.gate === 'copy',
      'copy approval',
      120_000,
    );
    await client.throttle(workflowId, { delayMs: 40 });
    await client.approve(workflowId);
    await eventually(async () => (await committedRows(db)) >= 8_000, '8000 rows copied', 120_000, 20);

    await server.stop();
    const whileDown = await committedRows(db);
    server = await startDevServer({ port, dbFile, headless: true });

    const final = await eventually(
      async () => {
        const s = await client.status(workflowId);
        return s.state === 'completed' || s.state === 'rolled-back' || s.state === 'failed' ? s : undefined;
      },
      'the migration to finish after the restart',
      150_000,
      500,
    );
    expect(whileDown).toBeLessThan(rows);
    expect(final.state).toBe('completed');
    expect(await exceptBothWays(db, MEETINGS_AS_V2, V2_COLUMNS)).toEqual({ onlyInA: 0, onlyInB: 0 });
  } finally {
    await client.close().catch(() => undefined);
    await killed(worker, 'SIGTERM');
    await server.stop();
  }
});
