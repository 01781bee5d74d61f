DROP TABLE IF EXISTS event_participants;
DROP TABLE IF EXISTS events;
DROP FUNCTION IF EXISTS event_participants_wedding_ids();
DROP FUNCTION IF EXISTS events_wedding_ids();
