// Preflight checks the source half of each copy job before anything changes: the mapping's expressions are run over
// the source (LIMIT 0), a key column must be filled from the source's key, and a source that cannot be synced exactly
// is refused. Before, each of these failed only at the copy phase, after the backup and the schema steps had run. What
// a schema step may yet create (its SQL names it) is a warning, not a refusal.
import { Pool } from 'pg';
import { runPreflightChecks } from '../../src/phases/preflight/activities';
import { loadPlan } from '../../src/plan/load';
import { eventually, Harness } from '../helpers/env';
import { writePlan } from '../helpers/plans';

const h = new Harness();
afterAll(() => h.stop());

const UP = 'CREATE TABLE events_v2 (id bigint PRIMARY KEY, name text);';

test('mapping expressions, key fill and syncability are checked on the source at preflight', async () => {
  const db = await h.db('preflight_sources');
  await db.query(`
    CREATE TABLE events (id bigint PRIMARY KEY, name text);
    INSERT INTO events SELECT i, 'e' || i FROM generate_series(1, 10) i;
    CREATE TABLE parts (id bigint PRIMARY KEY, name text) PARTITION BY RANGE (id);
    CREATE TABLE parts_p1 PARTITION OF parts FOR VALUES FROM (0) TO (1000);
    CREATE TABLE acct (id bigint PRIMARY KEY DEFERRABLE INITIALLY IMMEDIATE, name text);
    CREATE TYPE tstatus AS ENUM ('old', 'new');
    CREATE TABLE tick (id bigint PRIMARY KEY, st text);
    CREATE TABLE cust_v2 (id bigint PRIMARY KEY, name text);
    CREATE TABLE tick_v2 (id bigint PRIMARY KEY, st tstatus);`);
  const pool = new Pool({ connectionString: db.url });
  /** The findings about copy job `j` of a one-job plan whose schema step runs `up`. */
  const findings = async (job: Record<string, unknown>, up = UP, check = 'copy j: source') => {
    const plan = loadPlan(
      writePlan(
        {
          name: 'sources',
          database: { urlEnv: db.urlEnv },
          backup: { enabled: false },
          schema: [{ id: '1', up: 'up.sql', down: 'down.sql' }],
          copy: [{ name: 'j', to: 'events_v2', key: 'id', ...job }],
        },
        { 'up.sql': up, 'down.sql': 'DROP TABLE events_v2;' },
      ),
    );
    const report = await runPreflightChecks(pool, plan);
    return report.findings.filter((f) => f.check === check).map((f) => `${f.status}: ${f.message}`);
  };
  try {
    expect(await findings({ from: 'events', columns: { id: 'id', name: 'upper(name)' } })).toEqual([
      'ok: 2 column expression(s) run on events; it can be synced exactly',
    ]);
    // A typo: no step creates "nme".
    expect(await findings({ from: 'events', columns: { id: 'id', name: 'upper(nme)' } })).toEqual([
      'fail: "name" ← upper(nme): column "nme" does not exist | code 42703 | hint: Perhaps you meant to reference the column "s.name".',
    ]);
    // The step creates the function the mapping calls: it cannot run yet, and may once the step ran.
    const tidy = `CREATE FUNCTION tidy(t text) RETURNS text LANGUAGE sql AS $$ SELECT trim(t) $$; ${UP}`;
    const later = await findings({ from: 'events', columns: { id: 'id', name: 'tidy(name)' } }, tidy);
    expect(later).toHaveLength(1);
    expect(later[0]).toMatch(
      /^warn: "name" ← tidy\(name\): function tidy\(text\) does not exist .*\(unless a schema step creates it first\)$/,
    );
    expect(await findings({ from: 'events', columns: { id: 'id + 1', name: 'name' } })).toEqual([
      'fail: key column "id" must be filled from source key "id", got "id + 1"',
    ]);
    expect(await findings({ from: 'parts', columns: { id: 'id', name: 'name' } })).toEqual([
      expect.stringMatching(
        /^fail: source "public"\."parts" is partitioned: .* Sync a plain table, or copy with sync: none$/,
      ),
    ]);
    expect(await findings({ from: 'parts', sync: 'none' })).toEqual(['ok: parts reads']);
    expect(
      await findings({ query: 'SELECT id, nam AS name FROM events', columns: { id: 'id', name: 'name' } }),
    ).toEqual([expect.stringMatching(/^fail: the source query: column "nam" does not exist/)]);

    // What a schema step makes valid is a warning, not a refusal: the unique index a DEFERRABLE key needs, an enum
    // label the mapping casts to, a column added to a target that exists already.
    const index = `CREATE UNIQUE INDEX acct_id_now ON acct (id); ${UP}`;
    expect(await findings({ from: 'acct', columns: { id: 'id', name: 'name' } }, index)).toEqual([
      expect.stringMatching(
        /^warn: the key \("id"\) of acct is unique only at commit .* \(unless a schema step changes acct first\)$/,
      ),
    ]);
    const label = `ALTER TYPE tstatus ADD VALUE 'archived'; ${UP}`;
    const cast = `CASE WHEN st = 'old' THEN 'archived'::tstatus ELSE st::tstatus END`;
    expect(await findings({ from: 'tick', to: 'events_v2', columns: { id: 'id', name: cast } }, label)).toEqual([
      expect.stringMatching(
        /^warn: "name" ← .*: invalid input value for enum tstatus: "archived" .*\(unless a schema step creates it first\)$/,
      ),
    ]);
    const column = 'ALTER TABLE cust_v2 ADD COLUMN email text;';
    const toCust = { from: 'events', to: 'cust_v2', columns: { id: 'id', name: 'name', email: 'name' } };
    expect(await findings(toCust, column, 'copy j: mapping')).toEqual([
      'warn: target cust_v2 has no column "email" (unless a schema step adds it first)',
    ]);
    expect(await findings(toCust, 'SELECT 1', 'copy j: mapping')).toEqual([
      'fail: target cust_v2 has no column "email"',
    ]);

    // A value the target's column cannot take, where the target exists already: text into an enum.
    const intoEnum = { from: 'tick', to: 'tick_v2', columns: { id: 'id', st: 'st' } };
    expect(await findings(intoEnum, 'SELECT 1')).toEqual([
      expect.stringMatching(/^fail: "st" ← st: column "st" is of type tstatus but expression is of type text/),
    ]);
    expect(await findings({ ...intoEnum, columns: { id: 'id', st: 'st::tstatus' } }, 'SELECT 1')).toEqual([
      'ok: 2 column expression(s) run on tick; it can be synced exactly',
    ]);
  } finally {
    await pool.end();
  }
});

test("long transactions and locks are looked for in the plan's database only, and named without their query text", async () => {
  const db = await h.db('preflight_long');
  const other = await h.db('preflight_long_other');
  await db.query(`CREATE TABLE events (id bigint PRIMARY KEY, name text);`);
  // The same table in another database, its oid perhaps equal: a lock there does not block this one.
  await other.query(`CREATE TABLE events (id bigint PRIMARY KEY, name text);`);
  const plan = loadPlan(
    writePlan(
      {
        name: 'long-tx',
        database: { urlEnv: db.urlEnv },
        backup: { enabled: false },
        preflight: { maxTransactionAge: '500ms' },
        schema: [{ id: '1', up: 'up.sql', down: 'down.sql' }],
      },
      { 'up.sql': 'ALTER TABLE events ADD COLUMN note text;', 'down.sql': 'ALTER TABLE events DROP COLUMN note;' },
    ),
  );
  const pool = new Pool({ connectionString: db.url });
  const elsewhere = new Pool({ connectionString: other.url, application_name: 'elsewhere' });
  const here = new Pool({ connectionString: db.url, application_name: 'reporting' });
  const [far, near] = await Promise.all([elsewhere.connect(), here.connect()]);
  try {
    await far.query(`BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE; SELECT 'password=hunter2' AS secret;`);
    await near.query(`BEGIN; SELECT 'card 4111' AS secret;`);
    const nearPid = (await near.query('SELECT pg_backend_pid() AS p')).rows[0].p;
    // Both older than maxTransactionAge.
    await eventually(async () => {
      const r = await pool.query(
        `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name IN ('elsewhere', 'reporting')
            AND xact_start < now() - interval '1 second'`,
      );
      return r.rows[0].n === 2;
    }, 'both transactions to age');
    const report = await runPreflightChecks(pool, plan);
    const long = report.findings.filter((f) => f.check === 'long transactions');
    expect(long).toEqual([
      {
        check: 'long transactions',
        status: 'warn',
        message: expect.stringMatching(
          new RegExp(
            `^pid ${nearPid} \\(user postgres, application "reporting", idle in transaction\\) has a transaction open for `,
          ),
        ),
      },
    ]);
    expect(report.findings.find((f) => f.check === 'locks')).toMatchObject({ status: 'ok' });
    expect(JSON.stringify(report)).not.toMatch(/hunter2|4111|elsewhere/);
  } finally {
    far.release();
    near.release();
    await Promise.all([pool.end(), elsewhere.end(), here.end()]);
  }
});
