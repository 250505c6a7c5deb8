//! Background tasks that keep [`Observed`] current, so that neither a scrape nor a dashboard
//! poll ever pays for them: the database gauges every `metrics.sample_interval_seconds`, and a
//! verification of every hash chain every `ledger.verify_interval_seconds`.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::observed::{BooksSample, Observed};
use crate::config::Settings;
use crate::gateway::Gateway;
use crate::ledger::verify;
use crate::store::stats;

/// Reads the database gauges once.
pub async fn sample_once(
    pool: &PgPool,
    settings: &Settings,
    observed: &Observed,
) -> Result<(), sqlx::Error> {
    let now = Utc::now();
    let stale_after = i64::try_from(settings.metrics.stale_reservation_seconds).unwrap_or(i64::MAX);
    let mut conn = pool.acquire().await?;
    let tenants = stats::list_tenant_books(&mut conn).await?;
    let agents = if settings.metrics.agent_labels {
        stats::list_agent_books(&mut conn).await?
    } else {
        Vec::new()
    };
    let stale_reservations = stats::count_stale_reservations(
        &mut conn,
        None,
        now - chrono::Duration::seconds(stale_after),
    )
    .await?;
    let exhausted_agents = stats::count_exhausted_agents(&mut conn, None).await?;
    observed.set_books(BooksSample {
        tenants,
        agents,
        stale_reservations,
        exhausted_agents,
        sampled_at: now,
    });
    Ok(())
}

/// Samples until cancelled.
pub async fn sample_loop(gw: Arc<Gateway>, observed: Arc<Observed>, stop: CancellationToken) {
    let every = Duration::from_secs(gw.settings.metrics.sample_interval_seconds.max(1));
    loop {
        if let Err(e) = sample_once(&gw.pool, &gw.settings, &observed).await {
            tracing::warn!(error = %e, "sampling the metrics gauges failed");
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// Verifies every chain every `ledger.verify_interval_seconds` (immediately when no
/// verification has run yet); does nothing when the interval is 0.
pub async fn verify_loop(gw: Arc<Gateway>, observed: Arc<Observed>, stop: CancellationToken) {
    let seconds = gw.settings.ledger.verify_interval_seconds;
    if seconds == 0 {
        return;
    }
    let every = Duration::from_secs(seconds);
    loop {
        if observed.ledger().is_some() {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
        match verify::verify_all(&gw.pool).await {
            Ok(report) => {
                if let Some(bad) = &report.first_bad_event {
                    tracing::error!(
                        event_id = bad.id,
                        chain_id = %bad.chain_id,
                        seq = bad.seq,
                        problem = %bad.problem,
                        "ledger verification failed"
                    );
                }
                observed.record_verification(&report);
            }
            Err(e) => {
                tracing::warn!(error = %e, "ledger verification could not run");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(every.min(Duration::from_secs(30))) => {}
                }
            }
        }
    }
}
