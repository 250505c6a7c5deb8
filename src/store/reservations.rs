//! Reservations: money held for one attempt, settled exactly once by compare-and-set.

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

/// What a successful compare-and-set settled.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct SettledHold {
    pub estimate_micro_usd: i64,
    pub holds_tenant: bool,
    /// Tokens charged to the rate windows at admission (0 when no limit applied).
    pub rate_tokens: i64,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// `RESERVED -> COMMITTED` (with `actual`) or `RESERVED -> RELEASED` (with `None`). Returns
/// `None` when the reservation was already settled: the second attempt is a no-op.
pub async fn settle_reservation(
    conn: &mut PgConnection,
    execution_id: Uuid,
    attempt: i32,
    actual_micro_usd: Option<i64>,
    reason: Option<&str>,
) -> Result<Option<SettledHold>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE reservations SET \
           state = CASE WHEN $3::bigint IS NULL THEN 'RELEASED' ELSE 'COMMITTED' END, \
           actual_micro_usd = $3, reason = $4, settled_at = now() \
         WHERE execution_id = $1 AND attempt = $2 AND state = 'RESERVED' \
         RETURNING estimate_micro_usd, holds_tenant, rate_tokens, created_at",
    )
    .bind(execution_id)
    .bind(attempt)
    .bind(actual_micro_usd)
    .bind(reason)
    .fetch_optional(conn)
    .await
}
