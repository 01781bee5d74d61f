-- The song-request app before the consolidation: seven tables. Admins run events; guests send song requests; admins
-- link a Spotify account, log in through OAuth, keep personal settings; each event has its settings row and a feed of
-- notifications shown on the event screen. The number of requests comes from tidemark.seed_rows (default 3000):
--   PGOPTIONS='-c tidemark.seed_rows=3000' psql "$DATABASE_URL" -f examples/consolidation/seed.sql
CREATE TEMP TABLE seed_params AS
  SELECT coalesce(nullif(current_setting('tidemark.seed_rows', true), ''), '3000')::int AS requests;

CREATE TABLE admins (
  id serial PRIMARY KEY,
  email text NOT NULL UNIQUE,
  display_name text NOT NULL,
  password_hash text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE spotify_auth (
  id serial PRIMARY KEY,
  admin_id integer NOT NULL UNIQUE REFERENCES admins (id),
  spotify_user_id text NOT NULL,
  access_token text NOT NULL,
  refresh_token text NOT NULL,
  expires_at timestamptz NOT NULL
);
CREATE TABLE oauth_sessions (
  id serial PRIMARY KEY,
  admin_id integer NOT NULL REFERENCES admins (id),
  provider text NOT NULL,
  session_token text NOT NULL UNIQUE,
  expires_at timestamptz NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE settings (
  id serial PRIMARY KEY,
  admin_id integer NOT NULL REFERENCES admins (id),
  key text NOT NULL,
  value text NOT NULL,
  UNIQUE (admin_id, key)
);
CREATE TABLE event_settings (
  event_code text PRIMARY KEY,
  admin_id integer NOT NULL REFERENCES admins (id),
  name text NOT NULL,
  starts_at timestamptz NOT NULL,
  theme text NOT NULL DEFAULT 'default',
  voting_enabled boolean NOT NULL DEFAULT true,
  max_requests_per_guest integer NOT NULL DEFAULT 3,
  explicit_allowed boolean NOT NULL DEFAULT false,
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE notifications (
  id serial PRIMARY KEY,
  event_code text NOT NULL REFERENCES event_settings (event_code),
  message text NOT NULL,
  level text NOT NULL DEFAULT 'info',
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE requests (
  id serial PRIMARY KEY,
  event_code text NOT NULL REFERENCES event_settings (event_code),
  song_title text NOT NULL,
  artist text NOT NULL,
  spotify_track_id text,
  guest_name text,
  status text NOT NULL DEFAULT 'pending',
  votes integer NOT NULL DEFAULT 0,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX requests_event_idx ON requests (event_code, status);

-- What the application reports; the rollout's gates read the newest row.
CREATE TABLE app_health (
  id bigserial PRIMARY KEY,
  at timestamptz NOT NULL DEFAULT now(),
  requests integer NOT NULL,
  errors integer NOT NULL,
  p95_ms integer NOT NULL
);

-- One admin per 50 requests (at least 4); two thirds have linked Spotify; each has one or two sessions and settings.
INSERT INTO admins (email, display_name, password_hash, created_at)
SELECT 'dj' || g || '@example.com', (ARRAY['DJ Nova', 'Mixmaster', 'Beat Ops', 'Vinyl Vic'])[1 + g % 4] || ' ' || g,
       '$2b$10$' || md5('pw' || g), timestamptz '2024-01-01 00:00:00+00' + g * interval '1 day'
  FROM generate_series(1, greatest(4, (SELECT requests FROM seed_params) / 50)) AS g;
INSERT INTO spotify_auth (admin_id, spotify_user_id, access_token, refresh_token, expires_at)
SELECT id, 'spotify:' || md5('sp' || id), md5('at' || id), md5('rt' || id),
       timestamptz '2025-06-01 00:00:00+00' + id * interval '1 hour'
  FROM admins WHERE id % 3 <> 0;
INSERT INTO oauth_sessions (admin_id, provider, session_token, expires_at, created_at)
SELECT a.id, (ARRAY['google', 'apple'])[1 + (a.id + s) % 2], md5('session' || a.id || '-' || s),
       timestamptz '2025-06-01 00:00:00+00' + (a.id * 2 + s) * interval '1 hour',
       timestamptz '2025-05-01 00:00:00+00' + (a.id * 2 + s) * interval '1 hour'
  FROM admins a, generate_series(1, 2) AS s WHERE s = 1 OR a.id % 2 = 0;
INSERT INTO settings (admin_id, key, value)
SELECT a.id, k.key, k.value || (a.id % 3)
  FROM admins a, (VALUES ('language', 'en-'), ('timezone', 'UTC+'), ('emailDigest', 'weekly-')) AS k (key, value)
 WHERE k.key <> 'emailDigest' OR a.id % 2 = 1;

-- Two events per admin.
INSERT INTO event_settings (event_code, admin_id, name, starts_at, theme, voting_enabled, max_requests_per_guest,
                            explicit_allowed, updated_at)
SELECT 'EV' || lpad((a.id * 2 + e)::text, 5, '0'), a.id,
       (ARRAY['Wedding party', 'Office night', 'Birthday bash', 'Club night'])[1 + (a.id + e) % 4] || ' #' || (a.id * 2 + e),
       timestamptz '2025-07-01 20:00:00+00' + (a.id * 2 + e) * interval '1 day',
       (ARRAY['default', 'neon', 'retro'])[1 + (a.id + e) % 3], (a.id + e) % 5 <> 0, 2 + (a.id + e) % 4,
       (a.id + e) % 3 = 0, timestamptz '2025-06-15 00:00:00+00'
  FROM admins a, generate_series(0, 1) AS e;
INSERT INTO notifications (event_code, message, level, created_at)
SELECT es.event_code, (ARRAY['Requests are open', 'Voting closes in 10 minutes', 'Last song!'])[n],
       (ARRAY['info', 'warning', 'info'])[n], es.starts_at + n * interval '30 minutes'
  FROM event_settings es, generate_series(1, 3) AS n WHERE n <= 1 + length(es.event_code) % 3;

INSERT INTO requests (event_code, song_title, artist, spotify_track_id, guest_name, status, votes, created_at)
SELECT (SELECT event_code FROM event_settings ORDER BY event_code OFFSET g % (SELECT count(*) FROM event_settings) LIMIT 1),
       (ARRAY['Dancing Queen', 'September', 'Mr. Brightside', 'Levitating', 'Uptown Funk', 'Africa'])[1 + g % 6] ||
         CASE WHEN g % 7 = 0 THEN ' (Remix)' ELSE '' END,
       (ARRAY['ABBA', 'Earth, Wind & Fire', 'The Killers', 'Dua Lipa', 'Mark Ronson', 'Toto'])[1 + g % 6],
       CASE WHEN g % 4 = 0 THEN NULL ELSE 'track:' || md5('t' || g % 300) END,
       CASE WHEN g % 5 = 0 THEN NULL ELSE 'Guest ' || g % 900 END,
       (ARRAY['pending', 'queued', 'played', 'rejected'])[1 + g % 4], g % 13,
       timestamptz '2025-07-01 20:00:00+00' + g * interval '47 seconds'
  FROM generate_series(1, (SELECT requests FROM seed_params)) AS g;

INSERT INTO app_health (requests, errors, p95_ms) VALUES (8000, 12, 310);

ANALYZE;
