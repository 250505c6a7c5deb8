//! The writes of an admitted call in one round trip, inside the admission transaction: the
//! `aex_hold_hashed` function (migrations/20261207520001_ledger_hash_in_replica.sql) writes the
//! execution, its reservation (settled later, exactly once, by `store::settlements`), the
//! estimate on the tenant's and agent's books, and the ledger events `reservation.reserved` and
//! `execution.dispatched`, hashed by the caller after the chain tail it read under the chain's
//! lock (`store::agents::lock_agent_chain`).

use sqlx::PgConnection;
use uuid::Uuid;

use super::executions::{bind_execution, NewExecution};

/// The reservation of the attempt, beside what the execution already says.
#[derive(Debug, Clone, Copy)]
pub struct NewReservation {
    pub id: Uuid,
    /// Whether the hold also counts against the tenant's budget.
    pub holds_tenant: bool,
    /// Tokens charged to the TPM windows at admission (0 when no limit applies).
    pub rate_tokens: i64,
}

/// The two events of a hold, linked to the agent's chain by the caller: `reservation.reserved` at
/// `seq` after `prev_hash`, `execution.dispatched` at `seq + 1` after it.
pub struct HoldEvents<'a> {
    pub chain_id: &'a str,
    pub ts: chrono::DateTime<chrono::Utc>,
    pub seq: i64,
    pub prev_hash: &'a str,
    pub reserved: (&'a str, &'a str),
    pub dispatched: (&'a str, &'a str),
}

/// Holds `e.estimate_micro_usd` for the attempt `e` describes, with its two events as hashed by
/// the caller: `reserved` and `dispatched` are (hash, canonical payload).
pub async fn hold(
    conn: &mut PgConnection,
    e: &NewExecution<'_>,
    r: &NewReservation,
    events: &HoldEvents<'_>,
) -> Result<(), sqlx::Error> {
    let started = std::time::Instant::now();
    bind_execution(
        sqlx::query(
            "SELECT aex_hold_hashed($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
             $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25)",
        ),
        e,
    )
    .bind(e.provider)
    .bind(r.id)
    .bind(r.holds_tenant)
    .bind(r.rate_tokens)
    .bind(events.chain_id)
    .bind(events.ts)
    .bind(events.seq)
    .bind(events.prev_hash)
    .bind(events.reserved.0)
    .bind(events.reserved.1)
    .bind(events.dispatched.0)
    .bind(events.dispatched.1)
    .execute(conn)
    .await?;
    crate::metrics::observe_ledger_append(started.elapsed());
    Ok(())
}

/// The same hold through `aex_hold`, which takes the chain's lock, reads its tail and hashes both
/// events in SQL (`chain`: the agent's chain id and advisory-lock key).
pub async fn hold_hashed_in_sql(
    conn: &mut PgConnection,
    e: &NewExecution<'_>,
    r: &NewReservation,
    chain: (&str, i64),
    reserved_payload: &str,
    dispatched_payload: &str,
) -> Result<(), sqlx::Error> {
    let started = std::time::Instant::now();
    bind_execution(
        sqlx::query(
            "SELECT aex_hold($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
             $16, $17, $18, $19, $20, $21)",
        ),
        e,
    )
    .bind(e.provider)
    .bind(r.id)
    .bind(r.holds_tenant)
    .bind(r.rate_tokens)
    .bind(chain.0)
    .bind(chain.1)
    .bind(reserved_payload)
    .bind(dispatched_payload)
    .execute(conn)
    .await?;
    crate::metrics::observe_ledger_append(started.elapsed());
    Ok(())
}

/// What the agent committed since `start` (everything when `lifetime`): its `spent` when a
/// budget period restarts at `start`.
pub async fn committed_since(
    conn: &mut PgConnection,
    agent: crate::domain::AgentId,
    start: chrono::DateTime<chrono::Utc>,
    lifetime: bool,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COALESCE(sum(actual_micro_usd), 0)::bigint FROM reservations \
         WHERE agent_id = $1 AND state = 'COMMITTED' AND ($3 OR settled_at >= $2)",
    )
    .bind(agent)
    .bind(start)
    .bind(lifetime)
    .fetch_one(conn)
    .await
}
