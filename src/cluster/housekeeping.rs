//! Housekeeping: dropping what the books no longer need, on its own timer — cached results and
//! kept attempt outcomes past `gateway.result_retention_hours` (the executions and their ledger
//! events stay), rate-limit buckets older than every window — and the money pool's connections
//! idle for [`IDLE_CONNECTION`].

use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::store::hot::HotPool;
use crate::store::{attempts, executions, rate_windows};

/// How long a connection of the money pool may sit unused before it is closed (the sqlx pool's
/// `idle_timeout` is the same).
pub const IDLE_CONNECTION: Duration = Duration::from_secs(60);

/// One pass: cached results and kept outcomes older than `retention_hours`, and expired
/// rate-limit buckets.
pub async fn prune(pool: &PgPool, retention_hours: u64) -> Result<(), sqlx::Error> {
    let hours = i64::try_from(retention_hours).unwrap_or(24);
    let before = Utc::now() - chrono::Duration::hours(hours);
    let mut conn = pool.acquire().await?;
    let pruned = executions::prune_results(&mut conn, before).await?;
    if pruned > 0 {
        tracing::info!(
            pruned,
            "executions past result retention marked pruned (cached results dropped)"
        );
    }
    attempts::prune_outcomes(&mut conn, before).await?;
    // Rate-limit buckets older than any window are never read again.
    rate_windows::delete_expired(&mut conn).await?;
    Ok(())
}

/// Prunes every `every` until cancelled.
pub async fn housekeeping_loop(
    pool: PgPool,
    hot: HotPool,
    every: Duration,
    retention_hours: u64,
    stop: CancellationToken,
) {
    loop {
        if let Err(e) = prune(&pool, retention_hours).await {
            tracing::warn!(error = %e, "housekeeping failed");
        }
        let closed = hot.close_idle(IDLE_CONNECTION);
        if closed > 0 {
            tracing::debug!(closed, "closed idle connections of the money pool");
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
