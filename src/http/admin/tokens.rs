//! `/admin/tokens`: issue (shown once), list, revoke, rotate.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{AdminErrors, TenantQuery};
use crate::admin::tokens::{
    self, IssueTokenRequest, IssuedTokenResponse, TokenQuery, TokenResponse,
};
use crate::app_state::AppState;
use crate::http::error::AdminApiError;
use crate::http::extract::{AdminCaller, AdminJson, AdminPath, AdminQuery};

type Result<T> = std::result::Result<T, AdminApiError>;

/// Issue a token; the response carries it, shown this once. An admin token grants its own
/// tenant's agent and admin tokens; only an operator grants operator tokens.
#[utoipa::path(post, path = "/admin/tokens", tag = "tokens", params(TenantQuery),
    request_body = IssueTokenRequest,
    responses((status = 201, body = IssuedTokenResponse), AdminErrors), security(("bearer" = [])))]
pub async fn issue_token(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminQuery(q): AdminQuery<TenantQuery>,
    AdminJson(req): AdminJson<IssueTokenRequest>,
) -> Result<(StatusCode, Json<IssuedTokenResponse>)> {
    let tenant = q.tenant_id.or(caller.tenant_header);
    let issued =
        tokens::issue_token(&state.pool, &state.signer, &caller.principal, tenant, req).await?;
    Ok((StatusCode::CREATED, Json(issued)))
}

/// List tokens (metadata only; a token itself is never stored).
#[utoipa::path(get, path = "/admin/tokens", tag = "tokens", params(TokenQuery),
    responses((status = 200, body = Vec<TokenResponse>), AdminErrors), security(("bearer" = [])))]
pub async fn list_tokens(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminQuery(mut q): AdminQuery<TokenQuery>,
) -> Result<Json<Vec<TokenResponse>>> {
    q.tenant_id = q.tenant_id.or(caller.tenant_header);
    Ok(Json(
        tokens::list_tokens(&state.pool, &caller.principal, &q).await?,
    ))
}

/// `POST /admin/tokens/{token_id}/revoke`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeTokenRequest {
    #[serde(default)]
    pub reason: Option<String>,
}

/// Revoke a token: refused on every replica within a second.
#[utoipa::path(post, path = "/admin/tokens/{token_id}/revoke", tag = "tokens",
    params(("token_id" = Uuid, Path, description = "The token's id (`jti`)"), TenantQuery),
    request_body(content = Option<RevokeTokenRequest>, description = "Optional reason"),
    responses((status = 200, body = TokenResponse), AdminErrors), security(("bearer" = [])))]
pub async fn revoke_token(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminPath(jti): AdminPath<Uuid>,
    AdminQuery(q): AdminQuery<TenantQuery>,
    AdminJson(req): AdminJson<Option<RevokeTokenRequest>>,
) -> Result<Json<TokenResponse>> {
    let tenant = q.tenant_id.or(caller.tenant_header);
    let reason = req.and_then(|r| r.reason);
    let by = &caller.principal;
    Ok(Json(
        tokens::revoke_token(&state.pool, &state.revocations, by, tenant, jti, reason).await?,
    ))
}

/// Rotate a token: revoke it and issue its successor (same scope, holder and lifetime).
#[utoipa::path(post, path = "/admin/tokens/{token_id}/rotate", tag = "tokens",
    params(("token_id" = Uuid, Path, description = "The token's id (`jti`)"), TenantQuery),
    responses((status = 200, body = IssuedTokenResponse), AdminErrors), security(("bearer" = [])))]
pub async fn rotate_token(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminPath(jti): AdminPath<Uuid>,
    AdminQuery(q): AdminQuery<TenantQuery>,
) -> Result<Json<IssuedTokenResponse>> {
    let tenant = q.tenant_id.or(caller.tenant_header);
    Ok(Json(
        tokens::rotate_token(
            &state.pool,
            &state.signer,
            &state.revocations,
            &caller.principal,
            tenant,
            jti,
        )
        .await?,
    ))
}
