// Blue-green across two databases: the example plan moves cameras and counting results from a blue database into a
// green one while an application writes, first on blue only, then on both while traffic is split.
import { Pool } from 'pg';
import { eventually, Harness, type TestDb } from '../helpers/env';
import {
  BLUE_CAMERAS_AS_GREEN,
  blueGreenPlan,
  CameraWriters,
  exceptAcross,
  GREEN_CAMERAS,
  leftovers,
  RESULTS,
  seedBlue,
} from '../helpers/blue-green';

const h = new Harness();
beforeAll(() => h.start());
afterAll(() => h.stop());

const ROWS = 3000;

async function atPercent(workflowId: string, percent: number) {
  await withStatusOnFailure(workflowId, () =>
    eventually(
      async () => {
        const s = await h.client.status(workflowId);
        if (['rolled-back', 'failed', 'completed'].includes(s.state))
          throw new Error(`migration ${s.state}: ${s.error}`);
        return s.events.some((e) => e.message.startsWith(`flag use_green_database at ${percent}%`));
      },
      `traffic at ${percent}%`,
      240_000,
    ),
  );
}

/** The migration's final status; fails with its last events if it has not ended within `ms`. */
function ended(workflowId: string, ms: number) {
  return withStatusOnFailure(workflowId, () =>
    Promise.race([
      h.client.waitForEnd(workflowId),
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`not ended after ${ms} ms`)), ms).unref()),
    ]),
  );
}

/** Runs `fn`; if it fails, says where the migration stands (its last events) in the error. */
async function withStatusOnFailure<T>(workflowId: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    const s = await h.client.status(workflowId).catch(() => undefined);
    const events = s
      ? s.events
          .slice(-15)
          .map((x) => `  ${x.at} ${x.message}`)
          .join('\n')
      : '(no status)';
    throw new Error(`${(e as Error).message}\nmigration ${s?.state}, phase ${s?.phase}:\n${events}`, { cause: e });
  }
}

async function twoDatabases(label: string): Promise<{ blue: TestDb; green: TestDb }> {
  const blue = await h.db(`${label}_blue`);
  const green = await h.db(`${label}_green`);
  await seedBlue(blue, ROWS);
  return { blue, green };
}

test('writes on blue during copy and validation, then on both at 50%: both sides end identical through the mapping', async () => {
  const { blue, green } = await twoDatabases('bg_both');
  const plan = blueGreenPlan(blue, green, {
    stages: [
      { percent: 50, soak: 600_000 },
      { percent: 100, soak: 100 },
    ],
  });
  const onBlue = new CameraWriters(blue.url, 'blue', {
    loops: 3,
    existingIds: ROWS,
    firstNewId: 1_000_000,
    pauseMs: 5,
  });
  const { workflowId } = await h.client.start(plan, { autoApprove: true });
  await atPercent(workflowId, 50);
  const onGreen = new CameraWriters(green.url, 'green', {
    loops: 3,
    existingIds: ROWS,
    firstNewId: 2_000_000,
    pauseMs: 5,
  });
  await eventually(async () => onGreen.acknowledged > 300, 'writes on green', 60_000);
  await onBlue.stop();
  await onGreen.stop();
  await h.client.promote(workflowId, {});
  const final = await ended(workflowId, 240_000);
  expect(final.error).toBeNull();
  expect(final.state).toBe('completed');
  expect(onBlue.acknowledged).toBeGreaterThan(300);

  expect(await exceptAcross(blue, BLUE_CAMERAS_AS_GREEN, green, GREEN_CAMERAS)).toEqual({ onlyInA: [], onlyInB: [] });
  expect(await exceptAcross(blue, RESULTS, green, RESULTS)).toEqual({ onlyInA: [], onlyInB: [] });
  const clean = { triggers: 0, functions: 0, captures: 0, changes: 0, stamps: 0, slots: 0, publications: 0 };
  expect(await leftovers(blue)).toEqual(clean);
  expect(await leftovers(green)).toEqual(clean);
}, 600_000);

/**
 * The application's own role on both databases: it may use its tables (on green, those tidemark will create there),
 * nothing of tidemark's. Returns `url` of each database as that role.
 */
async function applicationRole(role: string, ...dbs: TestDb[]): Promise<(db: TestDb) => string> {
  for (const db of dbs) {
    await db.query(`DO $$ BEGIN CREATE ROLE ${role} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`);
    await db.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO ${role};
      GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO ${role};
      ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO ${role};
      ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE ON SEQUENCES TO ${role}`);
  }
  return (db) => {
    const u = new URL(db.url);
    u.username = role;
    return u.toString();
  };
}

test('an abort after 100% with writes on green: blue holds every one of them (written as a role with no privilege in tidemark)', async () => {
  const { blue, green } = await twoDatabases('bg_abort');
  // The capture triggers fire as this role on both sides: they must not need its privileges in tidemark's schema.
  const asApp = await applicationRole('bg_abort_app', blue, green);
  const plan = blueGreenPlan(blue, green, { stages: [{ percent: 100, soak: 600_000 }] });
  const { workflowId } = await h.client.start(plan, { autoApprove: true });
  await atPercent(workflowId, 100);
  // A late write on blue (a request that was already on its way), captured forward like every other.
  const late = new Pool({ connectionString: asApp(blue), max: 1 });
  await late.query(`UPDATE cameras SET name = 'late on blue' WHERE id = 1`).finally(() => late.end());
  await eventually(
    async () =>
      (await green.query<{ name: string }>(`SELECT name FROM cameras WHERE id = 1`))[0]?.name === 'late on blue',
    'the late write on blue applied to green',
    60_000,
  );
  const onGreen = new CameraWriters(asApp(green), 'green', { loops: 4, existingIds: ROWS, firstNewId: 2_000_000 });
  await eventually(async () => onGreen.acknowledged > 500, 'writes on green', 60_000);
  // The writers go on while the rollback runs (requests in flight after the flag went back): those acknowledged count.
  await h.client.abort(workflowId, { reason: 'back to blue' });
  const final = await ended(workflowId, 240_000);
  await onGreen.stop();
  expect(final.state).toBe('rolled-back');
  expect(await onGreen.missingIn(blue)).toEqual([]);
  expect(onGreen.acknowledged).toBeGreaterThan(500);
  const [{ n }] = await green.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM pg_tables WHERE tablename IN ('cameras', 'counting_results')`,
  );
  expect(n).toBe(0);
  const clean = { triggers: 0, functions: 0, captures: 0, changes: 0, stamps: 0, slots: 0, publications: 0 };
  expect(await leftovers(blue)).toEqual(clean);
  expect(await leftovers(green)).toEqual(clean);
});
