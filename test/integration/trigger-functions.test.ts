// tidemark's trigger functions run with the settings of tidemark's own sessions, not the writer's: the database's
// TimeZone (a date taken from a timestamptz by the writer's zone would differ from the copy's), and the search path
// the plan's expressions resolve in. They run as their owner, so an application role needs no privilege on the new
// table or in tidemark's schema, but only while no other login role can create objects on that path: such a role could
// put a function there that the path picks first and have the owner run it. Then they run as the writer, and preflight
// says so.
import { Client, Pool } from 'pg';
import { ensureTidemarkSchema } from '../../src/db/bootstrap';
import { functionContext } from '../../src/db/catalog';
import { resolveMapping } from '../../src/phases/copy/mapping';
import { forwardTriggerDdl } from '../../src/phases/copy/sql';
import { checkTargetDatabase, runPreflightChecks } from '../../src/phases/preflight/activities';
import { loadPlan } from '../../src/plan/load';
import { Harness } from '../helpers/env';
import { writePlan } from '../helpers/plans';

const h = new Harness();
afterAll(() => h.stop());

test('sync functions run as their owner with the database TimeZone, and as the writer once the path is open to others', async () => {
  const db = await h.db('trigger_functions');
  const role = `trigfn_app_${process.pid}`;
  await db.query(`ALTER DATABASE "${db.name}" SET TimeZone = 'UTC';
    CREATE TABLE events (id bigint PRIMARY KEY, at timestamptz NOT NULL);
    CREATE TABLE events_v2 (id bigint PRIMARY KEY, day date NOT NULL);
    DROP ROLE IF EXISTS ${role}; CREATE ROLE ${role} LOGIN;
    GRANT SELECT, INSERT, UPDATE, DELETE ON events TO ${role}`);
  const plan = loadPlan(
    writePlan(
      {
        name: 'trigger-functions',
        database: { urlEnv: db.urlEnv },
        backup: { enabled: false },
        schema: [{ id: '1', up: 'up.sql', down: 'down.sql' }],
        copy: [{ name: 'events', from: 'events', to: 'events_v2', key: 'id', columns: { id: 'id', day: 'at::date' } }],
      },
      { 'up.sql': 'SELECT 1', 'down.sql': 'SELECT 1' },
    ),
  );
  const pool = new Pool({ connectionString: db.url });
  const appUrl = new URL(db.url);
  appUrl.username = role;
  const app = new Client({ connectionString: appUrl.toString() });
  await app.connect();
  try {
    await ensureTidemarkSchema(pool);
    const m = await resolveMapping(pool, plan.copy[0], { runKey: 'trigger-functions' });
    expect(m.functions).toMatchObject({ definer: true, timeZone: 'UTC', searchPath: ['public'] });
    for (const stmt of forwardTriggerDdl(m)) await pool.query(stmt);

    // Five in the morning UTC on New Year's Day is still the old year in Honolulu.
    await app.query(`SET TimeZone = 'Pacific/Honolulu'`);
    await app.query(`INSERT INTO events VALUES (1, '2024-01-01T05:00:00Z')`);
    expect(await db.query(`SELECT id::int, day::text FROM events_v2`)).toEqual([{ id: 1, day: '2024-01-01' }]);
    const findings = async () =>
      (await runPreflightChecks(pool, plan)).findings.filter((f) => f.check === 'trigger functions');
    expect(await findings()).toEqual([]);

    // Once the application's role may create functions in public, the owner's rights are not lent any more.
    await db.query(`GRANT CREATE ON SCHEMA public TO ${role}`);
    const open = await functionContext(pool);
    expect(open).toMatchObject({ definer: false, untrusted: `schema public (role ${role})` });
    expect(await findings()).toEqual([
      expect.objectContaining({
        status: 'warn',
        message: expect.stringMatching(
          new RegExp(`^schema public \\(role ${role}\\) can create objects on the search path`),
        ),
      }),
    ]);
    // Blue-green: the target's writes are captured by triggers once traffic moves, and its path is open the same way.
    const blue = await h.db('trigger_functions_blue');
    await blue.query(`CREATE TABLE events (id bigint PRIMARY KEY, at timestamptz NOT NULL)`);
    const blueGreen = loadPlan(
      writePlan(
        {
          name: 'trigger-functions-bg',
          database: { urlEnv: blue.urlEnv },
          target: { urlEnv: db.urlEnv },
          backup: { enabled: false },
          copy: [{ name: 'events', from: 'events', to: 'events', key: 'id' }],
          cleanup: {},
        },
        {},
      ),
    );
    const bluePool = new Pool({ connectionString: blue.url });
    try {
      const onTarget = (await checkTargetDatabase(bluePool, pool, blueGreen)).filter((f) =>
        f.check.startsWith('trigger functions'),
      );
      expect(onTarget).toEqual([expect.objectContaining({ check: 'trigger functions on the target', status: 'warn' })]);
    } finally {
      await bluePool.end();
    }
    for (const stmt of forwardTriggerDdl({ ...m, functions: open })) await pool.query(stmt);
    await expect(app.query(`INSERT INTO events VALUES (2, now())`)).rejects.toThrow(
      /permission denied for (table events_v2|schema tidemark)/,
    );
  } finally {
    await app.end();
    await pool.end();
    await db.query(`REVOKE CREATE ON SCHEMA public FROM ${role}; DROP OWNED BY ${role}; DROP ROLE ${role}`);
  }
});
