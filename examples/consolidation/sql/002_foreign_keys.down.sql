ALTER TABLE song_requests DROP CONSTRAINT IF EXISTS song_requests_event_fk;
ALTER TABLE events DROP CONSTRAINT IF EXISTS events_owner_fk;
ALTER TABLE auth_sessions DROP CONSTRAINT IF EXISTS auth_sessions_user_fk;
