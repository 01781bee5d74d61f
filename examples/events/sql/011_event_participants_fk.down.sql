ALTER TABLE event_participants DROP CONSTRAINT IF EXISTS event_participants_event_fk;
