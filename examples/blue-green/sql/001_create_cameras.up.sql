-- On the green database: the cameras table as the new release reads it — typed columns (inet, width and height,
-- boolean, jsonb, timestamptz).
CREATE TABLE cameras (
  id integer PRIMARY KEY,
  name varchar(100) NOT NULL,
  ip_address inet NOT NULL,
  port integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
  resolution_width integer NOT NULL CHECK (resolution_width > 0),
  resolution_height integer NOT NULL CHECK (resolution_height > 0),
  fps integer NOT NULL,
  status varchar(20) NOT NULL,
  is_active boolean NOT NULL,
  config jsonb NOT NULL,
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL
);
CREATE INDEX cameras_active_status_idx ON cameras (status) WHERE is_active;
