DROP TABLE IF EXISTS event_participants;
DROP TABLE IF EXISTS events;
