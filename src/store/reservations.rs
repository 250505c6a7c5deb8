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

pub async fn insert_reservation(
    conn: &mut PgConnection,
    r: &NewReservation,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO reservations (id, execution_id, attempt, tenant_id, agent_id, \
         estimate_micro_usd, holds_tenant, rate_tokens, state) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'RESERVED')",
    )
    .bind(r.id)
    .bind(r.execution_id)
    .bind(r.attempt)
    .bind(r.tenant_id)
    .bind(r.agent_id)
    .bind(r.estimate_micro_usd)
    .bind(r.holds_tenant)
    .bind(r.rate_tokens)
    .execute(conn)
    .await?;
    Ok(())
}
