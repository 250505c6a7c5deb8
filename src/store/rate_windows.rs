//! Rate-limit windows: one row per subject and one-second bucket, which also remembers its last
//! admission to the microsecond. A bucket counts against the sliding minute until 60 s after its
//! last admission, so every admission counts for at least its full 60 s and no 60-second span,
//! wherever it starts, admits more than the limit (a bucket holding several admissions counts the
//! earlier ones a little longer: at most one second, never less). Settlement corrects a bucket's
//! tokens by its second (`aex_settle_books`). Times are the database's `now()` (the transaction's
//! start), so every replica measures with one clock.

use sqlx::PgConnection;
use tokio_postgres::types::ToSql;

use super::hot::{pg_error, HotConn};

/// What a subject used in the sliding minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct WindowUse {
    pub requests: i64,
    pub tokens: i64,
}

pub async fn window_use(conn: &mut PgConnection, subject: &str) -> Result<WindowUse, sqlx::Error> {
    sqlx::query_as(
        "SELECT COALESCE(sum(requests), 0)::bigint AS requests, COALESCE(sum(tokens), 0)::bigint AS tokens \
         FROM rate_windows WHERE subject = $1 AND bucket_start >= now() - interval '61 seconds' \
         AND last_at >= now() - interval '60 seconds'",
    )
    .bind(subject)
    .fetch_one(conn)
    .await
}

/// [`window_use`] of each of the subjects `$1` (`text[]`), one row `(subject, requests, tokens)`
/// per subject, on the money transactions' pool (`store::holds`, `store::hold_batch`). Sent as a
/// statement of its own AFTER the agents' rows are locked, so that its snapshot sees every
/// admission committed before the locks were granted. `bucket_start` bounds the index range;
/// `last_at` decides.
pub(crate) const USE_OF_SUBJECTS: &str =
    "SELECT s.subject, COALESCE(sum(w.requests), 0)::bigint, COALESCE(sum(w.tokens), 0)::bigint \
     FROM unnest($1::text[]) AS s(subject) \
     LEFT JOIN rate_windows AS w ON w.subject = s.subject \
       AND w.bucket_start >= now() - interval '61 seconds' \
       AND w.last_at >= now() - interval '60 seconds' \
     GROUP BY s.subject";

/// A row of [`USE_OF_SUBJECTS`]: its subject's use.
pub(crate) fn use_of_row(row: &tokio_postgres::Row) -> Result<WindowUse, sqlx::Error> {
    Ok(WindowUse {
        requests: row.try_get(1).map_err(pg_error)?,
        tokens: row.try_get(2).map_err(pg_error)?,
    })
}

/// Admissions to count in the windows, summed per subject, written with their holds by one
/// statement ([`CHARGE`]): an `INSERT … ON CONFLICT DO UPDATE` may not touch one row twice, so a
/// subject with several admissions in one batch is one row of it.
#[derive(Debug, Default)]
pub struct Charges {
    subjects: Vec<String>,
    requests: Vec<i64>,
    tokens: Vec<i64>,
}

impl Charges {
    /// Counts one admitted request of `tokens` (estimated) against `subject`.
    pub fn add(&mut self, subject: &str, tokens: i64) {
        match self.subjects.iter().position(|s| s == subject) {
            Some(i) => {
                self.requests[i] += 1;
                self.tokens[i] = self.tokens[i].saturating_add(tokens);
            }
            None => {
                self.subjects.push(subject.to_owned());
                self.requests.push(1);
                self.tokens.push(tokens);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.subjects.is_empty()
    }

    /// These admissions counted ([`CHARGE`], when there are any), then the transaction's last
    /// statement `sql`, and COMMIT, in one round trip.
    pub(crate) async fn commit_with(
        &self,
        conn: &mut HotConn,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, sqlx::Error> {
        let charge: [&(dyn ToSql + Sync); 3] = [&self.subjects, &self.requests, &self.tokens];
        let mut statements: Vec<(&str, &[&(dyn ToSql + Sync)])> = Vec::with_capacity(2);
        if !self.is_empty() {
            statements.push((CHARGE, &charge));
        }
        statements.push((sql, params));
        conn.execute_all_and_commit(&statements).await
    }
}

/// [`consume`] of several subjects at once: `$1` subjects, `$2` requests, `$3` tokens (the
/// columns of [`Charges`]), in the current bucket.
const CHARGE: &str = "INSERT INTO rate_windows (subject, bucket_start, requests, tokens, last_at) \
     SELECT c.subject, date_trunc('second', now()), c.requests, c.tokens, now() \
     FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS c(subject, requests, tokens) \
     ON CONFLICT ON CONSTRAINT rate_windows_pkey DO UPDATE \
     SET requests = rate_windows.requests + EXCLUDED.requests, \
         tokens = rate_windows.tokens + EXCLUDED.tokens, \
         last_at = GREATEST(rate_windows.last_at, EXCLUDED.last_at)";

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
