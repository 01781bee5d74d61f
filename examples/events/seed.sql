-- The wedding app before it becomes a generic events engine: weddings and their invitations. The number of weddings
-- comes from tidemark.seed_rows (default 2000; about five invitations each):
--   PGOPTIONS='-c tidemark.seed_rows=2000' psql "$DATABASE_URL" -f examples/events/seed.sql
CREATE TEMP TABLE seed_params AS
  SELECT coalesce(nullif(current_setting('tidemark.seed_rows', true), ''), '2000')::int AS weddings;

CREATE TABLE wedding_events (
  id serial PRIMARY KEY,
  tenant_id uuid NOT NULL,
  couple_name text NOT NULL,
  wedding_date date NOT NULL,
  ceremony_time time,
  venue text,
  status text NOT NULL DEFAULT 'planning',
  guest_limit integer,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE wedding_invitations (
  id serial PRIMARY KEY,
  wedding_event_id integer NOT NULL REFERENCES wedding_events (id) ON DELETE CASCADE,
  guest_name text NOT NULL,
  guest_email text,
  rsvp_status text NOT NULL DEFAULT 'pending',
  plus_ones integer NOT NULL DEFAULT 0,
  table_number integer,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX wedding_invitations_event_idx ON wedding_invitations (wedding_event_id);

-- What the application reports; the cut-over's health gate reads the newest row.
CREATE TABLE app_health (
  id bigserial PRIMARY KEY,
  at timestamptz NOT NULL DEFAULT now(),
  requests integer NOT NULL,
  errors integer NOT NULL
);

INSERT INTO wedding_events (tenant_id, couple_name, wedding_date, ceremony_time, venue, status, guest_limit,
                            created_at, updated_at)
SELECT md5('tenant' || g % 25)::uuid,
       (ARRAY['Ana', 'Budi', 'Citra', 'Dewi', 'Eko', 'Fitri', 'Gita', 'Hadi'])[1 + g % 8] || ' & ' ||
       (ARRAY['Rian', 'Sari', 'Tono', 'Umi', 'Vina', 'Wawan', 'Yuli'])[1 + g % 7],
       date '2025-05-01' + g % 400,
       CASE WHEN g % 6 = 0 THEN NULL ELSE time '09:00' + (g % 16) * interval '30 minutes' END,
       CASE WHEN g % 9 = 0 THEN NULL
            ELSE (ARRAY['Grand Ballroom', 'Garden Villa', 'Beach Pavilion', 'City Hall'])[1 + g % 4] END,
       (ARRAY['planning', 'confirmed', 'completed', 'cancelled'])[1 + g % 4],
       CASE WHEN g % 5 = 0 THEN NULL ELSE 50 + g % 250 END,
       timestamptz '2024-09-01 00:00:00+00' + g * interval '3 hours',
       timestamptz '2024-09-01 00:00:00+00' + g * interval '3 hours' + (g % 30) * interval '1 day'
  FROM generate_series(1, (SELECT weddings FROM seed_params)) AS g;

INSERT INTO wedding_invitations (wedding_event_id, guest_name, guest_email, rsvp_status, plus_ones, table_number,
                                 created_at)
SELECT w.id, 'Guest ' || w.id || '-' || n,
       CASE WHEN n % 4 = 0 THEN NULL ELSE 'guest' || w.id || '.' || n || '@example.com' END,
       (ARRAY['pending', 'accepted', 'declined'])[1 + (w.id + n) % 3], (w.id + n) % 3,
       CASE WHEN n % 3 = 0 THEN NULL ELSE 1 + (w.id * n) % 30 END,
       w.created_at + n * interval '1 day'
  FROM wedding_events w, generate_series(1, 7) AS n
 WHERE n <= 3 + w.id % 5;

INSERT INTO app_health (requests, errors) VALUES (5000, 4);

ANALYZE wedding_events;
ANALYZE wedding_invitations;
