//! Alerts about what the server notices rather than what a transaction does: replicas whose
//! heartbeat stopped, holds that stay RESERVED too long (checked by `cluster::alert_watch`, which
//! trusts heartbeats only once this replica's own contact with the database has lasted, as the
//! reconciler does), and a ledger that fails verification (from the verifier). Several replicas
//! may notice the same thing; the alert's unique key makes it fire once.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::ledger::verify::BadEvent;
use crate::store::alerts;

/// Raises the alerts for replicas silent since `replicas_before` and holds older than
/// `holds_before`.
pub async fn check(
    pool: &PgPool,
    replicas_before: DateTime<Utc>,
    holds_before: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let lost = alerts::raise_lost_replicas(&mut conn, replicas_before).await?;
    let stale = alerts::raise_stale_reservations(&mut conn, holds_before).await?;
    if lost + stale > 0 {
        tracing::warn!(
            lost_replicas = lost,
            stale_reservations = stale,
            "alerts raised"
        );
    }
    Ok(())
}

/// Raises the alert for a ledger that failed verification at `bad`.
pub async fn ledger_failed(pool: &PgPool, bad: &BadEvent) {
    let raised = match pool.acquire().await {
        Ok(mut conn) => {
            alerts::raise_ledger_failure(&mut conn, &bad.chain_id, bad.id, bad.seq, &bad.problem)
                .await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = raised {
        tracing::warn!(error = %e, "could not raise the ledger verification alert");
    }
}
