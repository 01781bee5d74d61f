-- Old clients keep reading the wedding app's names: views with the old columns over the generic tables. They take the
-- names the archived tables freed, and a rollback drops them before those tables move back.
CREATE VIEW wedding_events AS
SELECT e.legacy_wedding_id AS id,
       e.tenant_id,
       e.title AS couple_name,
       e.start_date AS wedding_date,
       e.start_time AS ceremony_time,
       e.venue,
       e.status,
       e.capacity AS guest_limit,
       e.created_at,
       e.updated_at
  FROM events e
 WHERE e.event_type = 'wedding';

CREATE VIEW wedding_invitations AS
SELECT p.legacy_invitation_id AS id,
       e.legacy_wedding_id AS wedding_event_id,
       p.name AS guest_name,
       p.email AS guest_email,
       p.rsvp_status,
       (p.details ->> 'plusOnes')::integer AS plus_ones,
       (p.details ->> 'tableNumber')::integer AS table_number,
       p.created_at
  FROM event_participants p
  JOIN events e ON e.id = p.event_id
 WHERE e.event_type = 'wedding';
