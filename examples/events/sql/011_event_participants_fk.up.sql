ALTER TABLE event_participants
  ADD CONSTRAINT event_participants_event_fk FOREIGN KEY (event_id) REFERENCES events (id) ON DELETE CASCADE NOT VALID;
ALTER TABLE event_participants VALIDATE CONSTRAINT event_participants_event_fk;
