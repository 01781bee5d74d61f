-- The runbook's "constraints, if the data is valid": NOT VALID takes no long lock, VALIDATE reads the table without
-- blocking writes (preflight has already counted the rows that would break it).
ALTER TABLE counting_results
  ADD CONSTRAINT check_positive_count CHECK (count_in >= 0 AND count_out >= 0) NOT VALID;
ALTER TABLE counting_results VALIDATE CONSTRAINT check_positive_count;
