CREATE INDEX CONCURRENTLY IF NOT EXISTS counting_results_camera_time_idx ON counting_results (camera_id, "timestamp");
