//! The application state: every long-lived handle of one server, built once at startup and
//! shared by the HTTP handlers and the background tasks. It sits at the top of the layers
//! (only `http`, `server` and the tests import it); everything below takes the narrow handles it
//! uses — the pool, the settings, the signer, the revocation set, the routing table, the
//! control path ([`Gateway`]) or only the books' writer ([`crate::gateway::Books`]).

use std::sync::Arc;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::auth::{RevocationSet, TokenSigner};
use crate::cluster::observed::Observed;
use crate::cluster::Readiness;
use crate::config::{LiveRouting, RoutingTable, Settings};
use crate::domain::ReplicaId;
use crate::gateway::Gateway;

/// Shared state of every handler and background task: cheap handles only.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub settings: Arc<Settings>,
    pub signer: Arc<TokenSigner>,
    pub revocations: Arc<RevocationSet>,
    /// The routing table in force (also the control path's, through [`Gateway::routing`]).
    pub routing: Arc<LiveRouting>,
    pub replica_id: ReplicaId,
    /// Cancelled when a shutdown's drain timeout passes: streams still relaying stop and commit
    /// what they delivered, and settlements stop waiting for the database.
    pub drain_expired: CancellationToken,
    /// The control path of governed calls.
    pub gateway: Arc<Gateway>,
    pub readiness: Arc<Readiness>,
    /// The last ledger verification and database sample, for `/metrics` and the dashboard.
    pub observed: Arc<Observed>,
}

impl AppState {
    /// `pools`: the sqlx pool, and the money transactions' own (`store::hot`).
    pub fn new(
        (pool, hot): (PgPool, crate::store::hot::HotPool),
        settings: Arc<Settings>,
        routing: RoutingTable,
        replica_id: ReplicaId,
    ) -> Result<Self, reqwest::Error> {
        let routing = Arc::new(LiveRouting::new(routing));
        let drain_expired = CancellationToken::new();
        let gateway = Gateway::new(
            (pool.clone(), hot),
            Arc::clone(&settings),
            Arc::clone(&routing),
            replica_id,
            drain_expired.clone(),
        )?;
        Ok(AppState {
            signer: Arc::new(TokenSigner::new(&settings.auth)),
            revocations: Arc::new(RevocationSet::default()),
            gateway: Arc::new(gateway),
            readiness: Arc::new(Readiness::default()),
            observed: Arc::new(Observed::default()),
            pool,
            settings,
            routing,
            replica_id,
            drain_expired,
        })
    }
}
