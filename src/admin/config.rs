//! The routing table's versions: the active one, the history, and reloads. A reload validates
//! the document, stores it as a new version and `NOTIFY`s every replica, all in one transaction;
//! an invalid document is refused with its reason and nothing changes anywhere.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::{admin_event, page_limit, require_operator, AdminError};
use crate::auth::Principal;
use crate::config::{Capability, LiveRouting, ModelRoute, RoutingTable};
use crate::domain::{Scope, TenantId};
use crate::ledger;
use crate::store::config_versions::{self as store, ConfigVersionRow};
use crate::store::locks;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConfigVersionResponse {
    pub version: i64,
    pub content_hash: String,
    /// `file:<path>` or `api`.
    pub source: String,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<ConfigVersionRow> for ConfigVersionResponse {
    fn from(r: ConfigVersionRow) -> Self {
        ConfigVersionResponse {
            version: r.version,
            content_hash: r.content_hash,
            source: r.source,
            created_by: r.created_by,
            created_at: r.created_at,
        }
    }
}

impl ConfigVersionResponse {
    /// What a tenant admin sees of a version: where it came from (`file` or `api`), not the
    /// server's file path.
    fn for_tenant(mut self) -> Self {
        if let Some((kind, _)) = self.source.split_once(':') {
            self.source = kind.to_owned();
        }
        self
    }
}

/// The active version with its document, and the version this replica has loaded. A tenant
/// admin sees only the aliases its agents may use and their prices: no document (it names
/// providers' URLs), no file path, nothing of other tenants.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActiveConfigResponse {
    #[serde(flatten)]
    pub active: ConfigVersionResponse,
    /// The routing table (TOML) as stored; operators only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// The version the answering replica routes with.
    pub replica_version: i64,
    /// The model aliases of the replica's table (for an admin: those its agents may use).
    pub models: Vec<String>,
    /// Those aliases with their prices.
    pub prices: Vec<ModelPrice>,
}

/// A model alias with its prices, in micro-USD per million tokens.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelPrice {
    pub alias: String,
    pub input_micro_usd_per_million: i64,
    pub output_micro_usd_per_million: i64,
    pub max_output_tokens: Option<u32>,
    #[schema(value_type = Vec<String>)]
    pub capabilities: Vec<Capability>,
}

impl From<&ModelRoute> for ModelPrice {
    fn from(m: &ModelRoute) -> Self {
        ModelPrice {
            alias: m.alias.clone(),
            input_micro_usd_per_million: m.input_price.0,
            output_micro_usd_per_million: m.output_price.0,
            max_output_tokens: m.max_output_tokens,
            capabilities: m.capabilities.clone(),
        }
    }
}

/// `POST /admin/reload_config`: with `content`, that document; without, the server's models
/// file.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReloadConfigRequest {
    /// A routing table (TOML, SPEC §11).
    #[serde(default)]
    pub content: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReloadConfigResponse {
    /// The active version afterwards.
    pub version: i64,
    pub previous_version: Option<i64>,
    /// False when the document equals the active one (no new version).
    pub changed: bool,
    pub content_hash: String,
    pub models: Vec<String>,
}

/// The active version: in full for an operator; for a tenant (an admin's view, or an operator
/// asking with `tenant_id`) only what that tenant's agents may use.
pub async fn get_active(
    pool: &sqlx::PgPool,
    routing: &LiveRouting,
    tenant: Option<TenantId>,
) -> Result<ActiveConfigResponse, AdminError> {
    let mut conn = pool.acquire().await?;
    let row = store::get_active(&mut conn)
        .await?
        .ok_or(AdminError::NotFound("config version"))?;
    drop(conn);
    let routing = routing.current();
    let (content, active, models) = match tenant {
        None => {
            let models = routing
                .aliases()
                .into_iter()
                .filter_map(|alias| routing.model(alias).cloned())
                .collect();
            (Some(row.content.clone()), row.into(), models)
        }
        Some(tenant) => {
            let models = crate::gateway::models::tenant_models(pool, &routing, tenant).await?;
            let active = ConfigVersionResponse::from(row).for_tenant();
            (None, active, models)
        }
    };
    Ok(ActiveConfigResponse {
        content,
        active,
        replica_version: routing.version,
        models: models.iter().map(|m| m.alias.clone()).collect(),
        prices: models
            .iter()
            .map(|m| ModelPrice::from(m.as_ref()))
            .collect(),
    })
}

/// The history of versions; a tenant admin's without file paths.
pub async fn list_versions(
    pool: &sqlx::PgPool,
    by: &Principal,
    limit: Option<i64>,
) -> Result<Vec<ConfigVersionResponse>, AdminError> {
    let limit = page_limit(limit, 50, 1000)?;
    let mut conn = pool.acquire().await?;
    let rows = store::list_versions(&mut conn, limit).await?;
    let operator = by.scope == Scope::Operator;
    Ok(rows
        .into_iter()
        .map(ConfigVersionResponse::from)
        .map(|v| if operator { v } else { v.for_tenant() })
        .collect())
}

/// The document to load: the request's, else the server's models file.
fn document(
    path: &std::path::Path,
    req: ReloadConfigRequest,
) -> Result<(String, String), AdminError> {
    if let Some(content) = req.content {
        return Ok((content, "api".to_owned()));
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        AdminError::invalid(
            "content",
            format!(
                "no content given and the server's models file {} cannot be read: {e}",
                path.display()
            ),
        )
    })?;
    Ok((text, format!("file:{}", path.display())))
}

#[tracing::instrument(skip_all)]
pub async fn reload(
    pool: &sqlx::PgPool,
    routing: &LiveRouting,
    models_file: &std::path::Path,
    by: &Principal,
    req: ReloadConfigRequest,
) -> Result<ReloadConfigResponse, AdminError> {
    require_operator(by, "reloading the routing table")?;
    let (text, source) = document(models_file, req)?;
    let table =
        RoutingTable::parse(&text, 0).map_err(|e| AdminError::invalid("content", e.to_string()))?;
    if table.aliases().is_empty() {
        return Err(AdminError::invalid(
            "content",
            "the routing table defines no models: refusing to route nothing",
        ));
    }
    let models: Vec<String> = table.aliases().into_iter().map(str::to_owned).collect();
    let mut tx = pool.begin().await?;
    // Serialised with startup imports, so two writers never interleave versions.
    locks::lock(&mut tx, locks::CONFIG_IMPORT).await?;
    let active = store::get_active(&mut tx).await?;
    let previous = active.as_ref().map(|a| a.version);
    if let Some(a) = active.filter(|a| a.content_hash == table.content_hash) {
        return Ok(ReloadConfigResponse {
            version: a.version,
            previous_version: previous,
            changed: false,
            content_hash: a.content_hash,
            models,
        });
    }
    let version = store::insert_version(
        &mut tx,
        &text,
        &table.content_hash,
        &source,
        Some(&by.subject),
    )
    .await?;
    let payload = json!({
        "by": by.subject,
        "source": source,
        "before": previous,
        "after": version,
        "content_hash": table.content_hash,
    });
    ledger::append(&mut tx, admin_event(None, None, "config.reloaded", payload)).await?;
    tx.commit().await?;
    // This replica need not wait for its own notification.
    let content_hash = table.content_hash.clone();
    let mut table = table;
    table.version = version;
    if routing.install(table) {
        crate::metrics::set_config_version(version);
    }
    Ok(ReloadConfigResponse {
        version,
        previous_version: previous,
        changed: true,
        content_hash,
        models,
    })
}
