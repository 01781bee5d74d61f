-- Event types: a wedding is now one kind of event among others.
CREATE TABLE event_types (
  code text PRIMARY KEY,
  name text NOT NULL,
  participant_role text NOT NULL
);
INSERT INTO event_types (code, name, participant_role)
VALUES ('wedding', 'Wedding', 'guest'),
       ('conference', 'Conference', 'attendee'),
       ('birthday', 'Birthday party', 'guest');
