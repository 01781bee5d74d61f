// Blue-green between two servers of their own: blue runs with wal_level = logical, green with wal_level = replica,
// each a private cluster started here (initdb/pg_ctl), so nothing depends on how the machine's server is configured.
// Preflight says which capture each side allows and refuses a replication slot tidemark left behind; the migration
// then moves the tables across servers under writes (captured on blue by logical decoding while the copy runs, by
// triggers from then on) and leaves no slot, trigger or change table on either.
import { join } from 'node:path';
import type { PrivateCluster } from '../../src/infra/postgres';
import type { ResolvedPlan } from '../../src/plan/types';
import {
  BLUE_CAMERAS_AS_GREEN,
  BLUE_GREEN_DIR,
  blueGreenPlan,
  CameraWriters,
  exceptAcross,
  GREEN_CAMERAS,
  leftovers,
  RESULTS,
  removeCluster,
  seedBlue,
  startPrivateCluster,
} from '../helpers/blue-green';
import { runCli } from '../helpers/cli';
import { eventually, Harness, type TestDb } from '../helpers/env';

const h = new Harness();
const clusters: PrivateCluster[] = [];
const ROWS = 2000;

async function cluster(walLevel: 'logical' | 'replica'): Promise<PrivateCluster> {
  const c = await startPrivateCluster(walLevel);
  clusters.push(c);
  return c;
}

let blue: TestDb;
let green: TestDb;

beforeAll(async () => {
  await h.start();
  const [logical, replica] = [await cluster('logical'), await cluster('replica')];
  blue = await h.db('bgc_blue', logical.adminUrl);
  green = await h.db('bgc_green', replica.adminUrl);
  await seedBlue(blue, ROWS);
}, 180_000);

afterAll(async () => {
  await h.stop();
  for (const c of clusters) removeCluster(c);
});

const clean = { triggers: 0, functions: 0, captures: 0, changes: 0, stamps: 0, slots: 0, publications: 0 };

test('plan check --rehearse on both servers: says which capture each allows, refuses a slot tidemark left behind, changes nothing', async () => {
  const env = { BLUE_DATABASE_URL: blue.url, GREEN_DATABASE_URL: green.url };
  const rehearse = () => runCli(['plan', 'check', join(BLUE_GREEN_DIR, 'plan.yaml'), '--rehearse'], env);
  await blue.query(`SELECT pg_create_logical_replication_slot('tidemark_left_behind', 'test_decoding')`);
  const refused = await rehearse();
  expect(refused.code).not.toBe(0);
  expect(refused.stdout).toMatch(
    /fail replication slot tidemark_left_behind: a tidemark replication slot is left on the source, holding .* WAL: drop it with SELECT pg_drop_replication_slot\('tidemark_left_behind'\)/,
  );
  await blue.query(`SELECT pg_drop_replication_slot('tidemark_left_behind')`);

  const r = await rehearse();
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  expect(r.stdout).toMatch(
    /ok {3}capture on the source: .*wal_level is logical and this role may use logical decoding/,
  );
  expect(r.stdout).toMatch(
    /ok {3}capture on the target: .*wal_level is replica \(logical decoding needs wal_level = logical/,
  );
  // The schema steps were tried on green, where they run, and left nothing there.
  for (const step of ['001_create_cameras', '002_create_counting_results'])
    expect(r.stdout).toContain(`step ${step}: ok — up, down (schema restored exactly), up again`);
  expect(r.stdout).toContain('database unchanged by the rehearsal: yes');
  expect(await green.query(`SELECT 1 FROM pg_tables WHERE tablename IN ('cameras', 'counting_results')`)).toEqual([]);

  // A table whose replica identity does not hold its key is named: auto captures it by triggers from the start.
  await blue.query(`ALTER TABLE counting_results REPLICA IDENTITY NOTHING`);
  try {
    const named = await rehearse();
    expect(named.code).toBe(0);
    expect(named.stdout).toMatch(
      /ok {3}capture on the source: .*; by triggers from the start instead for "public"."counting_results" \(the replica identity of "public"."counting_results" \(none\) does not hold key column\(s\) id/,
    );
  } finally {
    await blue.query(`ALTER TABLE counting_results REPLICA IDENTITY DEFAULT`);
  }
});

test('across two servers under writes on blue: green ends identical through the mapping, neither keeps a slot, trigger or change', async () => {
  const plan = blueGreenPlan(blue, green, { stages: [{ percent: 100, soak: 600_000 }] });
  const onBlue = new CameraWriters(blue.url, 'blue', {
    loops: 3,
    existingIds: ROWS,
    firstNewId: 1_000_000,
    pauseMs: 5,
  });
  let stopped = false;
  try {
    const { workflowId } = await h.client.start(plan, { autoApprove: true });
    // Blue takes writes until the copy has run and traffic starts to move (the writers stop as the flag turns).
    await eventually(
      async () => {
        const s = await h.client.status(workflowId);
        if (['rolled-back', 'failed', 'completed'].includes(s.state))
          throw new Error(`migration ${s.state}: ${s.error}`);
        return (
          s.events.some((e) => e.message.startsWith('flag use_green_database at 100%')) && onBlue.acknowledged > 200
        );
      },
      'traffic at 100%, with writes on blue',
      300_000,
    );
    await onBlue.stop();
    stopped = true;
    await h.client.promote(workflowId, {});
    const final = await h.client.waitForEnd(workflowId);
    expect(final.error).toBeNull();
    expect(final.state).toBe('completed');
    // Blue allows logical decoding: the copy ran with slots, not triggers, then switched before traffic moved.
    const said = final.events.map((e) => e.message);
    for (const job of ['cameras', 'counting_results']) {
      expect(said).toContain(
        `change capture of ${job} (source → target) installed, by logical decoding; applier started`,
      );
      expect(
        said.some((m) => m.startsWith(`change capture of ${job} switched from logical decoding to triggers`)),
      ).toBe(true);
    }
  } finally {
    if (!stopped) await onBlue.stop();
  }
  expect(await exceptAcross(blue, BLUE_CAMERAS_AS_GREEN, green, GREEN_CAMERAS)).toEqual({ onlyInA: [], onlyInB: [] });
  expect(await exceptAcross(blue, RESULTS, green, RESULTS)).toEqual({ onlyInA: [], onlyInB: [] });
  expect(await leftovers(blue)).toEqual(clean);
  expect(await leftovers(green)).toEqual(clean);
}, 600_000);

test('a large value on blue, its row changed a thousand times while logical decoding captures it: applied without the worker holding the value a thousand times', async () => {
  const [logical, replica] = clusters;
  const b = await h.db('bgc_toast_blue', logical.adminUrl);
  const g = await h.db('bgc_toast_green', replica.adminUrl);
  await seedBlue(b, 200);
  // A 600 kB config (stored out of line): an update of another column leaves it unchanged, and decoding does not
  // send it; the capture reads it from the row.
  await b.query(`UPDATE cameras SET config = json_build_object('blob', repeat('abcdefgh', 75000))::text WHERE id = 1`);
  const plan: ResolvedPlan = {
    ...blueGreenPlan(b, g, { stages: [{ percent: 100, soak: 200 }] }),
    approvals: ['copy'],
  };
  const { workflowId } = await h.client.start(plan, { autoApprove: false });
  await h.approvalPending(workflowId, 'copy');
  // Slow, so that the slot still captures cameras when the burst comes.
  await h.client.throttle(workflowId, { batchSize: 50, delayMs: 2000 });
  await h.client.approve(workflowId);
  await eventually(
    async () =>
      (await h.client.status(workflowId)).events.some(
        (e) =>
          e.message === 'change capture of cameras (source → target) installed, by logical decoding; applier started',
      ),
    'the capture of cameras by logical decoding',
  );
  // 1,000 changes of that row in one transaction: with the value in each, 600 MB, more than one string may hold.
  await b.query(`DO $$ BEGIN FOR i IN 1..1000 LOOP UPDATE cameras SET fps = fps + 1 WHERE id = 1; END LOOP; END $$`);
  await h.client.throttle(workflowId, { batchSize: null, delayMs: 0 });
  const final = await h.client.waitForEnd(workflowId);
  expect(final.error).toBeNull();
  expect(final.state).toBe('completed');
  expect(await exceptAcross(b, BLUE_CAMERAS_AS_GREEN, g, GREEN_CAMERAS)).toEqual({ onlyInA: [], onlyInB: [] });
  expect(await leftovers(b)).toEqual(clean);
}, 600_000);
