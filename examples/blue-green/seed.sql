-- The blue database of the AI camera counting system (ai_camera_counting_db_blue) before the move: legacy cameras
-- (text IPs, "1920x1080" resolutions, 0/1 flags, JSON kept as text, timestamps without time zone) and their counting
-- results. Deterministic rows; the number of cameras comes from tidemark.seed_rows (default 2000):
--   PGOPTIONS='-c tidemark.seed_rows=2000' psql "$BLUE_DATABASE_URL" -f examples/blue-green/seed.sql
CREATE TEMP TABLE seed_params AS
  SELECT coalesce(nullif(current_setting('tidemark.seed_rows', true), ''), '2000')::int AS cameras;

CREATE TABLE cameras (
  id serial PRIMARY KEY,
  name varchar(100) NOT NULL,
  ip_address varchar(45) NOT NULL,
  port integer NOT NULL DEFAULT 554,
  resolution varchar(20) NOT NULL DEFAULT '1920x1080',
  fps integer NOT NULL DEFAULT 25,
  status varchar(20) NOT NULL DEFAULT 'online',
  is_active smallint NOT NULL DEFAULT 1,
  config text NOT NULL DEFAULT '{}',
  created_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
  updated_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC')
);

CREATE TABLE counting_results (
  id bigserial PRIMARY KEY,
  camera_id integer NOT NULL,
  at timestamp NOT NULL,
  count_in integer NOT NULL,
  count_out integer NOT NULL
);

INSERT INTO cameras (name, ip_address, port, resolution, fps, status, is_active, config, created_at, updated_at)
SELECT 'camera ' || i,
       '10.' || (i / 65536) % 256 || '.' || (i / 256) % 256 || '.' || i % 256,
       CASE WHEN i % 10 = 0 THEN 8554 ELSE 554 END,
       (ARRAY['1920x1080', '1280x720', '3840x2160'])[1 + i % 3],
       (ARRAY[25, 30, 15])[1 + i % 3],
       (ARRAY['online', 'offline', 'maintenance'])[1 + i % 3],
       CASE WHEN i % 7 = 0 THEN 0 ELSE 1 END,
       '{"zone": ' || i % 12 || ', "threshold": 0.' || i % 9 || '}',
       timestamp '2024-01-01' + i * interval '37 minutes',
       timestamp '2024-06-01' + i * interval '11 minutes'
  FROM generate_series(1, (SELECT cameras FROM seed_params)) AS i;

INSERT INTO counting_results (camera_id, at, count_in, count_out)
SELECT 1 + i % (SELECT cameras FROM seed_params), timestamp '2024-07-01' + i * interval '1 minute', i % 50, i % 45
  FROM generate_series(1, 3 * (SELECT cameras FROM seed_params)) AS i;

-- The application reads flags here (tidemark creates tidemark.flags at its first run).
