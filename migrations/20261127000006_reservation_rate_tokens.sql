-- The tokens a reservation charged to the TPM windows at admission (prompt estimate plus output
-- cap), so that settlement can correct the window to the actual tokens.
ALTER TABLE reservations ADD COLUMN rate_tokens BIGINT NOT NULL DEFAULT 0
    CONSTRAINT reservations_rate_tokens_non_negative CHECK (rate_tokens >= 0);

-- Old rate-limit buckets are deleted by age.
CREATE INDEX rate_windows_bucket_idx ON rate_windows (bucket_start);
