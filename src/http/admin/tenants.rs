//! `/admin/tenants`: operators create, list and change tenants; an admin sees its own.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::AdminErrors;
use crate::admin::tenants::{self, CreateTenantRequest, TenantResponse, UpdateTenantRequest};
use crate::app_state::AppState;
use crate::http::error::AdminApiError;
use crate::http::extract::{AdminCaller, AdminJson, AdminPath};

type Result<T> = std::result::Result<T, AdminApiError>;

/// Create a tenant (operator).
#[utoipa::path(post, path = "/admin/tenants", tag = "tenants", request_body = CreateTenantRequest,
    responses((status = 201, body = TenantResponse), AdminErrors), security(("bearer" = [])))]
pub async fn create_tenant(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminJson(req): AdminJson<CreateTenantRequest>,
) -> Result<(StatusCode, Json<TenantResponse>)> {
    let created = tenants::create_tenant(&state.pool, &caller.principal, req).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// List tenants with their books (an admin token lists its own tenant).
#[utoipa::path(get, path = "/admin/tenants", tag = "tenants",
    responses((status = 200, body = Vec<TenantResponse>), AdminErrors), security(("bearer" = [])))]
pub async fn list_tenants(
    State(state): State<AppState>,
    caller: AdminCaller,
) -> Result<Json<Vec<TenantResponse>>> {
    Ok(Json(
        tenants::list_tenants(&state.pool, &caller.principal).await?,
    ))
}

/// Get a tenant by id or name.
#[utoipa::path(get, path = "/admin/tenants/{tenant}", tag = "tenants",
    params(("tenant" = String, Path, description = "Tenant id or name")),
    responses((status = 200, body = TenantResponse), AdminErrors), security(("bearer" = [])))]
pub async fn get_tenant(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminPath(tenant): AdminPath<String>,
) -> Result<Json<TenantResponse>> {
    Ok(Json(
        tenants::get_tenant(&state.pool, &caller.principal, &tenant).await?,
    ))
}

/// Change a tenant's name, budget, limits or default policy (operator); a ledger event records
/// the settings before and after.
#[utoipa::path(patch, path = "/admin/tenants/{tenant}", tag = "tenants",
    params(("tenant" = String, Path, description = "Tenant id or name")),
    request_body = UpdateTenantRequest,
    responses((status = 200, body = TenantResponse), AdminErrors), security(("bearer" = [])))]
pub async fn update_tenant(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminPath(tenant): AdminPath<String>,
    AdminJson(req): AdminJson<UpdateTenantRequest>,
) -> Result<Json<TenantResponse>> {
    let pool = &state.pool;
    Ok(Json(
        tenants::update_tenant(pool, &caller.principal, &tenant, req).await?,
    ))
}
