//! The tool plugin registry of a tenant (SPEC §8). An operator installs a plugin for a tenant (a
//! registry row: an `http` plugin's URL is checked against the egress rules, a `process`
//! plugin's executable under `tools.plugin_dir` is hashed with its arguments); the tenant's
//! admin lists the tenant's plugins and enables or disables them. Running plugins is the
//! gateway's business.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{admin_event, usd, validate_name, AdminError};
use crate::auth::Principal;
use crate::domain::{Scope, TenantId};
use crate::ledger;
use crate::store::plugins::{self as store, NewPlugin, PluginRow};
use crate::tools::executable;
use crate::tools::process_args;
use crate::tools::Tools;

/// A registered plugin, as the admin API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PluginResponse {
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub name: String,
    pub version: String,
    pub kind: String,
    pub cost_micro_usd: i64,
    pub timeout_ms: i32,
    pub max_output_bytes: i32,
    pub enabled: bool,
    #[schema(value_type = Object)]
    pub manifest: Value,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl From<PluginRow> for PluginResponse {
    fn from(p: PluginRow) -> Self {
        PluginResponse {
            id: p.id,
            tenant_id: p.tenant_id,
            name: p.name,
            version: p.version,
            kind: p.kind,
            cost_micro_usd: p.cost_micro_usd,
            timeout_ms: p.timeout_ms,
            max_output_bytes: p.max_output_bytes,
            enabled: p.enabled,
            manifest: p.manifest.0,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    /// AEX POSTs the input to `manifest.url`.
    Http,
    /// A local executable at `manifest.path`, checked by SHA-256.
    Process,
}

/// `POST /admin/plugins`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallPluginRequest {
    /// Unique within the tenant; the `tool_name` agents call.
    #[schema(min_length = 1, max_length = 128)]
    pub name: String,
    #[schema(min_length = 1, max_length = 128)]
    pub version: String,
    pub kind: PluginKind,
    /// Price of one run in decimal USD, e.g. "0.001".
    #[schema(pattern = r"^([0-9]+(\.[0-9]{0,6})?|\.[0-9]{1,6})$", example = "5.00")]
    pub cost_usd: String,
    /// Wall-clock limit of one run (default 30,000).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 3600000)]
    pub timeout_ms: Option<i32>,
    /// Output kept from one run (default 1 MiB).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 67108864)]
    pub max_output_bytes: Option<i32>,
    #[serde(default)]
    pub enabled: Option<bool>,
    /// `{"url", "secret_env"}` for `http`; `{"path", "args", "sha256"}` for `process`: `path`
    /// under `tools.plugin_dir`, `args` a list of strings, `sha256` the executable's (optional;
    /// must match when given). Stored with the canonical path, the executable's `sha256` and
    /// `invocation_sha256` over the executable and `args`, both checked before every run.
    #[schema(value_type = Object)]
    pub manifest: Map<String, Value>,
}

fn manifest_str<'a>(m: &'a Map<String, Value>, key: &str) -> Result<&'a str, AdminError> {
    m.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| AdminError::invalid("manifest", format!("manifest.{key} must be a string")))
}

/// Refuses manifest keys a kind does not know (nothing unexpected reaches a runner).
fn only_keys(m: &Map<String, Value>, known: &[&str]) -> Result<(), AdminError> {
    match m.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(AdminError::invalid(
            "manifest",
            format!("unknown key manifest.{k} (expected {})", known.join(", ")),
        )),
        None => Ok(()),
    }
}

/// Checks the manifest for its kind: an http plugin's URL against the egress rules, a process
/// plugin's executable (under `tools.plugin_dir`) hashed with its arguments.
async fn checked_manifest(
    tools: &Tools,
    kind: PluginKind,
    mut m: Map<String, Value>,
) -> Result<Map<String, Value>, AdminError> {
    match kind {
        PluginKind::Http => {
            only_keys(&m, &["url", "secret_env"])?;
            let url = manifest_str(&m, "url")?;
            tools
                .egress()
                .check_url(url)
                .await
                .map_err(|e| AdminError::invalid("manifest", format!("manifest.url: {e}")))?;
            // Calls are HMAC-signed with the secret in this environment variable.
            manifest_str(&m, "secret_env")?;
        }
        PluginKind::Process => {
            only_keys(&m, &["path", "args", "sha256"])?;
            let path = manifest_str(&m, "path")?.to_owned();
            let args = process_args(&Value::Object(m.clone()))
                .map_err(|e| AdminError::invalid("manifest", e))?;
            let exe = executable::load(tools.settings(), &path)
                .await
                .map_err(|e| AdminError::invalid("manifest", format!("manifest.path: {e}")))?;
            if let Some(expected) = m.get("sha256").and_then(Value::as_str) {
                if !expected.eq_ignore_ascii_case(&exe.sha256) {
                    return Err(AdminError::invalid(
                        "manifest",
                        format!(
                            "manifest.sha256 does not match the file (its SHA-256 is {})",
                            exe.sha256
                        ),
                    ));
                }
            }
            let invocation = executable::invocation_sha256(&exe.sha256, &args);
            m.insert(
                "path".into(),
                Value::String(exe.path.to_string_lossy().into_owned()),
            );
            m.insert("args".into(), json!(args));
            m.insert("sha256".into(), Value::String(exe.sha256));
            m.insert("invocation_sha256".into(), Value::String(invocation));
        }
    }
    Ok(m)
}

/// Installs a plugin for a tenant. Plugins run code or send requests from the gateway's own
/// hosts, so only an operator installs them (SPEC §8); a tenant admin gets 403 and nothing is
/// read or written.
#[tracing::instrument(skip_all, fields(%tenant_id, name = %req.name))]
pub async fn install_plugin(
    pool: &sqlx::PgPool,
    tools: &Tools,
    by: &Principal,
    tenant_id: TenantId,
    req: InstallPluginRequest,
) -> Result<PluginResponse, AdminError> {
    if by.scope != Scope::Operator {
        return Err(AdminError::PermissionDenied(
            "only an operator installs plugins; a tenant admin enables or disables the ones \
             installed for its tenant"
                .into(),
        ));
    }
    validate_name("name", &req.name)?;
    validate_name("version", &req.version)?;
    let cost = usd("cost_usd", &req.cost_usd)?;
    let timeout_ms = req.timeout_ms.unwrap_or(30_000);
    if !(1..=3_600_000).contains(&timeout_ms) {
        return Err(AdminError::invalid(
            "timeout_ms",
            "must be between 1 and 3600000",
        ));
    }
    let max_output_bytes = req.max_output_bytes.unwrap_or(1 << 20);
    if !(1..=64 << 20).contains(&max_output_bytes) {
        return Err(AdminError::invalid(
            "max_output_bytes",
            "must be between 1 and 67108864",
        ));
    }
    let manifest = Value::Object(checked_manifest(tools, req.kind, req.manifest).await?);
    let kind = serde_json::to_value(req.kind).map_err(anyhow::Error::from)?;
    let new = NewPlugin {
        id: Uuid::now_v7(),
        name: req.name,
        version: req.version,
        kind: kind.as_str().unwrap_or("http").to_owned(),
        cost_micro_usd: cost,
        timeout_ms,
        max_output_bytes,
        enabled: req.enabled.unwrap_or(true),
        manifest,
    };
    let mut tx = pool.begin().await?;
    crate::store::tenants::get_tenant(&mut tx, tenant_id)
        .await
        .map_err(AdminError::from_store("tenant"))?;
    let row = store::insert_plugin(&mut tx, tenant_id, &new).await?;
    let payload = json!({
        "by": by.subject,
        "name": row.name,
        "after": {"version": row.version, "kind": row.kind, "cost_micro_usd": row.cost_micro_usd,
                  "enabled": row.enabled, "manifest": row.manifest.0},
    });
    ledger::append(
        &mut tx,
        admin_event(Some(tenant_id), None, "plugin.installed", payload),
    )
    .await?;
    tx.commit().await?;
    Ok(row.into())
}

pub async fn list_plugins(
    pool: &sqlx::PgPool,
    tenant_id: TenantId,
) -> Result<Vec<PluginResponse>, AdminError> {
    let mut conn = pool.acquire().await?;
    let rows = store::list_plugins(&mut conn, tenant_id).await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

#[tracing::instrument(skip_all, fields(%tenant_id, name, enabled))]
pub async fn set_enabled(
    pool: &sqlx::PgPool,
    by: &Principal,
    tenant_id: TenantId,
    name: &str,
    enabled: bool,
) -> Result<PluginResponse, AdminError> {
    let mut tx = pool.begin().await?;
    let before = store::lock_plugin(&mut tx, tenant_id, name)
        .await
        .map_err(AdminError::from_store("plugin"))?;
    let after = store::set_enabled(&mut tx, tenant_id, before.id, enabled).await?;
    if before.enabled != after.enabled {
        let event_type = if enabled {
            "plugin.enabled"
        } else {
            "plugin.disabled"
        };
        let payload =
            json!({"by": by.subject, "name": name, "before": before.enabled, "after": enabled});
        ledger::append(
            &mut tx,
            admin_event(Some(tenant_id), None, event_type, payload),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(after.into())
}
