//! Housekeeping: dropping what the books no longer need, on its own timer — cached results and
//! kept attempt outcomes past `gateway.result_retention_hours` (the executions and their ledger
//! events stay), and rate-limit buckets older than every window.

use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::store::{attempts, executions, rate_windows};

/// One pass: cached results and kept outcomes older than `retention_hours`, and expired
/// rate-limit buckets.
pub async fn prune(pool: &PgPool, retention_hours: u64) -> Result<(), sqlx::Error> {
    let hours = i64::try_from(retention_hours).unwrap_or(24);
    let before = Utc::now() - chrono::Duration::hours(hours);
    let mut conn = pool.acquire().await?;
    let pruned = executions::prune_results(&mut conn, before).await?;
    if pruned > 0 {
        tracing::info!(pruned, "pruned cached results past retention");
    }
    attempts::prune_outcomes(&mut conn, before).await?;
    // Rate-limit buckets older than any window are never read again.
    rate_windows::delete_expired(&mut conn).await?;
    Ok(())
}

/// Prunes every `every` until cancelled.
pub async fn housekeeping_loop(
    pool: PgPool,
    every: Duration,
    retention_hours: u64,
    stop: CancellationToken,
) {
    loop {
        if let Err(e) = prune(&pool, retention_hours).await {
            tracing::warn!(error = %e, "housekeeping failed");
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
