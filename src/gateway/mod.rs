//! The control path (SPEC §4): admission (idempotency, route, policy, limits, estimate,
//! reservation), dispatch, and exactly-once settlement, each state change with its ledger event.

pub mod admission;
mod admit;
pub mod agent_gate;
pub mod books;
pub mod bound;
pub mod budget_period;
pub mod call;
pub mod call_types;
mod chat_chunk;
pub mod dispatch;
pub mod error;
pub mod estimate;
pub mod idempotency;
mod job;
pub mod media;
pub mod messages;
mod messages_events;
pub mod messages_shape;
pub mod models;
mod outgoing;
pub mod policy;
pub mod prepare;
pub mod pricing;
pub mod rate_limit;
pub mod refusal;
mod reservation;
pub mod settlement;
pub mod stream;
pub mod ticket;
pub mod tool_call;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{LiveRouting, RoutingTable, Settings};
use crate::domain::ReplicaId;
use crate::providers::Providers;
use agent_gate::AgentGates;

pub use books::Books;
pub use error::GatewayError;

/// The control path's handles, shared by every governed request. The application state
/// (`app_state::AppState`) owns it; settlement and the reconciler take only [`Books`].
pub struct Gateway {
    pub pool: PgPool,
    pub settings: Arc<Settings>,
    pub providers: Providers,
    /// Tool plugin runners (the egress-guarded HTTP client, the sandbox).
    pub tools: Arc<crate::tools::Tools>,
    /// Settlements and other work a request started; awaited at shutdown.
    pub tasks: TaskTracker,
    /// What writes money: admission's hold and settlement.
    pub books: Arc<Books>,
    /// This replica's common admissions, written in batches (`admission::batch`).
    pub admissions: admission::batch::Admissions,
    routing: Arc<LiveRouting>,
    /// Requests on this replica waiting for an attempt of the same key in flight.
    duplicates_waiting: AtomicUsize,
}

/// Counts one request among [`Gateway::duplicates_waiting`] while it lives.
pub struct WaitingForDuplicate<'a>(&'a AtomicUsize);

impl Drop for WaitingForDuplicate<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Gateway {
    /// `drain_expired` is cancelled when a shutdown's drain timeout passes: streams still
    /// relaying stop and commit what they delivered, and settlements stop waiting.
    pub fn new(
        (pool, hot): (PgPool, crate::store::hot::HotPool),
        settings: Arc<Settings>,
        routing: Arc<LiveRouting>,
        replica_id: ReplicaId,
        drain_expired: CancellationToken,
    ) -> Result<Self, reqwest::Error> {
        let connect_timeout =
            std::time::Duration::from_secs(settings.gateway.upstream_connect_timeout_seconds);
        let providers = Providers::new(connect_timeout)?;
        let tools = crate::tools::Tools::new(&settings.tools, connect_timeout)?;
        let books = Arc::new(Books {
            pool: pool.clone(),
            settlements: books::settlements(&hot),
            hot,
            agent_gates: AgentGates::new(settings.gateway.agent_transaction_slots as usize),
            replica_id,
            drain_expired,
        });
        Ok(Gateway {
            tools: Arc::new(tools),
            admissions: admission::batch::admissions(Arc::downgrade(&books)),
            books,
            pool,
            settings,
            providers,
            tasks: TaskTracker::new(),
            routing,
            duplicates_waiting: AtomicUsize::new(0),
        })
    }

    /// How many requests on this replica wait for an attempt of the same key in flight.
    pub fn duplicates_waiting(&self) -> usize {
        self.duplicates_waiting.load(Ordering::SeqCst)
    }

    /// Counts the caller among the requests waiting for a duplicate until the guard drops.
    pub fn waiting_for_duplicate(&self) -> WaitingForDuplicate<'_> {
        self.duplicates_waiting.fetch_add(1, Ordering::SeqCst);
        WaitingForDuplicate(&self.duplicates_waiting)
    }

    /// The routing table in force; a request keeps the snapshot it started with.
    pub fn routing(&self) -> Arc<RoutingTable> {
        self.routing.current()
    }
}
