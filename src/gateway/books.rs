//! What writes money: the handles the two money transactions (admission's hold, settlement) and
//! the reconciler's release need, and nothing else.

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::agent_gate::AgentGates;
use crate::domain::ReplicaId;
use crate::ledger::link;
use crate::store::group_commit::GroupCommit;
use crate::store::hot::HotPool;
use crate::store::settle_batch::{self, Settled, SettlementJob};

/// This replica's settlements, written in batches (`store::settle_batch`).
pub type Settlements = GroupCommit<SettlementJob, Settled>;

/// Settlement batches in flight at once on a replica, and the most members in one. Two writers
/// keep one batch filling while the other is in the database; more would mostly queue on the
/// same agent rows (the brief's starting point, not tuned further: on 2 cores chat-c64 already
/// runs 1.5x the unbatched build with ~40% less Postgres CPU per request).
const SETTLEMENT_WRITERS: usize = 2;
const SETTLEMENT_BATCH: usize = 32;

/// The settlement queue of a replica whose money transactions run on `hot`.
pub fn settlements(hot: &HotPool) -> Settlements {
    let hot = hot.clone();
    GroupCommit::new(SETTLEMENT_WRITERS, SETTLEMENT_BATCH, move |jobs| {
        let hot = hot.clone();
        async move { settle_batch::settle_batch(&hot, jobs, link::settlement_event).await }
    })
}

/// The books' writer on this replica.
pub struct Books {
    pub pool: PgPool,
    /// The money transactions' own pool: pipelined statements (`store::hot`).
    pub hot: crate::store::hot::HotPool,
    /// The settlements, batched. A settlement takes no agent gate: the queue's writers already
    /// bound how many of an agent's transactions wait on its row, and a gate slot held while
    /// queued capped a busy agent's batch at the gate's width (hot-c64 383 -> 1,538 req/s
    /// without it, bench/run.sh, same machine and hour).
    pub settlements: Settlements,
    /// Bounds each agent's money transactions in flight on this replica.
    pub agent_gates: AgentGates,
    /// The replica that admits (and so owns) an execution until it is settled.
    pub replica_id: ReplicaId,
    /// Cancelled when a shutdown's drain timeout passes: settlements stop waiting for the
    /// database (the reconciler settles what is left once this replica is gone).
    pub drain_expired: CancellationToken,
}
