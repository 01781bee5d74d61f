-- Once the old tables are archived and the sync is gone, the new tables reference each other. NOT VALID takes no long
-- lock; VALIDATE reads without blocking writes.
ALTER TABLE auth_sessions ADD CONSTRAINT auth_sessions_user_fk FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID;
ALTER TABLE events ADD CONSTRAINT events_owner_fk FOREIGN KEY (owner_id) REFERENCES users (id) NOT VALID;
ALTER TABLE song_requests ADD CONSTRAINT song_requests_event_fk FOREIGN KEY (event_code) REFERENCES events (event_code) NOT VALID;
ALTER TABLE auth_sessions VALIDATE CONSTRAINT auth_sessions_user_fk;
ALTER TABLE events VALIDATE CONSTRAINT events_owner_fk;
ALTER TABLE song_requests VALIDATE CONSTRAINT song_requests_event_fk;
