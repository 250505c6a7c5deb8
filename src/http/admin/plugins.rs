//! `/admin/plugins`: a tenant's tool plugin registry (operators install; the tenant's admin lists,
//! enables and disables).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::{AdminErrors, TenantQuery};
use crate::admin::plugins::{self, InstallPluginRequest, PluginResponse};
use crate::app_state::AppState;
use crate::http::error::AdminApiError;
use crate::http::extract::{AdminCaller, AdminJson, AdminPath, AdminQuery};

type Result<T> = std::result::Result<T, AdminApiError>;

/// Install a plugin for a tenant (operator only; a tenant admin gets 403 `permission_denied`).
/// An `http` plugin's URL must pass the egress rules; a `process` plugin's executable must be
/// under `tools.plugin_dir` and is hashed now, with its arguments.
#[utoipa::path(post, path = "/admin/plugins", tag = "plugins", params(TenantQuery),
    request_body = InstallPluginRequest,
    responses((status = 201, body = PluginResponse), AdminErrors), security(("bearer" = [])))]
pub async fn install_plugin(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminQuery(q): AdminQuery<TenantQuery>,
    AdminJson(req): AdminJson<InstallPluginRequest>,
) -> Result<(StatusCode, Json<PluginResponse>)> {
    let tenant = caller.tenant(q.tenant_id)?;
    let by = &caller.principal;
    let installed =
        plugins::install_plugin(&state.pool, &state.gateway.tools, by, tenant, req).await?;
    Ok((StatusCode::CREATED, Json(installed)))
}

/// List the tenant's plugins.
#[utoipa::path(get, path = "/admin/plugins", tag = "plugins", params(TenantQuery),
    responses((status = 200, body = Vec<PluginResponse>), AdminErrors), security(("bearer" = [])))]
pub async fn list_plugins(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminQuery(q): AdminQuery<TenantQuery>,
) -> Result<Json<Vec<PluginResponse>>> {
    let tenant = caller.tenant(q.tenant_id)?;
    Ok(Json(plugins::list_plugins(&state.pool, tenant).await?))
}

/// Enable a plugin installed for the tenant (its admin or an operator).
#[utoipa::path(post, path = "/admin/plugins/{plugin}/enable", tag = "plugins",
    params(("plugin" = String, Path, description = "Plugin name"), TenantQuery),
    responses((status = 200, body = PluginResponse), AdminErrors), security(("bearer" = [])))]
pub async fn enable_plugin(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminPath(plugin): AdminPath<String>,
    AdminQuery(q): AdminQuery<TenantQuery>,
) -> Result<Json<PluginResponse>> {
    set_enabled(state, caller, plugin, q, true).await
}

/// Disable a plugin: agents can no longer run it.
#[utoipa::path(post, path = "/admin/plugins/{plugin}/disable", tag = "plugins",
    params(("plugin" = String, Path, description = "Plugin name"), TenantQuery),
    responses((status = 200, body = PluginResponse), AdminErrors), security(("bearer" = [])))]
pub async fn disable_plugin(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminPath(plugin): AdminPath<String>,
    AdminQuery(q): AdminQuery<TenantQuery>,
) -> Result<Json<PluginResponse>> {
    set_enabled(state, caller, plugin, q, false).await
}

async fn set_enabled(
    state: AppState,
    caller: AdminCaller,
    plugin: String,
    q: TenantQuery,
    enabled: bool,
) -> Result<Json<PluginResponse>> {
    let tenant = caller.tenant(q.tenant_id)?;
    let by = &caller.principal;
    Ok(Json(
        plugins::set_enabled(&state.pool, by, tenant, &plugin, enabled).await?,
    ))
}
