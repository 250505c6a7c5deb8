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

/// Settlement batches in flight at once on a replica, and the most members in one. One writer,
/// as for admissions: the settlements that arrive while its batch is in the database go
/// together in the next one. Two writers (one filling while the other wrote) took most calls
/// alone below saturation. Measured on 2 cores, one writer each against two (`bench/ab.sh`,
/// three rounds, same binary): Postgres CPU per call at 1,750 req/s open loop 560–689 µs
/// against 612–790, p99 9–20 ms against 10–30; chat-c64 3,780–4,424 req/s against 3,916–4,393;
/// c1 unchanged (a lone call finds the writer free). Batches of 16 or 64 did no better than 32.
const SETTLEMENT_WRITERS: usize = 1;
const SETTLEMENT_BATCH: usize = 32;

/// The settlement queue of a replica whose money transactions run on `hot`.
pub fn settlements(hot: &HotPool) -> Settlements {
    let hot = hot.clone();
    GroupCommit::new(
        "settlement",
        SETTLEMENT_WRITERS,
        SETTLEMENT_BATCH,
        move |jobs| {
            let hot = hot.clone();
            async move { settle_batch::settle_batch(&hot, jobs, link::settlement_event).await }
        },
    )
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
