// The ledger across runs: a schema-only migration run, shown and reverted (seed 004's migration:run, :show, :revert);
// a completed plan refused, re-run applying nothing, a drifted step refused; history through a worker and directly;
// a revert refusing what can no longer be reverted.
import { createHash } from 'node:crypto';
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { RejectedError } from '../../src/client';
import { seedExample } from '../../src/demo/examples';
import { runExample } from '../../src/demo/run';
import type { HistoryReport } from '../../src/cli/format';
import type { MigrationStatus } from '../../src/migration/messages';
import { loadPlan } from '../../src/plan/load';
import { runCli } from '../helpers/cli';
import { allTableContents, schemaDump, tableExists } from '../helpers/db-assert';
import { eventually, Harness } from '../helpers/env';
import { example, examplePlanFile, examplePlanFor } from '../helpers/examples';
import { writePlan } from '../helpers/plans';

const h = new Harness();
beforeAll(() => h.start());
afterAll(() => h.stop());

const pa = example('product-attributes');
const STEPS = ['1709123456789-AddProductAttributes', '1709123456790-SeedProductCategories'];
const sha = (file: string) => createHash('sha256').update(readFileSync(file, 'utf8')).digest('hex');
const states = (r: HistoryReport) => r.plans[0].steps.map((s) => [s.step, s.state]);

test('a schema-only migration runs, shows in history and reverts to exactly the schema and rows it started from', async () => {
  const db = await h.db('schemaonly');
  const plan = await examplePlanFor(pa, db, { rows: 400 });
  const schemaBefore = schemaDump(db);
  const contentsBefore = await allTableContents(db);

  const run = await runExample(h.client, pa, plan, { url: db.url, out: new PassThrough() });

  expect(run.migration.state).toBe('completed');
  expect(states(run.historyBefore!)).toEqual(STEPS.map((s) => [s, 'applied']));
  expect(run.revert?.error).toBeNull();
  expect(run.revert?.state).toBe('completed');
  // Each step's down, newest first, after a backup of the whole database.
  expect(run.revert!.compensations.map((c) => [c.phase, c.status, c.description.replace(/ — .*/, '')])).toEqual([
    ['schema', 'done', `run migrations/${STEPS[0]}.down.sql (undo ${STEPS[0]})`],
    ['schema', 'done', `run migrations/${STEPS[1]}.down.sql (undo ${STEPS[1]})`],
  ]);
  expect((run.revert!.backup as { tables: unknown }).tables).toBe('all');
  const reverted = run.historyAfter!.plans[0].steps;
  expect(reverted.map((s) => [s.step, s.state, s.revertedBy])).toEqual(
    STEPS.map((s) => [s, 'reverted', `tidemark-revert-${plan.name}`]),
  );
  expect(schemaDump(db)).toBe(schemaBefore);
  expect(await allTableContents(db)).toEqual(contentsBefore);

  // Visible in the Web UI's list like a migration, with its own kind.
  const listed = (await h.client.list()).find((m) => m.workflowId === `tidemark-revert-${plan.name}`);
  expect(listed).toMatchObject({ kind: 'revert', plan: plan.name, phase: 'schema', state: 'completed' });
  // Reverted, the plan may start again without --rerun.
  const again = await h.client.start(plan, { autoApprove: true });
  expect((await h.client.waitForEnd(again.workflowId)).state).toBe('completed');
});

test('a completed plan is refused, a re-run applies nothing, history shows pending steps, and a drifted step is refused with both checksums', async () => {
  const db = await h.db('rerun');
  await seedExample(pa, db.url, 200);
  const f = examplePlanFile(pa, db);
  const name = f.plan().name;
  const env = { TIDEMARK_TASK_QUEUE: h.taskQueue };

  const first = await runCli(['start', f.file, '--auto-approve', '--watch'], env);
  expect(first.stderr).toBe('');
  expect(first.code).toBe(0);

  const refused = await runCli(['start', f.file, '--auto-approve'], env);
  expect(refused.code).toBe(4);
  expect(refused.stderr).toMatch(
    new RegExp(
      `^rejected: migration ${name} already completed at .* \\(tidemark-${name}\\); this is the same plan file, so a re-run would apply nothing\\. Start it again with --rerun, or undo it with tidemark revert ${name}\\n$`,
    ),
  );

  const rerun = await runCli(['start', f.file, '--auto-approve', '--rerun', '--watch', '--json'], env);
  expect(rerun.code).toBe(0);
  const status = JSON.parse(rerun.stdout) as MigrationStatus;
  expect(status.state).toBe('completed');
  const messages = status.events.map((e) => e.message);
  expect(messages[0]).toMatch(/^started again by /);
  for (const s of STEPS)
    expect(messages).toContain(`schema step ${s} already applied by tidemark-${name}: not applied again`);
  expect(messages).toContain('schema: nothing applied, every step was applied by an earlier run');
  expect(status.phases.find((p) => p.name === 'schema')?.result).toEqual({ applied: [], appliedEarlier: STEPS });
  const [{ n }] = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM tidemark.history`);
  expect(n).toBe(2);

  // Through a worker: the CLI's environment does not hold the plan's urlEnv.
  const viaWorker = await runCli(['history', f.file, '--json'], env);
  expect(viaWorker.code).toBe(0);
  const report = JSON.parse(viaWorker.stdout) as HistoryReport;
  expect(report.via).toBe('worker');
  expect(states(report)).toEqual(STEPS.map((s) => [s, 'applied']));

  // A new step in the plan is pending; read directly, the urlEnv being set here.
  writeFileSync(
    join(f.dir, 'migrations', 'weight.up.sql'),
    'ALTER TABLE product_variants ADD COLUMN weight_grams integer;',
  );
  writeFileSync(join(f.dir, 'migrations', 'weight.down.sql'), 'ALTER TABLE product_variants DROP COLUMN weight_grams;');
  const text = readFileSync(f.file, 'utf8').replace(
    /^validate:/m,
    '  - id: 1709123456791-AddVariantWeight\n    up: migrations/weight.up.sql\n    down: migrations/weight.down.sql\nvalidate:',
  );
  writeFileSync(f.file, text);
  const direct = await runCli(['history', f.file], { ...env, [db.urlEnv]: db.url });
  expect(direct.code).toBe(0);
  expect(direct.stdout).toContain(`plan ${name} ($${db.urlEnv}): 2 applied, 0 reverted, 1 pending, 0 drift`);
  expect(direct.stdout).toMatch(/\n {2}pending {3}1709123456791-AddVariantWeight +schema +[0-9a-f]{12} not applied\n/);
  expect(direct.stdout).toMatch(
    new RegExp(`\\n  applied   ${STEPS[0]} +schema +[0-9a-f]{12} .* by tidemark-${name}\\n`),
  );

  // The first step's SQL changed after it was applied: drift, refused before anything changes.
  const upFile = join(f.dir, 'migrations', `${STEPS[0]}.up.sql`);
  const applied = sha(upFile);
  appendFileSync(upFile, '-- reformatted\n');
  const drifted = await runCli(['start', f.file, '--auto-approve', '--rerun', '--watch'], env);
  expect(drifted.code).toBe(1);
  expect(drifted.stdout).toContain(`step ${STEPS[0]}: drift: changed since tidemark-${name} (run `);
  expect(drifted.stdout).toContain(
    `up migrations/${STEPS[0]}.up.sql is sha256 ${sha(upFile)}, applied as sha256 ${applied}`,
  );
  expect(await db.query(`SELECT 1 FROM information_schema.columns WHERE column_name = 'weight_grams'`)).toEqual([]);
  const history = await runCli(['history', name, '--json'], { ...env, [db.urlEnv]: db.url });
  expect(history.code).toBe(0);
  // By plan name, the plan comes from the last run: the one whose step drifted.
  expect(states(JSON.parse(history.stdout) as HistoryReport)).toEqual([
    [STEPS[0], 'drift'],
    [STEPS[1], 'applied'],
    ['1709123456791-AddVariantWeight', 'pending'],
  ]);
});

test('a revert refuses up front what can no longer be reverted, and never runs beside its migration', async () => {
  const db = await h.db('norevert');
  await db.query(
    `CREATE TABLE orders (id bigint PRIMARY KEY, total numeric NOT NULL);
     INSERT INTO orders SELECT g, g * 1.5 FROM generate_series(1, 300) g;`,
  );
  const file = writePlan(
    {
      name: `orders-dropped-${db.name.slice(-6)}`,
      database: { urlEnv: db.urlEnv },
      backup: { enabled: false },
      schema: [{ id: '001_orders_v2', up: 'up.sql', down: 'down.sql' }],
      copy: [{ name: 'orders', from: 'orders', to: 'orders_v2', key: 'id' }],
      cleanup: { archive: ['orders'], dropAfter: '100ms' },
    },
    {
      'up.sql': 'CREATE TABLE orders_v2 (id bigint PRIMARY KEY, total numeric NOT NULL);',
      'down.sql': 'DROP TABLE orders_v2;',
    },
  );
  const plan = loadPlan(file);
  const blocked = await h.client.start({ ...plan, approvals: ['schema'] }, { autoApprove: false });
  await h.approvalPending(blocked.workflowId, 'schema');
  await expect(h.client.revert(plan, { autoApprove: true })).rejects.toThrow(RejectedError);
  await expect(h.client.revert(plan, { autoApprove: true })).rejects.toThrow(
    `migration ${plan.name} is still running: abort it instead (tidemark abort ${plan.name}); revert undoes completed migrations`,
  );
  await h.client.approve(blocked.workflowId, { by: 'test' });
  expect((await h.client.waitForEnd(blocked.workflowId)).state).toBe('completed');
  expect(await tableExists(db, 'tidemark_archive.orders')).toBe(false);

  const cli = await runCli(['revert', file, '--auto-approve'], { TIDEMARK_TASK_QUEUE: h.taskQueue });
  expect(cli.code).toBe(1);
  expect(cli.stdout).toContain(`revert of ${plan.name} (tidemark-revert-${plan.name}): FAILED, phase preflight`);
  const workflowId = `tidemark-revert-${plan.name}`;
  const final = await h.client.waitForEnd(workflowId);
  expect(final.state).toBe('failed');
  expect(final.error).toMatch(
    /^revert refused, nothing was changed: archive orders: tidemark_archive\.orders was dropped at .*: the old table is gone and the revert cannot bring it back/,
  );
  expect(final.phases.map((p) => [p.name, p.status])).toEqual([
    ['preflight', 'failed'],
    ['backup', 'pending'],
    ['cleanup', 'pending'],
    ['traffic', 'pending'],
    ['copy', 'pending'],
    ['schema', 'pending'],
  ]);
  expect(await tableExists(db, 'orders_v2')).toBe(true);
  const history = await db.query<{ status: string }>(`SELECT status FROM tidemark.history`);
  expect(history).toEqual([{ status: 'applied' }]);
  await eventually(async () => (await h.client.list()).some((m) => m.workflowId === workflowId), 'the revert listed');
});

test('a plan whose last run was aborted (rolled back) starts again without --rerun', async () => {
  const db = await h.db('restart');
  await db.query(`CREATE TABLE orders (id bigint PRIMARY KEY, total numeric NOT NULL);
    INSERT INTO orders SELECT g, g * 1.5 FROM generate_series(1, 100) g;`);
  const plan = loadPlan(
    writePlan(
      {
        name: `orders-restart-${db.name.slice(-6)}`,
        database: { urlEnv: db.urlEnv },
        backup: { enabled: false },
        approvals: ['validate'],
        schema: [{ id: '001_orders_v2', up: 'up.sql', down: 'down.sql' }],
        copy: [{ name: 'orders', from: 'orders', to: 'orders_v2', key: 'id' }],
        validate: [{ rowCount: { copy: 'orders' } }],
      },
      {
        'up.sql': 'CREATE TABLE orders_v2 (id bigint PRIMARY KEY, total numeric NOT NULL);',
        'down.sql': 'DROP TABLE orders_v2;',
      },
    ),
  );
  const first = await h.client.start(plan, { autoApprove: false });
  await h.approvalPending(first.workflowId, 'validate');
  await h.client.abort(first.workflowId, { reason: 'not today' });
  expect((await h.client.waitForEnd(first.workflowId)).state).toBe('rolled-back');
  const again = await h.client.start(plan, { autoApprove: true });
  const final = await h.client.waitForEnd(again.workflowId);
  expect(final.state).toBe('completed');
  expect(final.events.map((e) => e.message)).not.toContainEqual(expect.stringMatching(/^started again by /));
  // Completed now: a third start is refused as before.
  await expect(h.client.start(plan, { autoApprove: true })).rejects.toThrow(/already completed at /);
});

test('a revert waits for approval even when the plan asked none of its migration, and changes nothing before it', async () => {
  const db = await h.db('revertapproval');
  await db.query(`CREATE TABLE orders (id bigint PRIMARY KEY, total numeric NOT NULL);`);
  const plan = loadPlan(
    writePlan(
      {
        name: `orders-note-${db.name.slice(-6)}`,
        database: { urlEnv: db.urlEnv },
        backup: { enabled: false },
        schema: [{ id: '001_note', up: 'up.sql', down: 'down.sql' }],
      },
      { 'up.sql': 'ALTER TABLE orders ADD COLUMN note text;', 'down.sql': 'ALTER TABLE orders DROP COLUMN note;' },
    ),
  );
  expect(plan.approvals).toEqual([]);
  const started = await h.client.start(plan, { autoApprove: false });
  expect((await h.client.waitForEnd(started.workflowId)).state).toBe('completed');
  const schemaAfter = schemaDump(db);

  const { workflowId } = await h.client.revert(plan, { autoApprove: false });
  const waiting = await h.approvalPending(workflowId, 'revert');
  expect(waiting.state).toBe('waiting-approval');
  // The command it names approves the revert, not the migration (long finished).
  expect(waiting.events.map((e) => e.message)).toContain(
    `waiting for approval of revert: tidemark approve revert-${plan.name} (or signal approve)`,
  );
  expect(schemaDump(db)).toBe(schemaAfter);
  await h.client.approve(workflowId, { by: 'test', gate: 'revert' });
  expect((await h.client.waitForEnd(workflowId)).state).toBe('completed');
  expect(schemaDump(db)).not.toContain('note');
});
