//! Rate-limit windows: one row per subject and one-second bucket; a sliding minute is the sum of
//! the last sixty buckets. Times are the database's `now()` (the transaction's start), so every
//! replica measures with one clock.

use sqlx::PgConnection;

/// What a subject used in the sliding minute.
#[derive(Debug, Clone, Copy, Default, sqlx::FromRow)]
pub struct WindowUse {
    pub requests: i64,
    pub tokens: i64,
    /// Seconds until the oldest bucket that holds any use leaves the window.
    pub frees_in_seconds: i64,
}

pub async fn window_use(conn: &mut PgConnection, subject: &str) -> Result<WindowUse, sqlx::Error> {
    sqlx::query_as(
        "SELECT COALESCE(sum(requests), 0)::bigint AS requests, COALESCE(sum(tokens), 0)::bigint AS tokens, \
         COALESCE(ceil(extract(epoch FROM min(bucket_start) + interval '60 seconds' - now())), 1)::bigint \
           AS frees_in_seconds \
         FROM rate_windows WHERE subject = $1 AND bucket_start > now() - interval '60 seconds'",
    )
    .bind(subject)
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
        "INSERT INTO rate_windows (subject, bucket_start, requests, tokens) \
         VALUES ($1, date_trunc('second', now()), 1, $2) \
         ON CONFLICT ON CONSTRAINT rate_windows_pkey DO UPDATE \
         SET requests = rate_windows.requests + 1, tokens = rate_windows.tokens + EXCLUDED.tokens",
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
