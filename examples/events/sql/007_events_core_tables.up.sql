-- The generic tables. Ids are new (uuid); legacy_* keep the wedding app's ids, which the sync and the compatibility
-- views use. The participants' foreign key to events comes in cleanup, once the copy is done (011).
CREATE TABLE events (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  event_type text NOT NULL REFERENCES event_types (code),
  tenant_id uuid NOT NULL,
  title text NOT NULL,
  start_date date NOT NULL,
  start_time time,
  venue text,
  status text NOT NULL,
  capacity integer,
  details jsonb NOT NULL DEFAULT '{}',
  legacy_wedding_id integer UNIQUE,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE event_participants (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  event_id uuid NOT NULL,
  role text NOT NULL,
  name text NOT NULL,
  email text,
  rsvp_status text NOT NULL,
  details jsonb NOT NULL DEFAULT '{}',
  legacy_invitation_id integer UNIQUE,
  created_at timestamptz NOT NULL DEFAULT now()
);
