-- On the green database: counting results, unchanged in shape, with the index the dashboards need.
CREATE TABLE counting_results (
  id bigint PRIMARY KEY,
  camera_id integer NOT NULL,
  at timestamp NOT NULL,
  count_in integer NOT NULL CHECK (count_in >= 0),
  count_out integer NOT NULL CHECK (count_out >= 0)
);
CREATE INDEX counting_results_camera_at_idx ON counting_results (camera_id, at);
