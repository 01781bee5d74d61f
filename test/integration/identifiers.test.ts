// Names as real schemas have them: another schema, mixed case, spaces, a uuid key, NULLs, jsonb, arrays and bytea,
// and a target column left to its default. Every phase quotes them, from the backup to the archive.
import { exceptBothWays } from '../helpers/db-assert';
import { eventually, Harness } from '../helpers/env';
import { tempDir, writePlan } from '../helpers/plans';
import { loadPlan } from '../../src/plan/load';

const h = new Harness();
beforeAll(() => h.start());
afterAll(() => h.stop());

const SOURCE = `"Sales Ops"."Customer Events"`;
const COLUMNS = `"Event ID", "User Name", "Payload", "Tag List", "Blob", "At"`;

test('a table in another schema with mixed-case, spaced names migrates exactly, backup to archive', async () => {
  const db = await h.db('identifiers');
  await db.query(`
    CREATE SCHEMA "Sales Ops";
    CREATE TABLE ${SOURCE} ("Event ID" uuid PRIMARY KEY, "User Name" text, "Payload" jsonb, "Tag List" text[], "Blob" bytea, "At" timestamptz);
    INSERT INTO ${SOURCE}
    SELECT md5(g::text)::uuid,
           CASE WHEN g % 7 = 0 THEN NULL ELSE 'user ' || g END,
           CASE WHEN g % 5 = 0 THEN NULL ELSE jsonb_build_object('n', g, 'tags', jsonb_build_array('a', g)) END,
           CASE WHEN g % 4 = 0 THEN '{}'::text[] WHEN g % 9 = 0 THEN NULL ELSE ARRAY['x' || g, NULL, 'quote"d'] END,
           CASE WHEN g % 3 = 0 THEN NULL ELSE decode(md5(g::text), 'hex') END,
           timestamptz '2025-01-01' + g * interval '1 minute'
      FROM generate_series(1, 4000) g;`);
  const plan = loadPlan(
    writePlan(
      {
        name: 'customer-events-v2',
        database: { urlEnv: db.urlEnv },
        backup: { dir: tempDir('tidemark-backups-'), tables: ['Sales Ops.Customer Events'] },
        schema: [{ id: '001_customer_events_v2', up: 'up.sql', down: 'down.sql' }],
        copy: [
          {
            name: 'events',
            from: 'Sales Ops.Customer Events',
            to: 'Sales Ops.customer events v2',
            key: 'Event ID',
            columns: {
              'Event ID': '"Event ID"',
              'user name': '"User Name"',
              Payload: '"Payload"',
              'Tag List': '"Tag List"',
              Blob: '"Blob"',
              At: '"At"',
            },
            sync: 'bidirectional',
            batchSize: 300,
          },
        ],
        traffic: { flag: 'use_customer_events_v2', stages: [{ percent: 100, soak: '2s' }] },
        cleanup: { after: '100ms', archive: ['Sales Ops.Customer Events'] },
      },
      {
        'up.sql': `CREATE TABLE "Sales Ops"."customer events v2" ("Event ID" uuid PRIMARY KEY, "user name" text, "Payload" jsonb,
                     "Tag List" text[], "Blob" bytea, "At" timestamptz, origin text NOT NULL DEFAULT 'v1');`,
        'down.sql': `DROP TABLE "Sales Ops"."customer events v2";`,
      },
    ),
  );
  const { workflowId } = await h.client.start(plan, { autoApprove: true });

  // Writes on the source while the copy runs, then on the target once traffic is at 100 %.
  await eventually(async () => (await h.client.status(workflowId)).phase === 'copy', 'the copy to start', 60_000, 50);
  await db.query(
    `UPDATE ${SOURCE} SET "User Name" = 'renamed', "Tag List" = ARRAY['new'] WHERE "Event ID" = md5('10')::uuid`,
  );
  await db.query(`DELETE FROM ${SOURCE} WHERE "Event ID" = md5('11')::uuid`);
  await db.query(`INSERT INTO ${SOURCE} VALUES (md5('new')::uuid, NULL, '{"late": true}', NULL, '\\x00ff', now())`);
  await eventually(async () => (await h.client.status(workflowId)).traffic?.percent === 100, 'traffic at 100%');
  await db.query(
    `UPDATE "Sales Ops"."customer events v2" SET "Payload" = '{"written": "on v2"}' WHERE "Event ID" = md5('12')::uuid`,
  );

  const final = await h.client.waitForEnd(workflowId);
  expect(final.error).toBeNull();
  expect(final.state).toBe('completed');
  expect(final.validation?.checks.map((c) => [c.check, c.ok])).toEqual([
    ['rowCount events', true],
    ['checksum events', true],
  ]);
  const target = `SELECT "Event ID", "user name", "Payload", "Tag List", "Blob", "At" FROM "Sales Ops"."customer events v2"`;
  expect(await exceptBothWays(db, `SELECT ${COLUMNS} FROM tidemark_archive."Customer Events"`, target)).toEqual({
    onlyInA: 0,
    onlyInB: 0,
  });
  const rows = await db.query<{ n: number; v1: number; renamed: number; v2write: number }>(`
    SELECT count(*)::int AS n, count(*) FILTER (WHERE origin = 'v1')::int AS v1,
           count(*) FILTER (WHERE "user name" = 'renamed')::int AS renamed,
           count(*) FILTER (WHERE "Payload" = '{"written": "on v2"}')::int AS v2write
      FROM "Sales Ops"."customer events v2"`);
  expect(rows[0]).toEqual({ n: 4000, v1: 4000, renamed: 1, v2write: 1 });
  // The write made on the new path reached the old table (reverse sync), which the archive keeps.
  const [old] = await db.query<{ payload: unknown }>(
    `SELECT "Payload" AS payload FROM tidemark_archive."Customer Events" WHERE "Event ID" = md5('12')::uuid`,
  );
  expect(old.payload).toEqual({ written: 'on v2' });
});
