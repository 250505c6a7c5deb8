//! What one server knows about the books and the ledger between scrapes: the last ledger
//! verification and the last sample of the database gauges. Written by the background tasks
//! (and by any verification run on request), read by `/metrics` and `/admin/metrics`.

use std::sync::RwLock;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::ledger::verify::{BadEvent, VerifyReport};
use crate::store::stats::{AgentBooks, TenantBooks};

/// The outcome of the last ledger verification this server ran.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LedgerCheck {
    pub ok: bool,
    pub chains: u64,
    pub events: u64,
    pub first_bad_event: Option<BadEvent>,
    pub elapsed_ms: u64,
    pub checked_at: DateTime<Utc>,
}

/// The database gauges at one moment.
#[derive(Debug, Clone)]
pub struct BooksSample {
    pub tenants: Vec<TenantBooks>,
    /// Empty unless `metrics.agent_labels` is on.
    pub agents: Vec<AgentBooks>,
    pub stale_reservations: i64,
    pub exhausted_agents: i64,
    pub sampled_at: DateTime<Utc>,
}

/// One server's observations; cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct Observed {
    ledger: RwLock<Option<LedgerCheck>>,
    books: RwLock<Option<BooksSample>>,
}

impl Observed {
    /// Keeps the result of a verification run, wherever it ran.
    pub fn record_verification(&self, report: &VerifyReport) {
        let check = LedgerCheck {
            ok: report.ok,
            chains: report.chains,
            events: report.events,
            first_bad_event: report.first_bad_event.clone(),
            elapsed_ms: report.elapsed_ms,
            checked_at: Utc::now(),
        };
        if let Ok(mut slot) = self.ledger.write() {
            *slot = Some(check);
        }
    }

    /// The last verification, `None` before the first one.
    pub fn ledger(&self) -> Option<LedgerCheck> {
        self.ledger.read().ok().and_then(|l| l.clone())
    }

    pub fn set_books(&self, sample: BooksSample) {
        if let Ok(mut slot) = self.books.write() {
            *slot = Some(sample);
        }
    }

    /// The last database sample, `None` before the first one.
    pub fn books(&self) -> Option<BooksSample> {
        self.books.read().ok().and_then(|b| b.clone())
    }
}
