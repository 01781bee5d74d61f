// Blue-green: the worker applying changes to the target is SIGKILLed while an application writes on the source. A new
// worker carries on from the log: in the end both sides are identical, and no change was applied twice — a row the
// application updated n times was written by the applier at most n times.
import { eventually, Harness } from '../helpers/env';
import {
  BLUE_CAMERAS_AS_GREEN,
  blueGreenPlan,
  CameraWriters,
  exceptAcross,
  GREEN_CAMERAS,
  seedBlue,
} from '../helpers/blue-green';
import { killed, workerProcess } from '../helpers/worker-process';

const h = new Harness();
beforeAll(() => h.start({ worker: false }));
afterAll(() => h.stop());

const ROWS = 2000;

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
    // Every write the applier makes to a green row counts up a column the mapping does not know.
    await green.query(`
      ALTER TABLE cameras ADD COLUMN applier_writes integer NOT NULL DEFAULT 0;
      CREATE FUNCTION count_applier_writes() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF coalesce(current_setting('tidemark.syncing', true), '') <> '' THEN NEW.applier_writes = OLD.applier_writes + 1; END IF;
          RETURN NEW;
        END $$;
      CREATE TRIGGER count_applier_writes BEFORE UPDATE ON cameras FOR EACH ROW EXECUTE FUNCTION count_applier_writes();`);
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
    const overApplied = await green.query<{ id: number; applier_writes: number }>(
      `SELECT id, applier_writes FROM cameras WHERE applier_writes > 0`,
    );
    const twice = overApplied.filter((r) => r.applier_writes > (writers!.updates.get(Number(r.id)) ?? 0));
    expect(twice).toEqual([]);
    expect(overApplied.length).toBeGreaterThan(100);
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
