// The examples end to end, through the code `tidemark demo <example>` runs, while their applications write: the old
// path's tables throughout, the new path's once traffic moves there. Afterwards every copy job's target equals its
// (archived) sources through the job's own mapping. The cameras migration is then reverted before its drop.
import { PassThrough } from 'node:stream';
import type { Example } from '../../src/demo/examples';
import { runExample, type ExampleRun } from '../../src/demo/run';
import type { ResolvedPlan } from '../../src/plan/types';
import { runCli } from '../helpers/cli';
import { flagPercent, schemaDump, tableExists } from '../helpers/db-assert';
import { eventually, Harness, StopWaiting, type TestDb } from '../helpers/env';
import {
  camerasOldOps,
  camerasOps,
  consolidationAdminOps,
  consolidationNewOps,
  consolidationOldOps,
  eventsEngineOps,
  weddingOps,
} from '../helpers/example-writers';
import { example, examplePlanFile, examplePlanFor, mappingDiff } from '../helpers/examples';
import { seedExample } from '../../src/demo/examples';
import { startWorkload, type Op, type Workload } from '../helpers/writers';

const h = new Harness();
beforeAll(() => h.start());
afterAll(() => h.stop());

const ops = (w: Workload) => w.stats.inserts + w.stats.updates + w.stats.deletes;

/**
 * Runs the example while `oldPath` writes from the start and `newPath` (if any) once the flag is above 0. The cleanup
 * delay is long, so the writers stop while it waits (the old tables are about to move into the archive, where nothing
 * writes them any more); then promote ends the delay.
 */
async function runUnderLoad(
  ex: Example,
  db: TestDb,
  plan: ResolvedPlan,
  oldPath: Op[],
  newPath?: Op[],
): Promise<ExampleRun> {
  const old = startWorkload(db.url, oldPath, { concurrency: 3, opsPerSecond: 150 });
  let fresh: Workload | undefined;
  const running = runExample(h.client, ex, plan, { url: db.url, out: new PassThrough() });
  // A run that failed (its start refused, say) is reported as such, not as a status that never came.
  let failed: unknown;
  running.catch((e) => (failed = e));
  const id = `tidemark-${plan.name}`;
  /** The status, or StopWaiting once the migration has ended: what is awaited can no longer come. */
  const live = async () => {
    if (failed) throw new StopWaiting(`the example did not run: ${(failed as Error).message}`);
    const s = await h.client.status(id);
    if (['completed', 'rolled-back', 'failed'].includes(s.state))
      throw new StopWaiting(`migration ${s.state}: ${s.error}`);
    return s;
  };
  try {
    if (newPath) {
      await eventually(async () => ((await live()).traffic?.percent ?? 0) > 0, 'traffic on the new path');
      fresh = startWorkload(db.url, newPath, { concurrency: 2, opsPerSecond: 100, seed: 7 });
      await eventually(async () => ops(fresh!) >= 20, 'writes on the new path');
    }
    await eventually(async () => (await live()).waitingUntil?.what === 'cleanup delay', 'cleanup delay');
  } finally {
    await fresh?.stop();
    await old.stop();
  }
  expect(ops(old)).toBeGreaterThan(0);
  await h.client.promote(id, { by: 'test' });
  return running;
}

async function expectMappingsHold(db: TestDb, plan: ResolvedPlan) {
  for (const job of plan.copy) {
    expect([job.name, await mappingDiff(db, job, 'tidemark_archive')]).toEqual([
      job.name,
      { onlyInSource: 0, onlyInTarget: 0 },
    ]);
  }
}

test('cameras: synced both ways through the canary, exact through the mapping, then reverted before the drop', async () => {
  const ex = example('cameras');
  const db = await h.db('cameras');
  const plan = await examplePlanFor(ex, db, { rows: 2000, cleanupAfterMs: 600_000 });
  const schemaBefore = schemaDump(db);

  const run = await runUnderLoad(ex, db, plan, camerasOldOps(2000), camerasOps(2000));

  expect(run.migration.error).toBeNull();
  expect(run.migration.state).toBe('completed');
  expect(run.migration.traffic?.gates.map((g) => [g.gate, g.ok])).toEqual([
    ['error rate', true],
    ['p95 latency (ms)', true],
  ]);
  expect(run.migration.validation?.checks.map((c) => [c.check, c.ok])).toEqual([
    ['rowCount cameras', true],
    ['checksum cameras', true],
    ['md5 of id, name and address matches', true],
  ]);
  await expectMappingsHold(db, plan);
  expect(await flagPercent(db, 'use_cameras_v2')).toBe(100);
  const archived = await db.query(`SELECT * FROM tidemark_archive.cameras_old ORDER BY id`);

  // The application wrote cameras after cleanup removed the sync: reverting would lose that, so it is refused ...
  const refused = await h.client.waitForEnd((await h.client.revert(plan, { autoApprove: true })).workflowId);
  expect(refused.state).toBe('failed');
  expect(refused.error).toMatch(
    /^revert refused, nothing was changed: copy cameras: cameras has taken the application's writes \(flag use_cameras_v2 at 100%\) and nothing copies them back to cameras_old since cleanup removed the sync: .*; revert with --discard-new-writes to accept that$/,
  );
  expect(await tableExists(db, 'cameras')).toBe(true);

  // ... unless accepted: then the old table moves back as it was archived, the flag goes to 0, the steps come down.
  const { workflowId } = await h.client.revert(plan, { autoApprove: true, discardNewWrites: true });
  const reverted = await h.client.waitForEnd(workflowId);
  expect(reverted.error).toBeNull();
  expect(reverted.state).toBe('completed');
  expect([...reverted.compensations].reverse().map((c) => [c.phase, c.status])).toEqual([
    ['cleanup', 'done'],
    ['traffic', 'done'],
    ['schema', 'done'],
    ['schema', 'done'],
    ['schema', 'done'],
  ]);
  expect(await flagPercent(db, 'use_cameras_v2')).toBe(0);
  expect(schemaDump(db)).toBe(schemaBefore);
  expect(await db.query(`SELECT * FROM cameras_old ORDER BY id`)).toEqual(archived);
});

test('consolidation: seven tables folded into four under writes to all seven, then to all four on the new path', async () => {
  const ex = example('consolidation');
  const db = await h.db('consolidation');
  const plan = await examplePlanFor(ex, db, { rows: 2000, cleanupAfterMs: 600_000 });
  const events = (await db.query<{ c: string }>(`SELECT event_code AS c FROM event_settings ORDER BY 1`)).map(
    (r) => r.c,
  );
  const [{ admins }] = await db.query<{ admins: number }>(`SELECT count(*)::int AS admins FROM admins`);

  const run = await runUnderLoad(ex, db, plan, consolidationOldOps(events, admins, 2000), [
    ...consolidationNewOps(events, admins, 2000),
    ...consolidationAdminOps(events, admins),
  ]);

  expect(run.migration.error).toBeNull();
  expect(run.migration.state).toBe('completed');
  expect(run.migration.validation?.checks.every((c) => c.ok)).toBe(true);
  await expectMappingsHold(db, plan);
  // Seven archived (restorable), four in use, and the new tables reference each other.
  for (const t of [
    'requests',
    'notifications',
    'event_settings',
    'settings',
    'oauth_sessions',
    'spotify_auth',
    'admins',
  ])
    expect([t, await tableExists(db, `tidemark_archive.${t}`)]).toEqual([t, true]);
  const fks = await db.query<{ conname: string }>(
    `SELECT conname FROM pg_constraint WHERE contype = 'f' AND conrelid::regclass::text IN ('users', 'auth_sessions', 'events', 'song_requests') ORDER BY 1`,
  );
  expect(fks.map((f) => f.conname)).toEqual(['auth_sessions_user_fk', 'events_owner_fk', 'song_requests_event_fk']);
});

test('events: weddings become generic events with new ids; old clients read them through the compatibility views', async () => {
  const ex = example('events');
  const db = await h.db('events');
  const plan = await examplePlanFor(ex, db, { rows: 800, cleanupAfterMs: 600_000 });
  const [{ n }] = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM wedding_invitations`);

  const run = await runUnderLoad(ex, db, plan, weddingOps(800, n));

  expect(run.migration.error).toBeNull();
  expect(run.migration.state).toBe('completed');
  await expectMappingsHold(db, plan);
  const [{ types }] = await db.query<{ types: string[] }>(`SELECT array_agg(DISTINCT event_type) AS types FROM events`);
  expect(types).toEqual(['wedding']);
  // The views under the old names show exactly the archived tables' rows.
  for (const t of ['wedding_events', 'wedding_invitations']) {
    const [d] = await db.query<{ a: number; b: number }>(
      `SELECT (SELECT count(*) FROM (SELECT * FROM public.${t} EXCEPT ALL SELECT * FROM tidemark_archive.${t}) x)::int AS a,
              (SELECT count(*) FROM (SELECT * FROM tidemark_archive.${t} EXCEPT ALL SELECT * FROM public.${t}) y)::int AS b`,
    );
    expect([t, d]).toEqual([t, { a: 0, b: 0 }]);
  }
  const steps = (
    await db.query<{ step_id: string; phase: string }>(
      `SELECT step_id, phase FROM tidemark.history WHERE status = 'applied' ORDER BY id`,
    )
  ).map((r) => [r.step_id, r.phase]);
  expect(steps).toEqual([
    ['006_event_types_foundation', 'schema'],
    ['007_events_core_tables', 'schema'],
    ['008_enhanced_indexing', 'schema'],
    ['009_wedding_compatibility', 'cleanup'],
    ['011_event_participants_fk', 'cleanup'],
  ]);
});

test("events: aborted while the archived wedding tables await their drop, they come back with the engine's writes", async () => {
  const ex = example('events');
  const db = await h.db('eventsdrop');
  const base = await examplePlanFor(ex, db, { rows: 300 });
  const plan = { ...base, cleanup: { ...base.cleanup!, dropAfter: 3_600_000 } };
  const running = runExample(h.client, ex, plan, { url: db.url, out: new PassThrough() });
  running.catch(() => undefined);
  const id = `tidemark-${plan.name}`;
  await eventually(async () => {
    const s = await h.client.status(id);
    if (s.state !== 'running') throw new StopWaiting(`migration ${s.state}: ${s.error}`);
    return s.waitingUntil?.what === 'drop of archived tables';
  }, 'the wait for the drop');
  // The wedding tables are archived and the compatibility views stand in their place; the engine writes weddings,
  // which the write back carries into the archived tables.
  const engine = startWorkload(db.url, eventsEngineOps(300), { concurrency: 2, opsPerSecond: 100, seed: 3 });
  try {
    await eventually(async () => ops(engine) >= 40, 'the engine writing');
  } finally {
    await engine.stop();
  }
  const shown = async () => ({
    weddings: await db.query(`SELECT * FROM public.wedding_events ORDER BY id`),
    invitations: await db.query(`SELECT * FROM public.wedding_invitations ORDER BY id`),
  });
  const views = await shown();
  await h.client.abort(id, { reason: 'back to the wedding app' });
  const final = await h.client.waitForEnd(id);
  expect(final.state).toBe('rolled-back');
  expect(final.compensations.filter((c) => c.status !== 'done')).toEqual([]);
  // The tables are back where the views were, holding exactly what the views showed.
  expect(await tableExists(db, 'events')).toBe(false);
  expect(await shown()).toEqual(views);
  const [{ made }] = await db.query<{ made: number }>(
    `SELECT count(*)::int AS made FROM wedding_events WHERE couple_name LIKE 'Engine couple %'`,
  );
  expect(made).toBeGreaterThan(0);
});

test('cameras: aborted after the canary reached 100 % with writes on both paths, cameras_old keeps every write', async () => {
  const ex = example('cameras');
  const db = await h.db('camerasabort');
  const plan = await examplePlanFor(ex, db, { rows: 1000, cleanupAfterMs: 600_000 });
  await abortAfterCutOver(ex, db, plan, camerasOldOps(1000), camerasOps(1000));
});

/**
 * The riskiest moment: traffic at 100 %, the new path has written rows the old tables hold only through the write back,
 * the old path still writes too. Stops both, checks the two sides agree through every mapping, aborts, and expects the
 * old tables untouched by the rollback: every write of either path is in them, and the new tables are gone.
 */
async function abortAfterCutOver(ex: Example, db: TestDb, plan: ResolvedPlan, oldPath: Op[], newPath: Op[]) {
  const oldTables = [
    ...new Set(plan.copy.flatMap((j) => (j.from ? [j.from] : (j.syncFrom ?? []).map((f) => f.table)))),
  ];
  const old = startWorkload(db.url, oldPath, { concurrency: 2, opsPerSecond: 100 });
  let fresh: Workload | undefined;
  const running = runExample(h.client, ex, plan, { url: db.url, out: new PassThrough() });
  running.catch(() => undefined);
  const id = `tidemark-${plan.name}`;
  try {
    await eventually(async () => {
      const s = await h.client.status(id);
      if (s.state !== 'running') throw new StopWaiting(`migration ${s.state}: ${s.error}`);
      return s.waitingUntil?.what === 'cleanup delay';
    }, 'traffic at 100 % and the cleanup delay');
    fresh = startWorkload(db.url, newPath, { concurrency: 2, opsPerSecond: 100, seed: 5 });
    await eventually(async () => ops(fresh!) >= 60, 'writes on the new path');
  } finally {
    await fresh?.stop();
    await old.stop();
  }
  expect(await flagPercent(db, plan.traffic!.flag)).toBe(100);
  for (const job of plan.copy) {
    expect([job.name, await mappingDiff(db, job)]).toEqual([job.name, { onlyInSource: 0, onlyInTarget: 0 }]);
  }
  const snapshot = () => Promise.all(oldTables.map((t) => db.query(`SELECT * FROM ${t} ORDER BY 1`)));
  const before = await snapshot();

  await h.client.abort(id, { reason: 'abort after cut-over' });
  const final = await h.client.waitForEnd(id);
  expect(final.state).toBe('rolled-back');
  expect(final.compensations.filter((c) => c.status !== 'done')).toEqual([]);
  expect(await snapshot()).toEqual(before);
  for (const job of plan.copy) expect([job.to, await tableExists(db, job.to)]).toEqual([job.to, false]);
  expect(await flagPercent(db, plan.traffic!.flag)).toBe(0);
}

test('events: aborted after the switch while the engine writes weddings, the wedding tables keep every write', async () => {
  const ex = example('events');
  const db = await h.db('eventsabort');
  const plan = await examplePlanFor(ex, db, { rows: 400, cleanupAfterMs: 600_000 });
  const [{ n }] = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM wedding_invitations`);
  await abortAfterCutOver(ex, db, plan, weddingOps(400, n), eventsEngineOps(400));
  // Weddings the engine created are in the wedding app's table, with their guests.
  const [made] = await db.query<{ weddings: number; guests: number }>(
    `SELECT count(DISTINCT w.id)::int AS weddings, count(i.id)::int AS guests
       FROM wedding_events w LEFT JOIN wedding_invitations i ON i.wedding_event_id = w.id
      WHERE w.couple_name LIKE 'Engine couple %'`,
  );
  expect(made.weddings).toBeGreaterThan(0);
  expect(made.guests).toBeGreaterThan(0);
});

test('consolidation: aborted after cut-over while the admin screens write users and events, nothing is lost', async () => {
  const ex = example('consolidation');
  const db = await h.db('consolidationabort');
  const plan = await examplePlanFor(ex, db, { rows: 1000, cleanupAfterMs: 600_000 });
  const events = (await db.query<{ c: string }>(`SELECT event_code AS c FROM event_settings ORDER BY 1`)).map(
    (r) => r.c,
  );
  const [{ admins }] = await db.query<{ admins: number }>(`SELECT count(*)::int AS admins FROM admins`);
  await abortAfterCutOver(ex, db, plan, consolidationOldOps(events, admins, 1000), [
    ...consolidationNewOps(events, admins, 1000),
    ...consolidationAdminOps(events, admins),
  ]);
  const [made] = await db.query<{ admins: number; announcements: number }>(
    `SELECT (SELECT count(*) FROM admins WHERE display_name LIKE 'v2 admin%')::int AS admins,
            (SELECT count(*) FROM notifications WHERE message LIKE 'v2 announcement %')::int AS announcements`,
  );
  expect(made.admins).toBeGreaterThan(0);
  expect(made.announcements).toBeGreaterThan(0);
});

test('events: the dry run rehearses every step, the cleanup steps after a simulated archive, and changes nothing', async () => {
  const db = await h.db('eventsdry');
  await seedExample(example('events'), db.url, 50);
  const { file } = examplePlanFile(example('events'), db);
  const r = await runCli(['plan', 'check', file, '--rehearse'], { [db.urlEnv]: db.url });
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  for (const step of [
    '006_event_types_foundation',
    '007_events_core_tables',
    '009_wedding_compatibility',
    '011_event_participants_fk',
  ])
    expect(r.stdout).toContain(`step ${step}: ok — up, down (schema restored exactly), up again`);
  expect(r.stdout).toContain('step 008_enhanced_indexing: NOT-REHEARSABLE');
  expect(r.stdout).toContain('database unchanged by the rehearsal: yes');
  expect(await tableExists(db, 'events')).toBe(false);
});

test('tidemark demo --list names every example and the runbook it automates', async () => {
  const r = await runCli(['demo', '--list']);
  expect(r.code).toBe(0);
  const names = r.stdout
    .split('\n')
    .slice(1)
    .filter(Boolean)
    .map((l) => l.trim().split(/\s+/)[0]);
  expect(names).toEqual(['meetings', 'cameras', 'consolidation', 'events', 'blue-green', 'product-attributes']);
  expect(r.stdout).toContain('004 versioned up/down migrations: a schema-only plan of timestamp-named steps');
});
