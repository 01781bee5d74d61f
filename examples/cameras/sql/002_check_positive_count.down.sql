ALTER TABLE counting_results DROP CONSTRAINT IF EXISTS check_positive_count;
