//! Background tasks that keep [`Observed`] current, so that neither a scrape nor a dashboard
//! poll ever pays for them: the database gauges every `metrics.sample_interval_seconds`, and the
//! ledger's verification, kept current incrementally (`ledger::watch`).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::observed::{BooksSample, Observed};
use crate::config::Settings;
use crate::ledger::watch::ChainWatch;
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
pub async fn sample_loop(
    pool: PgPool,
    settings: Arc<Settings>,
    observed: Arc<Observed>,
    stop: CancellationToken,
) {
    let every = Duration::from_secs(settings.metrics.sample_interval_seconds.max(1));
    loop {
        if let Err(e) = sample_once(&pool, &settings, &observed).await {
            tracing::warn!(error = %e, "sampling the metrics gauges failed");
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// Verifies what was appended every `ledger.verify_interval_seconds`, and every chain from the
/// start every `ledger.full_verify_interval_seconds` (and on the first pass); does nothing when
/// the interval is 0.
pub async fn verify_loop(
    pool: PgPool,
    settings: Arc<Settings>,
    observed: Arc<Observed>,
    stop: CancellationToken,
) {
    let ledger = &settings.ledger;
    if ledger.verify_interval_seconds == 0 {
        return;
    }
    let every = Duration::from_secs(ledger.verify_interval_seconds);
    let full_every = Duration::from_secs(ledger.full_verify_interval_seconds.max(1));
    let mut watch = ChainWatch::default();
    let mut last_full = tokio::time::Instant::now();
    loop {
        // The startup gate's verification (when it ran) stands for the first pass.
        if observed.ledger().is_some() {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
        if last_full.elapsed() >= full_every {
            watch.reset();
            last_full = tokio::time::Instant::now();
        }
        match watch.verify_new(&pool).await {
            Ok(report) => {
                let newly_bad = observed.ledger().is_none_or(|before| before.ok);
                if let (Some(bad), true) = (&report.first_bad_event, newly_bad) {
                    tracing::error!(
                        event_id = bad.id,
                        chain_id = %bad.chain_id,
                        seq = bad.seq,
                        problem = %bad.problem,
                        "ledger verification failed"
                    );
                }
                if let Some(bad) = &report.first_bad_event {
                    crate::alerts::watch::ledger_failed(&pool, bad).await;
                }
                observed.record_verification(&report);
            }
            Err(e) => {
                tracing::warn!(error = %e, "ledger verification could not run");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(every) => {}
                }
            }
        }
    }
}
