-- Cache of live rooms, filled from active meetings.
CREATE TABLE room_states (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  room_id varchar(255) NOT NULL UNIQUE,
  room_type varchar(50) NOT NULL,
  status varchar(50) NOT NULL,
  host_id uuid NOT NULL,
  participants jsonb NOT NULL DEFAULT '[]',
  features jsonb NOT NULL DEFAULT '{}',
  metadata jsonb NOT NULL DEFAULT '{}',
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL
);
CREATE INDEX room_states_status_idx ON room_states (status);
CREATE INDEX room_states_expires_at_idx ON room_states (expires_at);
