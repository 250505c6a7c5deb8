//! Tenants.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::PgConnection;

use super::{violated_constraint, StoreError};
use crate::domain::TenantId;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TenantRow {
    pub id: TenantId,
    pub name: String,
    pub budget_micro_usd: Option<i64>,
    pub spent_micro_usd: i64,
    pub reserved_micro_usd: i64,
    pub rpm_limit: Option<i32>,
    pub tpm_limit: Option<i64>,
    pub default_policy: Json<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The columns of [`TenantRow`], for `concat!` so that the SQL stays a static string. A tenant's
/// `spent` is every committed cost of its agents (SPEC §5.4): the sum of their lifetime counters,
/// kept per agent so that settlements of a busy tenant never queue on the tenant's row
/// (migrations/20261206200001_settle_always_ends.sql). The sum reads every agent row of the
/// tenant, which `gateway.max_agents_per_tenant` bounds ([`lock_agent_count`]).
macro_rules! tenant_columns {
    () => {
        "id, name, budget_micro_usd, \
         (SELECT LEAST(COALESCE(sum(a.lifetime_spent_micro_usd), 0), 9223372036854775807) \
          FROM agents a WHERE a.tenant_id = tenants.id)::bigint AS spent_micro_usd, \
         reserved_micro_usd, rpm_limit, tpm_limit, default_policy, created_at, updated_at"
    };
}

/// The settings of a tenant an operator chooses (the money counters are the gateway's).
#[derive(Debug, Clone)]
pub struct TenantSettings {
    pub name: String,
    pub budget_micro_usd: Option<i64>,
    pub rpm_limit: Option<i32>,
    pub tpm_limit: Option<i64>,
    pub default_policy: serde_json::Value,
}

/// Writes a tenant's settings: a new tenant, or (under the caller's row lock) an existing one.
pub async fn save_tenant(
    conn: &mut PgConnection,
    id: TenantId,
    t: &TenantSettings,
) -> Result<TenantRow, StoreError> {
    sqlx::query_as(concat!(
        "INSERT INTO tenants (id, name, budget_micro_usd, rpm_limit, tpm_limit, default_policy) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, \
           budget_micro_usd = EXCLUDED.budget_micro_usd, rpm_limit = EXCLUDED.rpm_limit, \
           tpm_limit = EXCLUDED.tpm_limit, default_policy = EXCLUDED.default_policy, \
           updated_at = now() \
         RETURNING ",
        tenant_columns!()
    ))
    .bind(id)
    .bind(&t.name)
    .bind(t.budget_micro_usd)
    .bind(t.rpm_limit)
    .bind(t.tpm_limit)
    .bind(Json(&t.default_policy))
    .fetch_one(conn)
    .await
    .map_err(|e| match violated_constraint(&e) {
        Some("tenants_name_key") => StoreError::Conflict("a tenant with this name"),
        _ => StoreError::Db(e),
    })
}

/// Every tenant, or only `only` (an admin sees its own), by name.
pub async fn list_tenants(
    conn: &mut PgConnection,
    only: Option<TenantId>,
) -> Result<Vec<TenantRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        tenant_columns!(),
        " FROM tenants WHERE ($1::uuid IS NULL OR id = $1) ORDER BY name"
    ))
    .bind(only)
    .fetch_all(conn)
    .await
}

pub async fn get_tenant(conn: &mut PgConnection, id: TenantId) -> Result<TenantRow, StoreError> {
    sqlx::query_as(concat!(
        "SELECT ",
        tenant_columns!(),
        " FROM tenants WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or(StoreError::NotFound)
}

pub async fn get_tenant_by_name(
    conn: &mut PgConnection,
    name: &str,
) -> Result<TenantRow, StoreError> {
    sqlx::query_as(concat!(
        "SELECT ",
        tenant_columns!(),
        " FROM tenants WHERE name = $1"
    ))
    .bind(name)
    .fetch_optional(conn)
    .await?
    .ok_or(StoreError::NotFound)
}

/// Locks the tenant row (taken before the agent row whenever both are locked), then reads it.
/// The read is a statement of its own: one that waited for the lock would still compute `spent`
/// from the snapshot it started with, missing a settlement that committed meanwhile.
pub async fn lock_tenant(conn: &mut PgConnection, id: TenantId) -> Result<TenantRow, StoreError> {
    lock_row(conn, "SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE", id).await?;
    get_tenant(conn, id).await
}

/// Runs `lock`, a statement locking tenant `id`'s row; `NotFound` when there is none.
async fn lock_row(conn: &mut PgConnection, lock: &str, id: TenantId) -> Result<(), StoreError> {
    sqlx::query(lock)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .ok_or(StoreError::NotFound)
        .map(drop)
}

/// Locks the tenant row against another agent creation, then counts the tenant's agents, every
/// state included. `FOR NO KEY UPDATE` serialises creations (and waits for an admission holding
/// the row `FOR UPDATE`) without blocking the inserts that only reference the tenant
/// (executions, tokens), which take `FOR KEY SHARE`. The count is a statement of its own, as in
/// [`lock_tenant`], so that it sees the agent a creation that held the lock just committed.
pub async fn lock_agent_count(conn: &mut PgConnection, id: TenantId) -> Result<i64, StoreError> {
    lock_row(
        conn,
        "SELECT 1 FROM tenants WHERE id = $1 FOR NO KEY UPDATE",
        id,
    )
    .await?;
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM agents WHERE tenant_id = $1")
            .bind(id)
            .fetch_one(conn)
            .await?,
    )
}

/// The statement of [`admission_view`] (also run on the money pool, `store::holds::lock_hot`).
pub(super) const ADMISSION_VIEW: &str = "SELECT budget_micro_usd IS NOT NULL \
     OR rpm_limit IS NOT NULL OR tpm_limit IS NOT NULL, default_policy FROM tenants WHERE id = $1";

/// What admission reads of a tenant before locking anything: whether it has a budget or rate
/// limits of its own (only then is its row locked), and its default policy. `None`: no such
/// tenant.
pub async fn admission_view(
    conn: &mut PgConnection,
    id: TenantId,
) -> Result<Option<(bool, Json<serde_json::Value>)>, sqlx::Error> {
    sqlx::query_as(ADMISSION_VIEW)
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// The ids of a tenant's agents.
pub async fn agent_ids<'e>(
    db: impl sqlx::PgExecutor<'e>,
    tenant: TenantId,
) -> Result<Vec<uuid::Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM agents WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_all(db)
        .await
}
