DROP INDEX CONCURRENTLY IF EXISTS counting_results_camera_time_idx;
