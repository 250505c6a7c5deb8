//! What writes money: the handles the two money transactions (admission's hold, settlement) and
//! the reconciler's release need, and nothing else.

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::agent_gate::AgentGates;
use crate::domain::ReplicaId;

/// The books' writer on this replica.
pub struct Books {
    pub pool: PgPool,
    /// The money transactions' own pool: pipelined statements (`store::hot`).
    pub hot: crate::store::hot::HotPool,
    /// Bounds each agent's money transactions in flight on this replica.
    pub agent_gates: AgentGates,
    /// The replica that admits (and so owns) an execution until it is settled.
    pub replica_id: ReplicaId,
    /// Cancelled when a shutdown's drain timeout passes: settlements stop waiting for the
    /// database (the reconciler settles what is left once this replica is gone).
    pub drain_expired: CancellationToken,
}
