DROP TABLE IF EXISTS counting_results;
