//! Rate-limit windows: one row per subject and one-second bucket, which also remembers its last
//! admission to the microsecond. A bucket counts against the sliding minute until 60 s after its
//! last admission, so every admission counts for at least its full 60 s and no 60-second span,
//! wherever it starts, admits more than the limit (a bucket holding several admissions counts the
//! earlier ones a little longer: at most one second, never less). Settlement corrects a bucket's
//! tokens by its second (`aex_settle_books`). Times are the database's `now()` (the transaction's
//! start), so every replica measures with one clock.

use sqlx::PgConnection;

/// What a subject used in the sliding minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct WindowUse {
    pub requests: i64,
    pub tokens: i64,
}

pub async fn window_use(conn: &mut PgConnection, subject: &str) -> Result<WindowUse, sqlx::Error> {
    // `bucket_start` bounds the index range; `last_at` decides.
    sqlx::query_as(
        "SELECT COALESCE(sum(requests), 0)::bigint AS requests, COALESCE(sum(tokens), 0)::bigint AS tokens \
         FROM rate_windows WHERE subject = $1 AND bucket_start >= now() - interval '61 seconds' \
         AND last_at >= now() - interval '60 seconds'",
    )
    .bind(subject)
    .fetch_one(conn)
    .await
}

/// Whole seconds from now until the window has let go of at least `requests` requests and
/// `tokens` tokens (a non-positive amount needs nothing), with nothing new admitted meanwhile:
/// the first whole second at which one more request is admitted. `None` when the window does not
/// hold that much at all.
pub async fn frees_in_seconds(
    conn: &mut PgConnection,
    subject: &str,
    requests: i64,
    tokens: i64,
) -> Result<Option<i64>, sqlx::Error> {
    // Buckets leave in the order of their last admissions; the one whose leaving completes the
    // amount is still counted at exactly 60 s after it (the window is closed), so the first
    // admission is strictly later: floor(seconds) + 1.
    sqlx::query_scalar(
        "SELECT CASE WHEN ($2 > 0 AND r IS NULL) OR ($3 > 0 AND t IS NULL) THEN NULL ELSE \
           floor(extract(epoch FROM GREATEST(CASE WHEN $2 > 0 THEN r END, CASE WHEN $3 > 0 THEN t END) \
                 + interval '60 seconds' - now()))::bigint + 1 END \
         FROM (SELECT min(last_at) FILTER (WHERE freed_requests >= $2) AS r, \
                      min(last_at) FILTER (WHERE freed_tokens >= $3) AS t \
               FROM (SELECT last_at, sum(requests) OVER w AS freed_requests, \
                            sum(tokens) OVER w AS freed_tokens \
                     FROM rate_windows WHERE subject = $1 \
                     AND bucket_start >= now() - interval '61 seconds' \
                     AND last_at >= now() - interval '60 seconds' \
                     WINDOW w AS (ORDER BY last_at)) b) f",
    )
    .bind(subject)
    .bind(requests)
    .bind(tokens)
    .fetch_one(conn)
    .await
}

/// Counts one admitted request and its estimated tokens in the current bucket.
pub async fn consume(
    conn: &mut PgConnection,
    subject: &str,
    tokens: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO rate_windows (subject, bucket_start, requests, tokens, last_at) \
         VALUES ($1, date_trunc('second', now()), 1, $2, now()) \
         ON CONFLICT ON CONSTRAINT rate_windows_pkey DO UPDATE \
         SET requests = rate_windows.requests + 1, tokens = rate_windows.tokens + EXCLUDED.tokens, \
             last_at = GREATEST(rate_windows.last_at, EXCLUDED.last_at)",
    )
    .bind(subject)
    .bind(tokens)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes buckets that can no longer fall in any window.
pub async fn delete_expired(conn: &mut PgConnection) -> Result<u64, sqlx::Error> {
    let done =
        sqlx::query("DELETE FROM rate_windows WHERE bucket_start < now() - interval '2 minutes'")
            .execute(conn)
            .await?;
    Ok(done.rows_affected())
}
