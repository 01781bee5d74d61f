// Bad input through the real CLI: every malformed plan gets one line per problem naming its path, exit code 2,
// no stack trace, no workflow, and no change to the database.
import { MigrationNotFoundError } from '../../src/client';
import { runCli } from '../helpers/cli';
import type { ResolvedPlan } from '../../src/plan/types';
import { allTableContents, schemaDump, tableExists } from '../helpers/db-assert';
import { eventually, Harness } from '../helpers/env';
import { MALFORMED, SQL_FILES, UNSAFE_QUERIES } from '../helpers/malformed-plans';
import { meetingsPlan, writePlan } from '../helpers/plans';

const h = new Harness();
beforeAll(() => h.start());
afterAll(() => h.stop());

const REFUSED = [...MALFORMED, ...UNSAFE_QUERIES];

test(`${REFUSED.length} malformed plans are each refused with a clear error and change nothing`, async () => {
  const db = await h.db('badplans');
  await db.query(
    `CREATE TABLE orders (id bigint PRIMARY KEY, amount_cents bigint); INSERT INTO orders VALUES (1, 100), (2, 250)`,
  );
  const schemaBefore = schemaDump(db);
  const contentsBefore = await allTableContents(db);
  const env = { DATABASE_URL: db.url, TIDEMARK_TASK_QUEUE: h.taskQueue };

  for (const c of REFUSED) {
    const file = writePlan(c.doc, c.files ?? SQL_FILES, c.format);
    for (const args of [
      ['start', file, '--auto-approve'],
      ['plan', 'check', file],
    ]) {
      const r = await runCli(args, env);
      const lines = r.stderr.trim().split('\n');
      expect({ title: c.title, args: args[0], code: r.code }).toEqual({ title: c.title, args: args[0], code: 2 });
      expect(lines).toEqual(c.errors.map((e) => `error: ${file}: ${e}`));
      expect(r.stdout).toBe('');
    }
  }
  // Nothing reached Temporal or the database.
  await expect(h.client.handle('orders-v2-refused')).rejects.toBeInstanceOf(MigrationNotFoundError);
  expect(schemaDump(db)).toBe(schemaBefore);
  expect(await allTableContents(db)).toEqual(contentsBefore);
  const [{ n }] = await db.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM pg_namespace WHERE nspname LIKE 'tidemark%'`,
  );
  expect(n).toBe(0);
});

test('usage errors exit 2 and unknown migrations exit 3', async () => {
  const usage = await runCli(['start']);
  expect(usage.code).toBe(2);
  // One line naming where the usage is, not the whole help.
  expect(usage.stderr).toBe("error: missing required argument 'plan' (see tidemark start --help)\n");
  expect(await runCli(['frobnicate'])).toMatchObject({
    code: 2,
    stderr: "error: unknown command 'frobnicate' (see tidemark --help)\n",
  });
  expect((await runCli(['throttle', 'x', '--batch-size', 'lots'])).code).toBe(2);
  const missing = await runCli(['status', 'never-started'], { TIDEMARK_TASK_QUEUE: h.taskQueue });
  expect(missing.code).toBe(3);
  expect(missing.stderr.trim()).toBe(
    'error: no migration "never-started" (looked for workflow tidemark-never-started)',
  );
});

test('a multi-statement gate started through the API (past the CLI check) cannot write: it is unreadable and pauses', async () => {
  const db = await h.db('gatewrite');
  const base = await meetingsPlan(db, { rows: 200 });
  const plan: ResolvedPlan = {
    ...base,
    copy: [base.copy[0]],
    validate: [{ rowCount: { copy: 'meetings' } }],
    traffic: {
      flagIn: 'source',
      flag: 'use_room_types',
      stages: [{ percent: 100, soak: 60_000, approval: false }],
      gates: [
        {
          name: 'sneaky',
          sql: 'SELECT 0; COMMIT; CREATE TABLE victim (x int)',
          max: 1,
          interval: 200,
          timeout: 2000,
          failureLimit: 1,
        },
      ],
    },
    cleanup: undefined,
  };
  const { workflowId } = await h.client.start(plan, { autoApprove: true });
  const paused = await eventually(async () => {
    const s = await h.client.status(workflowId);
    return s.state === 'paused' ? s : undefined;
  }, 'the rollout to pause');
  expect(paused.paused?.reason).toMatch(
    /^gate "sneaky" could not be read: cannot insert multiple commands into a prepared statement/,
  );
  expect(await tableExists(db, 'victim')).toBe(false);
  await h.client.abort(workflowId, { reason: 'test over' });
  await h.client.waitForEnd(workflowId);
});
