-- Rate windows that never admit more than the limit in any 60-second span (SPEC §7). A bucket
-- still holds one second of admissions (settlement corrects its tokens by that key), and now
-- also remembers when its last admission happened, to the microsecond: the bucket counts
-- against the window until 60 s after that admission, not 60 s after the second began (which let
-- a request made late in a second leave the window up to a second early, and so admitted up to
-- twice the limit in a little under 60 s across a second boundary).
ALTER TABLE rate_windows ADD COLUMN last_at TIMESTAMPTZ;
-- Buckets written before this change: their last admission is unknown, so the end of their
-- second stands in for it (the conservative bound).
UPDATE rate_windows SET last_at = bucket_start + interval '1 second';
ALTER TABLE rate_windows ALTER COLUMN last_at SET NOT NULL;
ALTER TABLE rate_windows ADD CONSTRAINT rate_windows_last_in_bucket
    CHECK (last_at >= bucket_start AND last_at <= bucket_start + interval '1 second');
