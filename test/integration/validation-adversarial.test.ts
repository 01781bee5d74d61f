// Validation that cannot be fooled or stalled: differences planted in the target behind the triggers' back are found
// whatever the worker's session settings, NULL keys are refused or counted, and a report about huge values stays small
// enough to end the migration instead of retrying forever.
import { loadPlan } from '../../src/plan/load';
import type { ResolvedPlan } from '../../src/plan/types';
import { Harness, type TestDb } from '../helpers/env';
import { writePlan } from '../helpers/plans';

const h = new Harness();
beforeAll(() => h.start());
afterAll(() => h.stop());

/** A copy of `t` into `t_v2` (created by the plan's step), held for approval before validation. */
function plan(db: TestDb, name: string, create: string, columns?: Record<string, string>): ResolvedPlan {
  return loadPlan(
    writePlan(
      {
        name,
        database: { urlEnv: db.urlEnv },
        backup: { enabled: false },
        approvals: ['validate'],
        schema: [{ id: '001', up: 'up.sql', down: 'down.sql' }],
        copy: [{ name: 't', from: 't', to: 't_v2', key: 'id', sync: 'forward', ...(columns ? { columns } : {}) }],
      },
      { 'up.sql': create, 'down.sql': 'DROP TABLE t_v2;' },
    ),
  );
}

/** Runs the plan to its validation approval, lets `tamper` change the target behind the triggers, then validates. */
async function validateAfter(db: TestDb, p: ResolvedPlan, tamper: string, urlOptions?: string) {
  if (urlOptions) h.env[db.urlEnv] = `${db.url}?options=${encodeURIComponent(urlOptions)}`;
  const { workflowId } = await h.client.start(p, { autoApprove: false });
  await h.approvalPending(workflowId, 'validate');
  await db.query(`BEGIN; SET LOCAL session_replication_role = replica; ${tamper}; COMMIT;`);
  await h.client.approve(workflowId);
  return h.client.waitForEnd(workflowId);
}

test('a float changed in its last digit is found even when the worker asks for rounded floats', async () => {
  const db = await h.db('advfloat');
  await db.query(
    `CREATE TABLE t (id bigint PRIMARY KEY, f float8 NOT NULL); INSERT INTO t SELECT g, 0.3 FROM generate_series(1, 100) g`,
  );
  const final = await validateAfter(
    db,
    plan(db, 'adv-float', 'CREATE TABLE t_v2 (id bigint PRIMARY KEY, f float8 NOT NULL);'),
    'UPDATE t_v2 SET f = 0.1::float8 + 0.2::float8 WHERE id = 42',
    '-c extra_float_digits=0',
  );
  expect(final.state).toBe('rolled-back');
  const checksum = final.validation!.checks.find((c) => c.kind === 'checksum')!;
  expect(checksum.message).toMatch(/differing keys: 42$/);
  const [d] = (checksum.details as { differences: { source: { f: string }; target: { f: string } }[] }).differences;
  expect(d).toMatchObject({ source: { f: '0.3' }, target: { f: '0.30000000000000004' } });
});

test('timestamptz → timestamp is converted in the database’s time zone, not the one in the worker’s URL', async () => {
  const db = await h.db('advtz');
  await db.query(`CREATE TABLE t (id bigint PRIMARY KEY, at timestamptz NOT NULL);
                  INSERT INTO t SELECT g, timestamptz '2026-03-08 06:30:00+00' + g * interval '1 minute' FROM generate_series(1, 100) g`);
  const [{ tz }] = await db.query<{ tz: string }>(`SELECT current_setting('TimeZone') AS tz`);
  const final = await validateAfter(
    db,
    plan(db, 'adv-tz', 'CREATE TABLE t_v2 (id bigint PRIMARY KEY, at timestamp NOT NULL);', { id: 'id', at: 'at' }),
    'SELECT 1',
    '-c TimeZone=America/New_York',
  );
  expect(final.state).toBe('completed');
  const shifted = await db.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM t JOIN t_v2 USING (id) WHERE t_v2.at <> (t.at AT TIME ZONE $1)`,
    [tz],
  );
  expect(shifted).toEqual([{ n: 0 }]);
});

test('NULL keys: refused by preflight in the source, counted as a difference in the target', async () => {
  const db = await h.db('advnull');
  await db.query(
    `CREATE TABLE t (id bigint UNIQUE, v text); INSERT INTO t SELECT g, 'v' FROM generate_series(1, 50) g; INSERT INTO t VALUES (NULL, 'no key')`,
  );
  const p = plan(db, 'adv-null', 'CREATE TABLE t_v2 (id bigint UNIQUE, v text);');
  const { workflowId } = await h.client.start(p, { autoApprove: true });
  const refused = await h.client.waitForEnd(workflowId);
  expect(refused.state).toBe('rolled-back');
  expect(refused.error).toContain('t.id is NULL in 1 row(s): a NULL key can be neither copied nor compared');

  await db.query(`DELETE FROM t WHERE id IS NULL`);
  const final = await validateAfter(db, { ...p, name: 'adv-null-2' }, `INSERT INTO t_v2 VALUES (NULL, 'planted')`);
  expect(final.state).toBe('rolled-back');
  const checksum = final.validation!.checks.find((c) => c.kind === 'checksum')!;
  expect(checksum.message).toBe('rows with a NULL id: 0 in the source, 1 in the target (no key to compare them by)');
});

test('differences in huge values end the migration with a small report naming the keys', async () => {
  const db = await h.db('advhuge');
  await db.query(`CREATE TABLE t (id bigint PRIMARY KEY, body text NOT NULL, n numeric NOT NULL);
                  INSERT INTO t SELECT g, repeat('x', 1000000), 0.7 FROM generate_series(1, 50) g`);
  const final = await validateAfter(
    db,
    plan(db, 'adv-huge', 'CREATE TABLE t_v2 (id bigint PRIMARY KEY, body text NOT NULL, n numeric NOT NULL);'),
    `UPDATE t_v2 SET body = body || ' ' WHERE id <= 40; UPDATE t_v2 SET n = 0.70 WHERE id = 50`,
  );
  expect(final.state).toBe('rolled-back');
  const checksum = final.validation!.checks.find((c) => c.kind === 'checksum')!;
  const diffs = (
    checksum.details as {
      differences: { key: string; source: Record<string, string>; target: Record<string, string> }[];
    }
  ).differences;
  expect(diffs.map((d) => d.key)).toEqual([...Array.from({ length: 40 }, (_, i) => String(i + 1)), '50']);
  // Only the column that differs, cut short; 0.7 and 0.70 shown as PostgreSQL prints them.
  expect(Object.keys(diffs[0].source)).toEqual(['body']);
  expect(diffs[0].source.body).toMatch(/^x{200}… \(1000000 characters, md5 [0-9a-f]{8}\)$/);
  expect(diffs[0].target.body).toMatch(/^x{200}… \(1000001 characters, md5 [0-9a-f]{8}\)$/);
  expect(diffs[40]).toEqual({ key: '50', source: { n: '0.7' }, target: { n: '0.70' } });
  expect(JSON.stringify(final).length).toBeLessThan(200_000);
});
