//! The control path (SPEC §4): admission (idempotency, route, policy, limits, estimate,
//! reservation), dispatch, and exactly-once settlement, each state change with its ledger event.

pub mod admission;
mod admit;
pub mod agent_gate;
pub mod bound;
pub mod call;
pub mod call_types;
mod chat_chunk;
pub mod dispatch;
pub mod error;
pub mod estimate;
pub mod idempotency;
mod job;
pub mod models;
pub mod policy;
pub mod prepare;
pub mod rate_limit;
pub mod settlement;
pub mod stream;
pub mod tool_call;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{RevocationSet, TokenSigner};
use crate::config::{RoutingTable, Settings};
use crate::domain::ReplicaId;
use crate::providers::Providers;
use agent_gate::AgentGates;

pub use error::GatewayError;

/// Everything the control path needs: cheap handles shared by every request.
pub struct Gateway {
    pub pool: PgPool,
    pub settings: Arc<Settings>,
    pub signer: Arc<TokenSigner>,
    pub revocations: Arc<RevocationSet>,
    pub providers: Providers,
    /// Tool plugin runners (the egress-guarded HTTP client, the sandbox).
    pub tools: Arc<crate::tools::Tools>,
    pub replica_id: ReplicaId,
    /// Settlements and other work a request started; awaited at shutdown.
    pub tasks: TaskTracker,
    /// Cancelled when a shutdown's drain timeout passes: streams still relaying stop and commit
    /// what they delivered, and settlements stop waiting for the database.
    pub drain_expired: CancellationToken,
    /// Bounds each agent's money transactions in flight on this replica.
    pub agent_gates: AgentGates,
    routing: RwLock<Arc<RoutingTable>>,
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
    pub fn new(
        pool: PgPool,
        settings: Arc<Settings>,
        routing: RoutingTable,
        replica_id: ReplicaId,
    ) -> Result<Self, reqwest::Error> {
        let providers = Providers::new(std::time::Duration::from_secs(
            settings.gateway.upstream_connect_timeout_seconds,
        ))?;
        let tools = crate::tools::Tools::new(
            &settings.tools,
            std::time::Duration::from_secs(settings.gateway.upstream_connect_timeout_seconds),
        )?;
        Ok(Gateway {
            tools: Arc::new(tools),
            agent_gates: AgentGates::new(settings.gateway.agent_transaction_slots as usize),
            signer: Arc::new(TokenSigner::new(&settings.auth)),
            revocations: Arc::new(RevocationSet::default()),
            pool,
            settings,
            providers,
            replica_id,
            tasks: TaskTracker::new(),
            drain_expired: CancellationToken::new(),
            routing: RwLock::new(Arc::new(routing)),
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
        self.routing
            .read()
            .map(|r| Arc::clone(&r))
            .unwrap_or_default()
    }

    /// Installs a newer routing table (an older or equal version is ignored).
    pub fn install_routing(&self, table: RoutingTable) -> bool {
        match self.routing.write() {
            Ok(mut current) if table.version > current.version => {
                *current = Arc::new(table);
                true
            }
            _ => false,
        }
    }
}
