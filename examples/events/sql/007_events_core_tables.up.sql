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

-- Weddings and invitations the new engine creates take their wedding-app ids from the wedding app's own sequences, and
-- their uuids from those ids as the copied rows do: the old app (and a rollback, which writes them back to the wedding
-- tables) sees them like any other, and the sync never has to renumber them.
CREATE FUNCTION events_wedding_ids() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.event_type = 'wedding' AND NEW.legacy_wedding_id IS NULL THEN
    NEW.legacy_wedding_id := nextval('wedding_events_id_seq');
    NEW.id := md5('wedding:' || NEW.legacy_wedding_id)::uuid;
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER events_wedding_ids BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION events_wedding_ids();

CREATE FUNCTION event_participants_wedding_ids() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.legacy_invitation_id IS NULL
     AND EXISTS (SELECT 1 FROM events e WHERE e.id = NEW.event_id AND e.event_type = 'wedding') THEN
    NEW.legacy_invitation_id := nextval('wedding_invitations_id_seq');
    NEW.id := md5('invitation:' || NEW.legacy_invitation_id)::uuid;
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER event_participants_wedding_ids BEFORE INSERT ON event_participants
  FOR EACH ROW EXECUTE FUNCTION event_participants_wedding_ids();
