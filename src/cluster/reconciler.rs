//! Settling the executions of lost replicas (SPEC §12), one replica at a time.
//!
//! An execution belongs to the replica that admitted it. When that replica has stopped or its
//! heartbeat is stale, its open executions can never be settled by it: RESERVED ones (provider
//! never called) are RELEASED; DISPATCHED ones are FAILED and their hold RELEASED with reason
//! "replica_lost" (the provider may have done work, which the ledger flags). They are found
//! through their open holds (`store::executions::list_orphaned`): no version writes an
//! execution without its hold. Executions of live replicas are never touched, however long they
//! run.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::replica::DbContact;
use crate::config::ClusterSettings;
use crate::domain::ExecutionState;
use crate::gateway::settlement;
use crate::gateway::Books;
use crate::store::executions::{self, ExecutionRow};
use crate::store::locks;

#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct ReconcileReport {
    pub released: u64,
    pub failed: u64,
    /// Another replica held the reconciler lock.
    pub skipped: bool,
}

/// One pass over the open executions of replicas whose heartbeat is older than `stale_after`.
pub async fn reconcile_once(
    books: &Books,
    stale_after: Duration,
) -> Result<ReconcileReport, sqlx::Error> {
    // The transaction only holds the singleton lock; each execution is settled in its own.
    let mut lock_tx = books.pool.begin().await?;
    if !locks::try_lock(&mut lock_tx, locks::RECONCILER).await? {
        return Ok(ReconcileReport {
            skipped: true,
            ..ReconcileReport::default()
        });
    }
    let stale_before = Utc::now()
        - chrono::Duration::from_std(stale_after).unwrap_or(chrono::Duration::seconds(30));
    let mut report = ReconcileReport::default();
    loop {
        let mut conn = books.pool.acquire().await?;
        let orphans = executions::list_orphaned(&mut conn, stale_before, 200).await?;
        drop(conn);
        if orphans.is_empty() {
            break;
        }
        for e in orphans {
            match settle_orphan(books, &e).await? {
                ExecutionState::Released => report.released += 1,
                _ => report.failed += 1,
            }
        }
    }
    lock_tx.commit().await?;
    if report.released + report.failed > 0 {
        tracing::warn!(
            released = report.released,
            failed = report.failed,
            "reconciled executions of lost replicas"
        );
    }
    Ok(report)
}

async fn settle_orphan(books: &Books, e: &ExecutionRow) -> Result<ExecutionState, sqlx::Error> {
    let (state, reason) = match e.state {
        ExecutionState::Reserved => (ExecutionState::Released, "replica_lost_before_dispatch"),
        ExecutionState::Dispatched => (ExecutionState::Failed, "replica_lost"),
        _ => (ExecutionState::Failed, "replica_lost_while_reserving"),
    };
    // AlreadySettled: its hold was settled since it was listed (a late settlement of the lost
    // replica's call), which ended the execution too; nothing is left to do. (The row may even
    // carry a next attempt of its key by now, on a live replica: it must not be touched.)
    settlement::release_orphan(books, e, state, reason).await?;
    Ok(state)
}

/// Reconciles every `reconcile_interval_seconds` once this replica's own contact with the
/// database has lasted `stale_after_seconds` (see [`DbContact`]: right after start or after an
/// outage, a stale heartbeat does not mean a lost replica).
pub async fn reconcile_loop(
    books: Arc<Books>,
    cluster: ClusterSettings,
    contact: Arc<DbContact>,
    stop: CancellationToken,
) {
    let every = Duration::from_secs(cluster.reconcile_interval_seconds.max(1));
    let trusted_after = Duration::from_secs(cluster.stale_after_seconds);
    loop {
        if contact.held_for(trusted_after) {
            match reconcile_once(&books, trusted_after).await {
                Ok(r) if r.skipped => crate::metrics::reconcile_run("skipped", 0, 0),
                Ok(r) => crate::metrics::reconcile_run("done", r.released, r.failed),
                Err(e) => {
                    crate::metrics::reconcile_run("error", 0, 0);
                    tracing::warn!(error = %e, "reconciliation failed");
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
