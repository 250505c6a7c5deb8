//! Reservations: money held for one attempt, settled exactly once by the compare-and-set in
//! `aex_settle` (see `store::settlements`).

use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{AgentId, TenantId};

#[derive(Debug, Clone)]
pub struct NewReservation {
    pub id: Uuid,
    pub execution_id: Uuid,
    pub attempt: i32,
    pub tenant_id: TenantId,
    pub agent_id: AgentId,
    pub estimate_micro_usd: i64,
    pub holds_tenant: bool,
    pub rate_tokens: i64,
}

/// Holds the estimate for an admitted attempt in the caller's transaction, in one round trip (the
/// `aex_hold` function): the reservation, the tenant's and agent's books, and the ledger events
/// `reservation.reserved` and `execution.dispatched` on the agent's chain.
pub async fn hold(
    conn: &mut PgConnection,
    r: &NewReservation,
    execution_key: &str,
    chain: (&str, i64),
    reserved_payload: &str,
    dispatched_payload: &str,
) -> Result<(), sqlx::Error> {
    let started = std::time::Instant::now();
    sqlx::query("SELECT aex_hold($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)")
        .bind(r.id)
        .bind(r.execution_id)
        .bind(r.attempt)
        .bind(r.tenant_id)
        .bind(r.agent_id)
        .bind(r.estimate_micro_usd)
        .bind(r.holds_tenant)
        .bind(r.rate_tokens)
        .bind(execution_key)
        .bind(chain.0)
        .bind(chain.1)
        .bind(reserved_payload)
        .bind(dispatched_payload)
        .execute(conn)
        .await?;
    crate::metrics::observe_ledger_append(started.elapsed());
    Ok(())
}
