// Sample data for the meetings example: the application's tables before the migration, with realistic gaps
// (meetings without a type, a few orphaned participants), generated deterministically.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client } from 'pg';
import { projectRoot } from '../infra/tools';

export function meetingsExampleDir(): string {
  return join(projectRoot(), 'examples', 'meetings');
}

export async function seedMeetings(url: string, rows: number): Promise<void> {
  const c = new Client({ connectionString: url });
  await c.connect();
  try {
    await c.query(readFileSync(join(meetingsExampleDir(), 'seed.sql'), 'utf8'));
    await c.query(
      `INSERT INTO meetings (title, meeting_type, status, host_id, max_participants, created_at, updated_at)
       SELECT 'Meeting ' || g,
              (ARRAY['free_talk', 'lesson', 'teacher_class', 'public', 'private', NULL])[1 + g % 6],
              CASE WHEN g % 4 = 0 THEN 'ended' ELSE 'active' END,
              md5('host' || (g % 97))::uuid,
              2 + g % 20,
              timestamptz '2025-01-01 00:00:00+00' + g * interval '1 minute',
              timestamptz '2025-01-01 00:00:00+00' + g * interval '1 minute'
         FROM generate_series(1, $1::int) AS g`,
      [rows],
    );
    await c.query(
      `INSERT INTO meeting_participants (meeting_id, user_id, joined_at)
       SELECT 1 + g % $1::int, md5('user' || g)::uuid, timestamptz '2025-01-01 00:00:00+00' + g * interval '30 seconds'
         FROM generate_series(1, $1::int * 2) AS g`,
      [rows],
    );
    // A few participants of meetings that no longer exist, as the runbook's data-gap analysis expects to find.
    await c.query(
      `INSERT INTO meeting_participants (meeting_id, user_id) SELECT $1::int + 1000 + g, md5('ghost' || g)::uuid FROM generate_series(1, 3) AS g`,
      [rows],
    );
    await c.query('ANALYZE meetings; ANALYZE meeting_participants');
  } finally {
    await c.end();
  }
}
