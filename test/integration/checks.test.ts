// Trustworthy checks: exact validation naming the differing keys, validation that does not flap under live writes,
// backups that restore, rehearsal that catches a bad down, and preflight that refuses clearly.
import { TidemarkClient } from '../../src/client';
import { loadPlan, sha256 } from '../../src/plan/load';
import type { ResolvedPlan } from '../../src/plan/types';
import { runCli } from '../helpers/cli';
import { allTableContents, schemaDump, tableExists } from '../helpers/db-assert';
import { approvalOf, eventually, Harness, temporalAddress, type TestDb } from '../helpers/env';
import { meetingsPlan, writePlan } from '../helpers/plans';
import { meetingsSourceOps, startWorkload } from '../helpers/writers';

const h = new Harness();
beforeAll(() => h.start());
afterAll(() => h.stop());

const waitForGate = (client: TidemarkClient, workflowId: string, gate: string) => approvalOf(client, workflowId, gate);

/** The meetings job only, forward sync, checked by row count and checksum. */
async function meetingsChecked(
  db: TestDb,
  rows: number,
  approvals: ResolvedPlan['approvals'],
  chunkSize = 1000,
): Promise<ResolvedPlan> {
  const base = await meetingsPlan(db, { rows, approvals });
  return {
    ...base,
    copy: [{ ...base.copy[0], sync: 'forward', discardNewPathWrites: true }],
    validate: [{ rowCount: { copy: 'meetings' } }, { checksum: { copy: 'meetings', chunkSize } }],
    cleanup: undefined,
  };
}

test('a target with one changed value, one missing row and one extra row: validation names exactly those keys and rolls back', async () => {
  const db = await h.db('corrupt');
  const plan = await meetingsChecked(db, 5000, ['validate']);
  const { workflowId } = await h.client.start(plan, { autoApprove: false });
  await waitForGate(h.client, workflowId, 'validate');
  // Corrupt the target behind the triggers' back (replica mode keeps every trigger out of it).
  await db.query(`
    BEGIN;
    SET LOCAL session_replication_role = replica;
    UPDATE meetings_v2 SET title = 'tampered' WHERE id = 1234;
    DELETE FROM meetings_v2 WHERE id = 2345;
    INSERT INTO meetings_v2 SELECT 999999, title, meeting_type, room_type, status, host_id, max_participants, created_at, updated_at FROM meetings_v2 WHERE id = 1;
    COMMIT;`);
  await h.client.approve(workflowId);
  const final = await h.client.waitForEnd(workflowId);

  expect(final.state).toBe('rolled-back');
  const checksum = final.validation!.checks.find((c) => c.kind === 'checksum')!;
  expect(checksum.ok).toBe(false);
  const diffs = (
    checksum.details as {
      differences: { key: string; source: Record<string, string> | null; target: Record<string, string> | null }[];
    }
  ).differences;
  expect(diffs.map((d) => d.key)).toEqual(['1234', '2345', '999999']);
  expect(diffs[0].source?.title).toBe('Meeting 1234');
  expect(diffs[0].target?.title).toBe('tampered');
  expect(diffs[1]).toMatchObject({ source: expect.objectContaining({ id: '2345' }), target: null });
  expect(diffs[2]).toMatchObject({ source: null, target: expect.objectContaining({ id: '999999' }) });
  const rowCount = final.validation!.checks.find((c) => c.kind === 'rowCount')!;
  expect(rowCount.message).toBe('source 5000 rows, target 5000 rows (difference +0)');
  expect(final.error).toMatch(
    /validation failed — checksum meetings: 3 of 5 chunks differ; differing keys: 1234, 2345, 999999/,
  );
  expect(await tableExists(db, 'meetings_v2')).toBe(false);
  // The report is kept with the migration.
  const [report] = await db.query<{ ok: boolean; keys: string[] }>(
    `SELECT (report->>'ok')::boolean AS ok, ARRAY(SELECT d->>'key' FROM jsonb_array_elements(report->'checks'->1->'details'->'differences') d) AS keys
       FROM tidemark.reports WHERE workflow_id = $1 AND kind = 'validation'`,
    [workflowId],
  );
  expect(report).toEqual({ ok: false, keys: ['1234', '2345', '999999'] });
});

test('validation under concurrent writes, with sync triggers active, passes without flapping', async () => {
  const db = await h.db('noflap');
  const rows = 20_000;
  const plan = await meetingsChecked(db, rows, ['validate', 'traffic'], 200);
  const { workflowId } = await h.client.start(plan, { autoApprove: false });
  await waitForGate(h.client, workflowId, 'validate');
  const writers = startWorkload(
    db.url,
    meetingsSourceOps(() => rows),
    { opsPerSecond: 400, concurrency: 6 },
  );
  const written = () => writers.stats.inserts + writers.stats.updates + writers.stats.deletes;
  try {
    // The workload is writing before validation starts, and still writes while it runs (counted, not timed: how
    // many writes fit in the validation depends on how busy the machine is).
    await eventually(async () => written() > 50, 'the workload writing', 60_000, 20);
    await h.client.approve(workflowId);
    const atApproval = written();
    const atTraffic = await waitForGate(h.client, workflowId, 'traffic');
    const duringValidation = written() - atApproval;
    await writers.stop();
    expect(atTraffic.validation?.ok).toBe(true);
    const checksum = atTraffic.validation!.checks[1];
    expect(checksum.message).toMatch(/^\d+ rows identical in \d+ chunks$/);
    expect((checksum.details as { chunks: number }).chunks).toBeGreaterThan(50);
    expect(duringValidation).toBeGreaterThan(0);
  } finally {
    await writers.stop().catch(() => undefined);
  }
  await h.client.abort(workflowId, { reason: 'test over' });
  await h.client.waitForEnd(workflowId);
});

test('abort --restore-backup puts back the pre-migration contents a step destroyed', async () => {
  const db = await h.db('restore');
  const base = await meetingsPlan(db, { rows: 2000, soakMs: 60_000 });
  // Scripts carry their true sha256: preflight stores them by it and refuses one that does not match.
  const script = (path: string, sql: string) => ({ path, sql, sha256: sha256(sql) });
  const lossy = {
    id: '000_normalize_titles',
    transactional: true,
    up: script(
      'lossy.up.sql',
      `UPDATE meetings SET title = upper(title) WHERE id % 2 = 0; DELETE FROM meeting_participants WHERE id % 5 = 0;`,
    ),
    down: script('lossy.down.sql', 'SELECT 1; -- nothing can undo this'),
  };
  const plan = { ...base, schema: [lossy, ...base.schema] };
  const before = await allTableContents(db);
  const { workflowId } = await h.client.start(plan, { autoApprove: true });
  await eventually(async () => (await h.client.status(workflowId)).traffic?.percent === 10, 'traffic at 10%');
  expect(await allTableContents(db)).not.toEqual(before);

  const r = await runCli(['abort', plan.name, '--restore-backup', '--reason', 'bad data'], {
    TIDEMARK_TASK_QUEUE: h.taskQueue,
  });
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  expect(r.stdout).toMatch(/backup restored into meetings, meeting_participants/);
  const final = await h.client.waitForEnd(workflowId);
  expect(final.state).toBe('rolled-back');
  expect(await allTableContents(db)).toEqual(before);
});

test('rehearsal catches a down that does not undo its up, and leaves the database unchanged', async () => {
  const db = await h.db('rehearse');
  await db.query(
    `CREATE TABLE orders (id bigint PRIMARY KEY, total numeric NOT NULL); INSERT INTO orders VALUES (1, 10), (2, 20);`,
  );
  const file = writePlan(
    {
      name: 'orders-audit',
      database: { urlEnv: 'DATABASE_URL' },
      backup: { enabled: false },
      schema: [
        { id: '001_audit', up: 'sql/001.up.sql', down: 'sql/001.down.sql' },
        { id: '002_index', up: 'sql/002.up.sql', down: 'sql/002.down.sql' },
      ],
      validate: [
        { sql: { name: 'no negative totals', query: 'SELECT count(*) FROM orders WHERE total < 0', expect: 0 } },
      ],
      traffic: {
        flag: 'audit',
        stages: [{ percent: 100 }],
        gates: [{ name: 'error rate', sql: 'SELECT rate FROM app_metrics', max: 0.1 }],
      },
    },
    {
      'sql/001.up.sql':
        'CREATE TABLE orders_audit (id bigint PRIMARY KEY, order_id bigint NOT NULL);\nALTER TABLE orders ADD COLUMN audited boolean;',
      'sql/001.down.sql': 'DROP TABLE orders_audit;',
      'sql/002.up.sql': 'CREATE INDEX orders_audit_order_idx ON orders_audit (order_id);',
      'sql/002.down.sql': 'DROP INDEX orders_audit_order_idx;',
    },
  );
  const schemaBefore = schemaDump(db);
  const contentsBefore = await allTableContents(db);
  const r = await runCli(['plan', 'check', file, '--rehearse'], { DATABASE_URL: db.url });
  expect(r.stderr).toBe('');
  expect(r.code).toBe(1);
  expect(r.stdout).toContain('step 001_audit: FAILED — down does not undo up');
  expect(r.stdout).toContain('left behind:        column public.orders.audited boolean');
  expect(r.stdout).toContain('step 002_index: NOT-REACHED');
  // Gate and assertion SQL are tried too: a gate that cannot be read would pause the rollout at run time.
  expect(r.stdout).toContain('assertion "no negative totals": ok — reads 0 now');
  expect(r.stdout).toContain('gate "error rate": WARNING, cannot be read now — relation "app_metrics" does not exist');
  expect(r.stdout).toContain('database unchanged by the rehearsal: yes');
  expect(schemaDump(db)).toBe(schemaBefore);
  expect(await allTableContents(db)).toEqual(contentsBefore);
});

describe('preflight refuses clearly and changes nothing', () => {
  async function runToEnd(client: TidemarkClient, plan: ResolvedPlan) {
    const { workflowId } = await client.start(plan, { autoApprove: true });
    return client.waitForEnd(workflowId);
  }

  /** events → `target`; the one schema step creates events_v2. */
  async function eventsPlan(db: TestDb, target: string): Promise<ResolvedPlan> {
    return (await import('../../src/plan/load')).loadPlan(
      writePlan(
        {
          name: 'events-v2',
          database: { urlEnv: db.urlEnv },
          backup: { enabled: false },
          schema: [{ id: '1', up: 'up.sql', down: 'down.sql' }],
          copy: [{ name: 'events', from: 'events', to: target, key: 'id' }],
        },
        { 'up.sql': 'CREATE TABLE events_v2 (id bigint PRIMARY KEY, name text);', 'down.sql': 'DROP TABLE events_v2;' },
      ),
    );
  }

  test('when pg_dump is missing', async () => {
    const queue = `${h.taskQueue}-nodump`;
    const worker = await h.startWorker({ taskQueue: queue, binaries: { pgDump: '/nonexistent/pg_dump' } });
    const client = await TidemarkClient.connect({ address: temporalAddress(), taskQueue: queue });
    try {
      const db = await h.db('nodump');
      const plan = await meetingsPlan(db, { rows: 100 });
      const schemaBefore = schemaDump(db);
      const final = await runToEnd(client, plan);
      expect(final.state).toBe('rolled-back');
      expect(final.phases[0]).toMatchObject({ name: 'preflight', status: 'failed' });
      expect(final.error).toContain(
        'pg_dump: pg_dump not found (install the PostgreSQL client programs or set TIDEMARK_PG_BIN)',
      );
      expect(schemaDump(db)).toBe(schemaBefore);
    } finally {
      await client.close();
      await worker.shutdown();
    }
  });

  test('when the copy key is not unique', async () => {
    const db = await h.db('dupkey');
    await db.query(
      `CREATE TABLE events (id bigint NOT NULL, name text); INSERT INTO events VALUES (1, 'a'), (2, 'b'), (2, 'c');`,
    );
    const final = await runToEnd(h.client, await eventsPlan(db, 'events_v2'));
    expect(final.state).toBe('rolled-back');
    expect(final.error).toBe(
      'preflight failed: copy events: key: events.id is not a unique, non-null key: 2 (2×); nothing was changed',
    );
    expect(await tableExists(db, 'events_v2')).toBe(false);
  });

  test('when a copy target does not exist and no schema step creates it', async () => {
    const db = await h.db('notarget');
    await db.query(`CREATE TABLE events (id bigint PRIMARY KEY, name text); INSERT INTO events VALUES (1, 'a');`);
    // A typo'd target name: the step creates events_v2, the copy writes to events_v3.
    const final = await runToEnd(h.client, await eventsPlan(db, 'events_v3'));
    expect(final.state).toBe('rolled-back');
    expect(final.error).toBe(
      'preflight failed: copy events: target: events_v3 does not exist and no schema step creates it; nothing was changed',
    );
    expect(final.phases.find((p) => p.name === 'schema')?.status).toBe('pending');
    expect(await tableExists(db, 'events_v2')).toBe(false);
  });

  test('when a declared fail check finds rows', async () => {
    const db = await h.db('failcheck');
    const base = await meetingsPlan(db, { rows: 100 });
    const plan = {
      ...base,
      preflight: {
        ...base.preflight,
        checks: [{ name: 'orphaned participants', sql: base.preflight.checks[1].sql, severity: 'fail' as const }],
      },
    };
    const final = await runToEnd(h.client, plan);
    expect(final.state).toBe('rolled-back');
    expect(final.error).toBe('preflight failed: orphaned participants: 3 row(s) found; nothing was changed');
    expect(await tableExists(db, 'meetings_v2')).toBe(false);
  });
});

describe('a check, gate or assertion whose query gives several values is not read by its first row', () => {
  /** orders, with an app_metrics table of one error rate per endpoint: the second breaches. */
  async function ordersDb(tag: string) {
    const db = await h.db(tag);
    await db.query(`
      CREATE TABLE orders (id bigint PRIMARY KEY, total numeric NOT NULL); INSERT INTO orders VALUES (1, 10), (2, 20);
      CREATE TABLE app_metrics (endpoint text, rate float8); INSERT INTO app_metrics VALUES ('/a', 0.01), ('/b', 0.5);`);
    return db;
  }
  const plan = (db: TestDb, name: string, more: Record<string, unknown>) =>
    writePlan(
      {
        name: `${name}-${db.name.slice(-6)}`,
        database: { urlEnv: db.urlEnv },
        backup: { enabled: false },
        schema: [{ id: '001', up: 'up.sql', down: 'down.sql' }],
        ...more,
      },
      { 'up.sql': 'ALTER TABLE orders ADD COLUMN note text;', 'down.sql': 'ALTER TABLE orders DROP COLUMN note;' },
    );
  const gates = [{ name: 'error rate', sql: 'SELECT rate FROM app_metrics', max: 0.1, interval: '200ms' }];

  test('plan check --rehearse says so for each', async () => {
    const db = await ordersDb('manyrehearse');
    const file = plan(db, 'rates', {
      preflight: { checks: [{ name: 'big orders', sql: 'SELECT id FROM orders WHERE total > 5', severity: 'fail' }] },
      validate: [{ sql: { name: 'totals', query: 'SELECT id, total FROM orders WHERE id = 1', expect: 1 } }],
      traffic: { flag: 'rates', stages: [{ percent: 100 }], gates },
    });
    const r = await runCli(['plan', 'check', file, '--rehearse'], { [db.urlEnv]: db.url });
    expect(r.code).toBe(1);
    const many = 'where one value is read: aggregate them (count(*), max(…), …)';
    expect(r.stdout).toMatch(new RegExp(`big orders.*the query returned 2 rows, ${escape(many)}`));
    expect(r.stdout).toContain(`gate "error rate": WARNING, cannot be read now — the query returned 2 rows, ${many}`);
    expect(r.stdout).toContain('assertion "totals"');
    expect(r.stdout).toContain('the query returned 2 columns, where one value is read: select one');
  });

  test('a migration: the gate pauses the rollout instead of passing on the first row; the assertion fails', async () => {
    const db = await ordersDb('manyrun');
    const gated = await loadPlan(
      plan(db, 'rates-gate', { traffic: { flag: 'rates', stages: [{ percent: 100, soak: '30s' }], gates } }),
    );
    const { workflowId } = await h.client.start(gated, { autoApprove: true });
    const paused = await eventually(async () => {
      const s = await h.client.status(workflowId);
      return s.state === 'paused' ? s : undefined;
    }, 'the rollout to pause');
    expect(paused.paused?.reason).toBe(
      'gate "error rate" could not be read: the query returned 2 rows, where one value is read: aggregate them (count(*), max(…), …)',
    );
    await h.client.abort(workflowId, { reason: 'test over' });
    expect((await h.client.waitForEnd(workflowId)).state).toBe('rolled-back');

    const asserted = await loadPlan(
      plan(db, 'rates-assert', {
        validate: [{ sql: { name: 'rates', query: 'SELECT rate FROM app_metrics', max: 0.1 } }],
      }),
    );
    const { workflowId: second } = await h.client.start(asserted, { autoApprove: true });
    const final = await h.client.waitForEnd(second);
    expect(final.state).toBe('rolled-back');
    expect(final.validation?.checks[0]).toMatchObject({
      check: 'rates',
      ok: false,
      message: 'the query returned 2 rows, where one value is read: aggregate them (count(*), max(…), …)',
    });
  });
});

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
