-- The AI camera counting system before the migration: the legacy cameras_old table (text IPs, "1920x1080"
-- resolutions, 0/1 flags, JSON kept as text, timestamps without time zone), its counting results, and the API metrics
-- the rollout gates read. Deterministic rows; the number of cameras comes from tidemark.seed_rows (default 3000):
--   PGOPTIONS='-c tidemark.seed_rows=3000' psql "$DATABASE_URL" -f examples/cameras/seed.sql
CREATE TEMP TABLE seed_params AS
  SELECT coalesce(nullif(current_setting('tidemark.seed_rows', true), ''), '3000')::int AS cameras;

CREATE TABLE cameras_old (
  id serial PRIMARY KEY,
  name varchar(100) NOT NULL,
  description text,
  ip_address varchar(45) NOT NULL,
  port integer NOT NULL DEFAULT 554,
  rtsp_url text NOT NULL,
  username varchar(50),
  password varchar(100),
  model varchar(50),
  manufacturer varchar(50),
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
  "timestamp" timestamptz NOT NULL,
  count_in integer NOT NULL,
  count_out integer NOT NULL,
  confidence numeric(5, 4) NOT NULL
);

-- What the application reports per minute; the rollout's error-rate and latency gates read the newest row.
CREATE TABLE camera_api_metrics (
  id bigserial PRIMARY KEY,
  at timestamptz NOT NULL DEFAULT now(),
  requests integer NOT NULL,
  errors integer NOT NULL,
  p95_ms integer NOT NULL
);

INSERT INTO cameras_old (name, description, ip_address, port, rtsp_url, username, password, model, manufacturer,
                         resolution, fps, status, is_active, config, created_at, updated_at)
SELECT 'Cam ' || (ARRAY['Lobby', 'Gate', 'Aisle', 'Dock', 'Parking', 'Exit'])[1 + g % 6] || ' ' || g,
       CASE WHEN g % 3 = 0 THEN NULL ELSE 'Entrance counter, zone ' || (g % 40) END,
       '10.' || (g / 65536) % 256 || '.' || (g / 256) % 256 || '.' || g % 256,
       (ARRAY[554, 8554, 10554])[1 + g % 3],
       'rtsp://10.' || (g / 65536) % 256 || '.' || (g / 256) % 256 || '.' || g % 256 || '/stream' || (1 + g % 2),
       'viewer',
       md5('cam-secret-' || g),
       (ARRAY['DS-2CD2143', 'IPC-HDW2431', 'M3106-L', NULL])[1 + g % 4],
       (ARRAY['Hikvision', 'Dahua', 'Axis', NULL])[1 + g % 4],
       (ARRAY['1920x1080', '1280x720', '2560x1440', '3840x2160'])[1 + g % 4],
       (ARRAY[15, 25, 30])[1 + g % 3],
       (ARRAY['online', 'online', 'online', 'offline', 'maintenance'])[1 + g % 5],
       CASE WHEN g % 11 = 0 THEN 0 ELSE 1 END,
       jsonb_build_object('zones', g % 4 + 1, 'line', jsonb_build_array(g % 100, 200 + g % 50),
                          'nightMode', g % 2 = 0)::text,
       timestamp '2024-03-01 08:00:00' + g * interval '17 minutes',
       timestamp '2024-03-01 08:00:00' + g * interval '17 minutes' + (g % 90) * interval '1 day'
  FROM generate_series(1, (SELECT cameras FROM seed_params)) AS g;

-- Five readings per camera.
INSERT INTO counting_results (camera_id, "timestamp", count_in, count_out, confidence)
SELECT 1 + g % (SELECT cameras FROM seed_params),
       timestamptz '2024-06-01 00:00:00+00' + g * interval '1 minute',
       (g * 7) % 40,
       (g * 5) % 35,
       0.75 + (g % 25) / 100.0
  FROM generate_series(1, 5 * (SELECT cameras FROM seed_params)) AS g;

INSERT INTO camera_api_metrics (at, requests, errors, p95_ms) VALUES (now(), 12000, 18, 240);

ANALYZE cameras_old;
ANALYZE counting_results;
