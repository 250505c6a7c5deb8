//! `/admin/webhooks`: endpoints that receive alerts, signed per Standard Webhooks; their secret
//! rotation, a test delivery, and the deliveries with every attempt.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use uuid::Uuid;

use super::{AdminErrors, TenantQuery};
use crate::admin::webhooks::{
    self, CreateWebhookRequest, DeliveryQuery, UpdateWebhookRequest, WebhookCreated,
};
use crate::app_state::AppState;
use crate::http::error::AdminApiError;
use crate::http::extract::{AdminCaller, AdminJson, AdminPath, AdminQuery};
use crate::store::webhook_outbox::DeliveryRow;
use crate::store::webhooks::WebhookRow;

type Result<T> = std::result::Result<T, AdminApiError>;

/// How long `POST …/test` waits for the first attempt.
const TEST_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// Create an endpoint; its secret is in the answer (and never again, unless rotated).
#[utoipa::path(post, path = "/admin/webhooks", tag = "webhooks", params(TenantQuery),
    request_body = CreateWebhookRequest,
    responses((status = 201, body = WebhookCreated), AdminErrors), security(("bearer" = [])))]
pub async fn create_webhook(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminQuery(q): AdminQuery<TenantQuery>,
    AdminJson(req): AdminJson<CreateWebhookRequest>,
) -> Result<(StatusCode, Json<WebhookCreated>)> {
    let tenant = caller.tenant(q.tenant_id)?;
    let egress = state.gateway.tools.egress();
    let created =
        webhooks::create_webhook(&state.pool, egress, &caller.principal, tenant, req).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// List endpoints (an operator without `tenant_id`: every one).
#[utoipa::path(get, path = "/admin/webhooks", tag = "webhooks", params(TenantQuery),
    responses((status = 200, body = Vec<WebhookRow>), AdminErrors), security(("bearer" = [])))]
pub async fn list_webhooks(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminQuery(q): AdminQuery<TenantQuery>,
) -> Result<Json<Vec<WebhookRow>>> {
    let scope = caller.visible(q.tenant_id)?;
    Ok(Json(webhooks::list_webhooks(&state.pool, scope).await?))
}

#[utoipa::path(get, path = "/admin/webhooks/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook id")),
    responses((status = 200, body = WebhookRow), AdminErrors), security(("bearer" = [])))]
pub async fn get_webhook(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminPath(id): AdminPath<Uuid>,
) -> Result<Json<WebhookRow>> {
    let scope = caller.visible(None)?;
    Ok(Json(webhooks::get_webhook(&state.pool, scope, id).await?))
}

/// Change an endpoint's URL, description, event types or whether it is enabled.
#[utoipa::path(patch, path = "/admin/webhooks/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook id")),
    request_body = UpdateWebhookRequest,
    responses((status = 200, body = WebhookRow), AdminErrors), security(("bearer" = [])))]
pub async fn update_webhook(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminPath(id): AdminPath<Uuid>,
    AdminJson(req): AdminJson<UpdateWebhookRequest>,
) -> Result<Json<WebhookRow>> {
    let scope = caller.visible(None)?;
    let egress = state.gateway.tools.egress();
    let by = &caller.principal;
    Ok(Json(
        webhooks::update_webhook(&state.pool, egress, by, scope, id, req).await?,
    ))
}

/// Delete an endpoint with its deliveries.
#[utoipa::path(delete, path = "/admin/webhooks/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook id")),
    responses((status = 204, description = "Deleted"), AdminErrors), security(("bearer" = [])))]
pub async fn delete_webhook(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminPath(id): AdminPath<Uuid>,
) -> Result<StatusCode> {
    let scope = caller.visible(None)?;
    webhooks::delete_webhook(&state.pool, &caller.principal, scope, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new secret; the old one still signs (a second signature) for
/// `alerts.secret_rotation_grace_seconds`.
#[utoipa::path(post, path = "/admin/webhooks/{id}/rotate_secret", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook id")),
    responses((status = 200, body = WebhookCreated), AdminErrors), security(("bearer" = [])))]
pub async fn rotate_webhook_secret(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminPath(id): AdminPath<Uuid>,
) -> Result<Json<WebhookCreated>> {
    let scope = caller.visible(None)?;
    let grace = state.settings.alerts.secret_rotation_grace_seconds;
    Ok(Json(
        webhooks::rotate_secret(&state.pool, &caller.principal, scope, id, grace).await?,
    ))
}

/// Send a `webhook.test` delivery now; answers with it once its first attempt is recorded
/// (or, after 15 s, as it stands).
#[utoipa::path(post, path = "/admin/webhooks/{id}/test", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook id")),
    responses((status = 200, body = DeliveryRow), AdminErrors), security(("bearer" = [])))]
pub async fn test_webhook(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminPath(id): AdminPath<Uuid>,
) -> Result<Json<DeliveryRow>> {
    let scope = caller.visible(None)?;
    Ok(Json(
        webhooks::send_test(&state.pool, scope, id, TEST_WAIT).await?,
    ))
}

/// An endpoint's deliveries, newest first, each with its attempts.
#[utoipa::path(get, path = "/admin/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Webhook id"), DeliveryQuery),
    responses((status = 200, body = Vec<DeliveryRow>), AdminErrors), security(("bearer" = [])))]
pub async fn list_webhook_deliveries(
    State(state): State<AppState>,
    caller: AdminCaller,
    AdminPath(id): AdminPath<Uuid>,
    AdminQuery(q): AdminQuery<DeliveryQuery>,
) -> Result<Json<Vec<DeliveryRow>>> {
    let scope = caller.visible(None)?;
    Ok(Json(
        webhooks::list_deliveries(&state.pool, scope, id, q).await?,
    ))
}
