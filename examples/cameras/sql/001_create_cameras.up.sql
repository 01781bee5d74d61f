-- The new cameras table beside cameras_old: typed columns (inet, width and height, boolean, jsonb, timestamptz).
CREATE TABLE cameras (
  id integer PRIMARY KEY,
  name varchar(100) NOT NULL,
  description text,
  ip_address inet NOT NULL,
  port integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
  rtsp_url text NOT NULL,
  username varchar(50),
  password varchar(100),
  model varchar(50),
  manufacturer varchar(50),
  resolution_width integer NOT NULL CHECK (resolution_width > 0),
  resolution_height integer NOT NULL CHECK (resolution_height > 0),
  fps integer NOT NULL,
  status varchar(20) NOT NULL,
  is_active boolean NOT NULL,
  config jsonb NOT NULL,
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL
);
CREATE INDEX cameras_status_idx ON cameras (status) WHERE is_active;
