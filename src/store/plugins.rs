//! The tool plugin registry (`tool_plugins`), per tenant.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{violated_constraint, StoreError};
use crate::domain::TenantId;

/// A registered plugin (the admin API shows it as `admin::plugins::PluginResponse`; the gateway
/// hands the runner what it needs of it, `tools::PluginRun`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PluginRow {
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub name: String,
    pub version: String,
    pub kind: String,
    pub cost_micro_usd: i64,
    pub timeout_ms: i32,
    pub max_output_bytes: i32,
    pub enabled: bool,
    pub manifest: Json<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

macro_rules! plugin_columns {
    () => {
        "id, tenant_id, name, version, kind, cost_micro_usd, timeout_ms, max_output_bytes, \
         enabled, manifest, created_at, updated_at"
    };
}

/// A plugin to register.
#[derive(Debug, Clone)]
pub struct NewPlugin {
    pub id: Uuid,
    pub name: String,
    pub version: String,
    pub kind: String,
    pub cost_micro_usd: i64,
    pub timeout_ms: i32,
    pub max_output_bytes: i32,
    pub enabled: bool,
    pub manifest: serde_json::Value,
}

pub async fn insert_plugin(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    p: &NewPlugin,
) -> Result<PluginRow, StoreError> {
    sqlx::query_as(concat!(
        "INSERT INTO tool_plugins (id, tenant_id, name, version, kind, cost_micro_usd, \
         timeout_ms, max_output_bytes, enabled, manifest) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING ",
        plugin_columns!()
    ))
    .bind(p.id)
    .bind(tenant_id)
    .bind(&p.name)
    .bind(&p.version)
    .bind(&p.kind)
    .bind(p.cost_micro_usd)
    .bind(p.timeout_ms)
    .bind(p.max_output_bytes)
    .bind(p.enabled)
    .bind(Json(&p.manifest))
    .fetch_one(conn)
    .await
    .map_err(|e| match violated_constraint(&e) {
        Some("tool_plugins_tenant_name_key") => StoreError::Conflict("a plugin with this name"),
        _ => StoreError::Db(e),
    })
}

pub async fn list_plugins(
    conn: &mut PgConnection,
    tenant_id: TenantId,
) -> Result<Vec<PluginRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        plugin_columns!(),
        " FROM tool_plugins WHERE tenant_id = $1 ORDER BY name"
    ))
    .bind(tenant_id)
    .fetch_all(conn)
    .await
}

/// A plugin by name, without locking it (the call path).
pub async fn get_plugin(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    name: &str,
) -> Result<Option<PluginRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        plugin_columns!(),
        " FROM tool_plugins WHERE tenant_id = $1 AND name = $2"
    ))
    .bind(tenant_id)
    .bind(name)
    .fetch_optional(conn)
    .await
}

/// Locks a plugin row by name for an update.
pub async fn lock_plugin(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    name: &str,
) -> Result<PluginRow, StoreError> {
    sqlx::query_as(concat!(
        "SELECT ",
        plugin_columns!(),
        " FROM tool_plugins WHERE tenant_id = $1 AND name = $2 FOR UPDATE"
    ))
    .bind(tenant_id)
    .bind(name)
    .fetch_optional(conn)
    .await?
    .ok_or(StoreError::NotFound)
}

pub async fn set_enabled(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    id: Uuid,
    enabled: bool,
) -> Result<PluginRow, StoreError> {
    sqlx::query_as(concat!(
        "UPDATE tool_plugins SET enabled = $3, updated_at = now() \
         WHERE tenant_id = $1 AND id = $2 RETURNING ",
        plugin_columns!()
    ))
    .bind(tenant_id)
    .bind(id)
    .bind(enabled)
    .fetch_optional(conn)
    .await?
    .ok_or(StoreError::NotFound)
}
