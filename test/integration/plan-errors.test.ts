// Bad input through the real CLI: every malformed plan gets one line per problem naming its path, exit code 2,
// no stack trace, no workflow, and no change to the database.
import { MigrationNotFoundError } from '../../src/client';
import { runCli } from '../helpers/cli';
import { allTableContents, schemaDump } from '../helpers/db-assert';
import { Harness } from '../helpers/env';
import { MALFORMED, SQL_FILES } from '../helpers/malformed-plans';
import { writePlan } from '../helpers/plans';

const h = new Harness();
beforeAll(() => h.start());
afterAll(() => h.stop());

test(`${MALFORMED.length} malformed plans are each refused with a clear error and change nothing`, async () => {
  const db = await h.db('badplans');
  await db.query(
    `CREATE TABLE orders (id bigint PRIMARY KEY, amount_cents bigint); INSERT INTO orders VALUES (1, 100), (2, 250)`,
  );
  const schemaBefore = schemaDump(db);
  const contentsBefore = await allTableContents(db);
  const env = { DATABASE_URL: db.url, TIDEMARK_TASK_QUEUE: h.taskQueue };

  for (const c of MALFORMED) {
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
  expect((await runCli(['start'])).code).toBe(2);
  expect((await runCli(['throttle', 'x', '--batch-size', 'lots'])).code).toBe(2);
  const missing = await runCli(['status', 'never-started'], { TIDEMARK_TASK_QUEUE: h.taskQueue });
  expect(missing.code).toBe(3);
  expect(missing.stderr.trim()).toBe(
    'error: no migration "never-started" (looked for workflow tidemark-never-started)',
  );
});
