-- Sample rows for the tables seed.sql creates, generated deterministically: meetings with realistic gaps (some
-- without a type) and a few participants of meetings that no longer exist, as the runbook's data-gap analysis expects.
-- The number of meetings is the setting tidemark.seed_rows (`tidemark demo --rows`), 5000 when it is not set.
CREATE TEMP TABLE seed_size AS
  SELECT coalesce(nullif(current_setting('tidemark.seed_rows', true), '')::int, 5000) AS rows;

INSERT INTO meetings (title, meeting_type, status, host_id, max_participants, created_at, updated_at)
SELECT 'Meeting ' || g,
       (ARRAY['free_talk', 'lesson', 'teacher_class', 'public', 'private', NULL])[1 + g % 6],
       CASE WHEN g % 4 = 0 THEN 'ended' ELSE 'active' END,
       md5('host' || (g % 97))::uuid,
       2 + g % 20,
       timestamptz '2025-01-01 00:00:00+00' + g * interval '1 minute',
       timestamptz '2025-01-01 00:00:00+00' + g * interval '1 minute'
  FROM seed_size, generate_series(1, rows) AS g;

INSERT INTO meeting_participants (meeting_id, user_id, joined_at)
SELECT 1 + g % rows, md5('user' || g)::uuid, timestamptz '2025-01-01 00:00:00+00' + g * interval '30 seconds'
  FROM seed_size, generate_series(1, rows * 2) AS g;

INSERT INTO meeting_participants (meeting_id, user_id)
SELECT rows + 1000 + g, md5('ghost' || g)::uuid FROM seed_size, generate_series(1, 3) AS g;

DROP TABLE seed_size;
ANALYZE meetings;
ANALYZE meeting_participants;
