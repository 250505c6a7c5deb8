//! `/admin/config*` and the seed's `POST /admin/reload_config`: the routing table's versions.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use super::AdminErrors;
use crate::admin::config::{
    self, ActiveConfigResponse, ConfigVersionResponse, ReloadConfigRequest, ReloadConfigResponse,
};
use crate::app_state::AppState;
use crate::domain::TenantId;
use crate::http::error::AdminApiError;
use crate::http::extract::{AdminCaller, AdminJson, AdminQuery};

type Result<T> = std::result::Result<T, AdminApiError>;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConfigQuery {
    /// What this tenant's agents may use (an admin always gets its own tenant's view).
    pub tenant_id: Option<TenantId>,
}

/// The active routing-table version and the version this replica routes with: for an operator
/// the document and every alias with its prices; for a tenant admin only the aliases its
/// agents may use, with their prices.
#[utoipa::path(get, path = "/admin/config", tag = "config", params(ConfigQuery),
    responses((status = 200, body = ActiveConfigResponse), AdminErrors), security(("bearer" = [])))]
pub async fn get_config(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminQuery(q): AdminQuery<ConfigQuery>,
) -> Result<Json<ActiveConfigResponse>> {
    let tenant = caller.visible(q.tenant_id)?;
    Ok(Json(
        config::get_active(&state.pool, &state.routing, tenant).await?,
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VersionsQuery {
    /// At most this many, newest first (1–1000, default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// The history of routing-table versions, newest first.
#[utoipa::path(get, path = "/admin/config/versions", tag = "config", params(VersionsQuery),
    responses((status = 200, body = Vec<ConfigVersionResponse>), AdminErrors), security(("bearer" = [])))]
pub async fn list_config_versions(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminQuery(q): AdminQuery<VersionsQuery>,
) -> Result<Json<Vec<ConfigVersionResponse>>> {
    Ok(Json(
        config::list_versions(&state.pool, &caller.principal, q.limit).await?,
    ))
}

/// Reload the routing table (operator): the document in the body, or else the server's models
/// file. It is validated, stored as a new version and announced; every replica loads it within
/// a second. An invalid document is refused with its reason and nothing changes.
#[utoipa::path(post, path = "/admin/reload_config", tag = "config",
    request_body(content = Option<ReloadConfigRequest>, description = "The document; none: the server's models file"),
    responses((status = 200, body = ReloadConfigResponse), AdminErrors), security(("bearer" = [])))]
pub async fn reload_config(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminJson(req): AdminJson<Option<ReloadConfigRequest>>,
) -> Result<Json<ReloadConfigResponse>> {
    let req = req.unwrap_or_default();
    Ok(Json(
        config::reload(
            &state.pool,
            &state.routing,
            &state.settings.models_file_path(),
            &caller.principal,
            req,
        )
        .await?,
    ))
}
