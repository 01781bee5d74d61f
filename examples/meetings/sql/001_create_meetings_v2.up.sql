-- The new meetings table beside the old one: same rows, plus room_type.
CREATE TABLE meetings_v2 (
  id bigint PRIMARY KEY,
  title text NOT NULL,
  meeting_type varchar(50),
  room_type varchar(50) NOT NULL,
  status varchar(20) NOT NULL,
  host_id uuid NOT NULL,
  max_participants integer NOT NULL,
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL
);
CREATE INDEX meetings_v2_room_type_idx ON meetings_v2 (room_type);
