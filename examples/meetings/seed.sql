-- The application's tables before the migration; seed-data.sql fills them (`tidemark demo`, the tests, the Docker stack).
CREATE TABLE meetings (
  id bigserial PRIMARY KEY,
  title text NOT NULL,
  meeting_type varchar(50),
  status varchar(20) NOT NULL DEFAULT 'active',
  host_id uuid NOT NULL,
  max_participants integer NOT NULL DEFAULT 10,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE meeting_participants (
  id bigserial PRIMARY KEY,
  meeting_id bigint NOT NULL,
  user_id uuid NOT NULL,
  joined_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX meeting_participants_meeting_idx ON meeting_participants (meeting_id);
