-- The four tables the seven fold into, beside them. Foreign keys between them come in cleanup (see the README).
CREATE TABLE users (
  id integer PRIMARY KEY,
  email text NOT NULL UNIQUE,
  display_name text NOT NULL,
  password_hash text NOT NULL,
  -- the Spotify link (spotify_auth), when there is one
  spotify_user_id text,
  spotify_access_token text,
  spotify_refresh_token text,
  spotify_expires_at timestamptz,
  -- the admin's settings rows, folded into one object
  preferences jsonb NOT NULL DEFAULT '{}',
  created_at timestamptz NOT NULL
);
CREATE TABLE auth_sessions (
  id integer PRIMARY KEY,
  user_id integer NOT NULL,
  provider text NOT NULL,
  token text NOT NULL UNIQUE,
  expires_at timestamptz NOT NULL,
  created_at timestamptz NOT NULL
);
CREATE TABLE events (
  event_code text PRIMARY KEY,
  owner_id integer NOT NULL,
  name text NOT NULL,
  starts_at timestamptz NOT NULL,
  -- event_settings' columns, as one object
  settings jsonb NOT NULL,
  -- the event's notifications, oldest first
  announcements jsonb NOT NULL DEFAULT '[]',
  updated_at timestamptz NOT NULL
);
CREATE TABLE song_requests (
  id integer PRIMARY KEY,
  event_code text NOT NULL,
  title text NOT NULL,
  artist text NOT NULL,
  spotify_track_id text,
  requested_by text,
  status text NOT NULL,
  votes integer NOT NULL,
  created_at timestamptz NOT NULL
);
CREATE INDEX song_requests_event_idx ON song_requests (event_code, status);
CREATE INDEX auth_sessions_user_idx ON auth_sessions (user_id);
