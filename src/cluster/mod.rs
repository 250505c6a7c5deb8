//! The background tasks of a server and the coordination between replicas, all through
//! Postgres: registration and heartbeat, the reconciler that settles a lost replica's
//! executions, housekeeping (pruning), the watch that raises alerts for lost replicas and stale
//! holds, the checkpointer, LISTEN/NOTIFY for config versions and revocations, the routing-table
//! versions themselves, and the sampler that keeps what this server observes (`observed`: the
//! last ledger verification, the database gauges) current.

pub mod alert_watch;
pub mod checkpointer;
pub mod config_sync;
pub mod housekeeping;
pub mod listener;
pub mod observed;
pub mod reconciler;
pub mod replica;
pub mod sampler;

use std::sync::atomic::{AtomicBool, Ordering};

/// What `/ready` reports; requests that need the database are refused (503) until ready.
#[derive(Debug, Default)]
pub struct Readiness {
    pub schema_current: AtomicBool,
    pub config_loaded: AtomicBool,
    pub registered: AtomicBool,
    pub ledger_verified: AtomicBool,
    pub draining: AtomicBool,
    /// Set when the startup gate failed; stays unready until restart.
    pub gate_failed: AtomicBool,
    /// The database role is neither a superuser nor the owner of the ledger (SPEC §10).
    /// Reported, never a reason to refuse traffic.
    pub least_privilege: AtomicBool,
}

impl Readiness {
    pub fn accepts_traffic(&self) -> bool {
        self.schema_current.load(Ordering::Acquire)
            && self.config_loaded.load(Ordering::Acquire)
            && self.registered.load(Ordering::Acquire)
            && !self.draining.load(Ordering::Acquire)
            && !self.gate_failed.load(Ordering::Acquire)
    }

    pub fn set(flag: &AtomicBool, value: bool) {
        flag.store(value, Ordering::Release);
    }

    pub fn get(flag: &AtomicBool) -> bool {
        flag.load(Ordering::Acquire)
    }
}
