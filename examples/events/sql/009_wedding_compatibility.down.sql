DROP VIEW IF EXISTS wedding_invitations;
DROP VIEW IF EXISTS wedding_events;
