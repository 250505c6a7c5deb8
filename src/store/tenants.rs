//! Tenants.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::PgConnection;

use super::StoreError;
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

/// The columns of [`TenantRow`], for `concat!` so that the SQL stays a static string.
macro_rules! tenant_columns {
    () => {
        "id, name, budget_micro_usd, spent_micro_usd, reserved_micro_usd, rpm_limit, tpm_limit, \
         default_policy, created_at, updated_at"
    };
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

/// Locks the tenant row. Taken before the agent row whenever both are locked.
pub async fn lock_tenant(conn: &mut PgConnection, id: TenantId) -> Result<TenantRow, StoreError> {
    sqlx::query_as(concat!(
        "SELECT ",
        tenant_columns!(),
        " FROM tenants WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or(StoreError::NotFound)
}

/// Moves money on the tenant's counters (reservation, commit or release).
pub async fn add_to_books(
    conn: &mut PgConnection,
    id: TenantId,
    reserved_delta: i64,
    spent_delta: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE tenants SET reserved_micro_usd = reserved_micro_usd + $2, \
         spent_micro_usd = spent_micro_usd + $3, updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(reserved_delta)
    .bind(spent_delta)
    .execute(conn)
    .await?;
    Ok(())
}
