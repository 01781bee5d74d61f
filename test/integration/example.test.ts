// The meetings example, end to end on a real Temporal server and a real PostgreSQL.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { meetingsExampleDir } from '../../src/demo/meetings';
import { exceptBothWays, flagPercent, tableExists } from '../helpers/db-assert';
import { recreateDatabase } from '../../src/infra/postgres';
import { Harness, pgAdmin } from '../helpers/env';
import { meetingsPlan } from '../helpers/plans';

const MEETINGS_MAPPING = `SELECT id, title, meeting_type,
  CASE meeting_type WHEN 'free_talk' THEN 'free_talk' WHEN 'lesson' THEN 'lesson' WHEN 'teacher_class' THEN 'teacher_class'
       WHEN 'public' THEN 'free_talk' WHEN 'private' THEN 'lesson' ELSE 'free_talk' END AS room_type,
  status, host_id, max_participants, created_at, updated_at`;

const h = new Harness();
beforeAll(() => h.start());
afterAll(() => h.stop());

test('the meetings example runs through all seven phases and leaves the new tables matching the old', async () => {
  const db = await h.db('example');
  const plan = await meetingsPlan(db, { rows: 4000 });
  const { workflowId } = await h.client.start(plan, { autoApprove: true, startedBy: 'test' });
  const final = await h.client.waitForEnd(workflowId);

  expect(final.error).toBeNull();
  expect(final.state).toBe('completed');
  expect(final.phases.map((p) => [p.name, p.status])).toEqual([
    ['preflight', 'completed'],
    ['backup', 'completed'],
    ['schema', 'completed'],
    ['copy', 'completed'],
    ['validate', 'completed'],
    ['traffic', 'completed'],
    ['cleanup', 'completed'],
  ]);

  // The old table now lives in the archive; the new one holds exactly its rows through the mapping.
  expect(await tableExists(db, 'meetings')).toBe(false);
  expect(await tableExists(db, 'tidemark_archive.meetings')).toBe(true);
  expect(
    await exceptBothWays(
      db,
      `${MEETINGS_MAPPING} FROM tidemark_archive.meetings`,
      `${MEETINGS_MAPPING.replace(/CASE[\s\S]*END AS room_type/, 'room_type')} FROM meetings_v2`,
    ),
  ).toEqual({
    onlyInA: 0,
    onlyInB: 0,
  });
  const [{ n }] = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM meetings_v2`);
  expect(n).toBe(4000);
  // room_states holds one row per active meeting (3 in 4 are active).
  const [{ rs }] = await db.query<{ rs: number }>(
    `SELECT count(*)::int AS rs FROM room_states r JOIN tidemark_archive.meetings m ON m.id::text = r.room_id AND m.status = 'active'`,
  );
  expect(rs).toBe(3000);

  // History records every step with the sha256 of the SQL that ran.
  const history = await db.query<{ step_id: string; checksum: string; status: string }>(
    `SELECT step_id, checksum, status FROM tidemark.history WHERE workflow_id = $1 ORDER BY id`,
    [workflowId],
  );
  const sha = (f: string) =>
    createHash('sha256')
      .update(readFileSync(join(meetingsExampleDir(), f), 'utf8'))
      .digest('hex');
  expect(history).toEqual([
    { step_id: '001_create_meetings_v2', checksum: sha('sql/001_create_meetings_v2.up.sql'), status: 'applied' },
    { step_id: '002_create_room_states', checksum: sha('sql/002_create_room_states.up.sql'), status: 'applied' },
  ]);

  expect(await flagPercent(db, 'use_room_types')).toBe(100);
  // Sync triggers are gone once cleanup ran.
  const [{ triggers }] = await db.query<{ triggers: number }>(
    `SELECT count(*)::int AS triggers FROM pg_trigger WHERE tgname LIKE 'tidemark_sync_%'`,
  );
  expect(triggers).toBe(0);

  // The backup exists, is what its metadata says, and the report was kept with the migration.
  const backup = final.backup as { file: string; sha256: string; metadataFile: string };
  expect(existsSync(backup.file)).toBe(true);
  expect(createHash('sha256').update(readFileSync(backup.file)).digest('hex')).toBe(backup.sha256);
  expect(JSON.parse(readFileSync(backup.metadataFile, 'utf8'))).toMatchObject({
    plan: plan.name,
    sha256: backup.sha256,
    tables: ['meetings', 'meeting_participants'],
  });
  const reports = await db.query<{ kind: string; ok: boolean }>(
    `SELECT kind, (report->>'ok')::boolean AS ok FROM tidemark.reports WHERE workflow_id = $1`,
    [workflowId],
  );
  expect(reports).toEqual([{ kind: 'validation', ok: true }]);
  expect(final.validation?.checks.map((c) => [c.check, c.ok])).toEqual([
    ['rowCount meetings', true],
    ['checksum meetings', true],
    ['rowCount room-states', true],
    ['checksum room-states', true],
    ['every meeting has a room type', true],
  ]);

  // Visible in the Web UI's list through the search attributes.
  const listed = (await h.client.list()).find((m) => m.workflowId === workflowId);
  expect(listed).toMatchObject({ plan: plan.name, phase: 'cleanup', state: 'completed' });
});

test('a database dropped and re-created under a running worker gets tidemark’s own tables again', async () => {
  const db = await h.db('recreated');
  const plan = await meetingsPlan(db, { rows: 300 });
  const first = await h.client.start(plan, { autoApprove: true });
  expect((await h.client.waitForEnd(first.workflowId)).state).toBe('completed');

  // Same name, same connection string: the worker's pool is the one that bootstrapped the old database.
  await recreateDatabase(pgAdmin(), db.name);
  const again = await meetingsPlan(db, { rows: 300 });
  // The plan completed on the database that was dropped: starting it again is a re-run.
  const second = await h.client.start(again, { autoApprove: true, rerun: true });
  const final = await h.client.waitForEnd(second.workflowId);
  expect(final.error).toBeNull();
  expect(final.state).toBe('completed');
  const history = await db.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM tidemark.history WHERE workflow_id = $1`,
    [second.workflowId],
  );
  expect(history[0].n).toBe(2);
});
