// Blue-green: the worker applying changes to the target is SIGKILLed while an application writes on the source. A new
// worker carries on from the log: in the end both sides are identical, and no change was applied twice — a row the
// application updated n times was changed by the applier at most n times. Then the same while the copy is captured
// by logical decoding: the worker dies while it pumps the slot, and the next one logs again and applies what it left,
// again changing no row more often than the application wrote it.
import type { PrivateCluster } from '../../src/infra/postgres';
import { countRowWrites, rowWrites } from '../helpers/db-assert';
import { eventually, Harness } from '../helpers/env';
import {
  BLUE_CAMERAS_AS_GREEN,
  leftovers,
  blueGreenPlan,
  CameraWriters,
  countApplierWrites,
  exceptAcross,
  GREEN_CAMERAS,
  removeCluster,
  seedBlue,
  startPrivateCluster,
} from '../helpers/blue-green';
import { killed, workerProcess } from '../helpers/worker-process';

const h = new Harness();
let cluster: PrivateCluster | undefined;
beforeAll(() => h.start({ worker: false }));
afterAll(async () => {
  await h.stop();
  removeCluster(cluster);
});

const ROWS = 2000;

const applierChanged = async (green: { query: <T>(sql: string) => Promise<T[]> }) =>
  Number((await green.query<{ n: string }>(`SELECT count(*) AS n FROM cameras WHERE applier_writes > 0`))[0].n);

test('a worker SIGKILLed mid-apply: nothing lost, nothing applied twice', async () => {
  const blue = await h.db('bg_kill_blue');
  const green = await h.db('bg_kill_green');
  await seedBlue(blue, ROWS);
  const env = { [blue.urlEnv]: blue.url, [green.urlEnv]: green.url };
  const plan = blueGreenPlan(blue, green, { stages: [{ percent: 10, soak: 600_000 }] });
  let worker = workerProcess(h.client.address, h.taskQueue, env);
  let writers: CameraWriters | undefined;
  try {
    const { workflowId } = await h.client.start(plan, { autoApprove: true });
    await eventually(
      async () =>
        (await h.client.status(workflowId)).events.some((e) => e.message.startsWith('flag use_green_database at 10%')),
      'traffic at 10%',
      240_000,
    );
    await countApplierWrites(green);
    const applied = async () =>
      Number(
        (await green.query<{ n: string | null }>(`SELECT sum(applied) AS n FROM tidemark.apply_progress`))[0].n ?? 0,
      );
    const before = await applied();
    writers = new CameraWriters(blue.url, 'blue', { loops: 3, existingIds: ROWS, firstNewId: 1_000_000 });
    await eventually(async () => (await applied()) > before + 2000, '2000 changes applied', 120_000, 20);
    await killed(worker, 'SIGKILL');
    // While no worker runs, the application's changes pile up in the log.
    const pending = async () =>
      Number((await blue.query<{ n: string }>(`SELECT count(*) AS n FROM tidemark.changes`))[0].n);
    await eventually(async () => (await pending()) > 500, 'changes waiting in the log', 60_000, 20);
    worker = workerProcess(h.client.address, h.taskQueue, env);
    await eventually(async () => (await applied()) > before + 4000, 'applying again after the kill', 120_000, 20);
    await writers.stop();
    await eventually(async () => (await pending()) === 0, 'every change applied', 120_000);
    expect(await writers.overApplied(green)).toEqual([]);
    expect(await applierChanged(green)).toBeGreaterThan(100);
    expect(await exceptAcross(blue, BLUE_CAMERAS_AS_GREEN, green, GREEN_CAMERAS)).toEqual({ onlyInA: [], onlyInB: [] });

    await h.client.promote(workflowId, {});
    const final = await h.client.waitForEnd(workflowId);
    expect(final.state).toBe('completed');
    expect(await exceptAcross(blue, BLUE_CAMERAS_AS_GREEN, green, GREEN_CAMERAS)).toEqual({ onlyInA: [], onlyInB: [] });
  } finally {
    await writers?.stop().catch(() => undefined);
    await killed(worker, 'SIGTERM');
  }
}, 600_000);

test('logical decoding: a worker SIGKILLed while it pumps the slot during the copy; a new one carries on, nothing lost', async () => {
  // Blue on a server of its own with wal_level = logical: the copy is captured by decoding, not by triggers.
  cluster = await startPrivateCluster('logical');
  const blue = await h.db('bg_kill_lg_blue', cluster.adminUrl);
  const green = await h.db('bg_kill_lg_green');
  const rows = 20_000;
  await seedBlue(blue, rows);
  const env = { [blue.urlEnv]: blue.url, [green.urlEnv]: green.url };
  const plan = blueGreenPlan(blue, green, { stages: [{ percent: 10, soak: 600_000 }] });
  let worker = workerProcess(h.client.address, h.taskQueue, env);
  const writers = new CameraWriters(blue.url, 'blue', { loops: 3, existingIds: rows, firstNewId: 1_000_000 });
  let stopped = false;
  try {
    const { workflowId } = await h.client.start(plan, { autoApprove: true });
    const said = async () => (await h.client.status(workflowId)).events.map((e) => e.message);
    await eventually(
      async () =>
        (await said()).some((m) =>
          m.startsWith('change capture of cameras (source → target) installed, by logical decoding'),
        ),
      'cameras captured by logical decoding',
      120_000,
      20,
    );
    // Small batches far apart: the copy is still running when the worker dies, and after the next one starts, until
    // the throttle is lifted below.
    await h.client.throttle(workflowId, { batchSize: 50, delayMs: 2000 });
    // The schema phase has made green's table: from here on, count what the applier changes.
    await countApplierWrites(green);
    const applied = async () =>
      Number(
        (await green.query<{ n: string | null }>(`SELECT sum(applied) AS n FROM tidemark.apply_progress`))[0].n ?? 0,
      );
    await eventually(async () => (await applied()) > 1000, '1000 decoded changes applied', 120_000, 20);
    expect((await h.client.status(workflowId)).phase).toBe('copy');
    await killed(worker, 'SIGKILL');
    // While no worker runs, the application's changes pile up in the slot.
    const before = writers.acknowledged;
    await eventually(async () => writers.acknowledged > before + 500, 'writes while no worker runs', 60_000, 20);
    worker = workerProcess(h.client.address, h.taskQueue, env);
    // The new applier reports what the slot still holds (the application keeps writing, so it never holds nothing).
    await eventually(
      async () => {
        const r = (await h.client.status(workflowId)).replication?.find(
          (x) => x.job === 'cameras' && x.direction === 'forward',
        );
        return r?.slotBytes !== undefined && r.slotBytes > 0 && r.lagSeconds !== undefined;
      },
      'status shows the backlog of the slot',
      120_000,
      20,
    );
    expect((await h.client.status(workflowId)).phase).toBe('copy');
    await h.client.throttle(workflowId, { batchSize: null, delayMs: 0 });
    await eventually(
      async () => (await said()).some((m) => m.startsWith('flag use_green_database at 10%')),
      'traffic at 10%',
      240_000,
    );
    await writers.stop();
    stopped = true;
    expect(await said()).toEqual(
      expect.arrayContaining([
        expect.stringMatching(
          /^switching the change capture of cameras from logical decoding to triggers: needs a brief lock on cameras/,
        ),
        expect.stringMatching(/^change capture of cameras switched from logical decoding to triggers/),
      ]),
    );
    await eventually(
      async () => Number((await blue.query<{ n: string }>(`SELECT count(*) AS n FROM tidemark.changes`))[0].n) === 0,
      'every change applied',
      120_000,
    );
    expect(await exceptAcross(blue, BLUE_CAMERAS_AS_GREEN, green, GREEN_CAMERAS)).toEqual({ onlyInA: [], onlyInB: [] });
    expect(await writers.missingIn(green)).toEqual([]);
    // The changes the dead worker had logged but not yet confirmed were logged again: none was applied twice.
    expect(await writers.overApplied(green)).toEqual([]);
    expect(await applierChanged(green)).toBeGreaterThan(100);

    await h.client.promote(workflowId, {});
    const final = await h.client.waitForEnd(workflowId);
    expect(final.state).toBe('completed');
    const clean = { triggers: 0, functions: 0, captures: 0, changes: 0, stamps: 0, slots: 0, publications: 0 };
    expect(await leftovers(blue)).toEqual(clean);
  } finally {
    if (!stopped) await writers.stop().catch(() => undefined);
    await killed(worker, 'SIGTERM');
  }
}, 600_000);

test('a worker SIGKILLed mid-copy across databases: a new worker finishes it, re-doing at most one batch', async () => {
  const rows = 20_000;
  const batch = 500;
  const blue = await h.db('bg_copykill_blue');
  const green = await h.db('bg_copykill_green');
  await seedBlue(blue, rows);
  const env = { [blue.urlEnv]: blue.url, [green.urlEnv]: green.url };
  const base = blueGreenPlan(blue, green, { stages: [{ percent: 100, soak: 100 }] });
  const plan = {
    ...base,
    approvals: ['copy' as const],
    copy: base.copy.map((j) => ({ ...j, batchSize: batch, maxBatchSize: batch })),
  };
  let worker = workerProcess(h.client.address, h.taskQueue, env);
  try {
    const { workflowId } = await h.client.start(plan, { autoApprove: false });
    await h.approvalPending(workflowId, 'copy');
    // Every row green's cameras take, counted per statement: a batch copied twice shows up.
    await countRowWrites(green, 'cameras');
    await h.client.throttle(workflowId, { delayMs: 200 });
    await h.client.approve(workflowId);
    const committed = async () =>
      Number(
        (
          await green.query<{ n: string | null }>(
            `SELECT sum(rows_copied) AS n FROM tidemark.copy_progress WHERE job = 'cameras'`,
          )
        )[0].n ?? 0,
      );
    await eventually(async () => (await committed()) >= 5000, '5000 cameras copied', 120_000, 20);
    await killed(worker, 'SIGKILL');
    expect(await committed()).toBeLessThan(rows);
    worker = workerProcess(h.client.address, h.taskQueue, env);
    await h.client.throttle(workflowId, { delayMs: 0 });

    const final = await h.client.waitForEnd(workflowId);
    expect({ state: final.state, error: final.error ?? null }).toEqual({ state: 'completed', error: null });
    expect(final.copy.find((c) => c.job === 'cameras')).toMatchObject({ rowsCopied: rows, done: true });
    expect(await exceptAcross(blue, BLUE_CAMERAS_AS_GREEN, green, GREEN_CAMERAS)).toEqual({ onlyInA: [], onlyInB: [] });
    const writes = await rowWrites(green);
    expect(writes).toBeGreaterThanOrEqual(rows);
    expect(writes - rows).toBeLessThanOrEqual(batch);
  } finally {
    await killed(worker, 'SIGTERM');
  }
}, 600_000);
