//! The periodic check for lost replicas and stale holds that raises their alerts
//! (`alerts::watch`), on every replica: the alerts' unique key makes each fire once.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::replica::DbContact;
use crate::alerts::watch::check;

/// How often and against what the watch checks.
#[derive(Debug, Clone, Copy)]
pub struct WatchTimes {
    pub every: Duration,
    /// A replica silent this long is lost (`cluster.stale_after_seconds`).
    pub replica_stale_after: Duration,
    /// A hold this old is stale (`metrics.stale_reservation_seconds`).
    pub hold_stale_after: Duration,
}

/// Checks every `times.every` until `stop`.
pub async fn watch_loop(
    pool: PgPool,
    times: WatchTimes,
    contact: Arc<DbContact>,
    stop: CancellationToken,
) {
    let ago =
        |d: Duration| Utc::now() - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
    loop {
        if contact.held_for(times.replica_stale_after) {
            let checked = check(
                &pool,
                ago(times.replica_stale_after),
                ago(times.hold_stale_after),
            );
            if let Err(e) = checked.await {
                tracing::warn!(error = %e, "checking for lost replicas and stale holds failed");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(times.every) => {}
        }
    }
}
