//! The writes of an admitted call in one round trip, inside the admission transaction: the
//! `aex_hold` function (migrations/20261204000003_hold_function.sql) writes the execution, its
//! reservation (settled later, exactly once, by `store::settlements`), the estimate on the
//! tenant's and agent's books, and the ledger events `reservation.reserved` and
//! `execution.dispatched`.

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

/// Holds `e.estimate_micro_usd` for the attempt `e` describes, on the agent's chain `chain`
/// (its id and advisory-lock key).
pub async fn hold(
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
