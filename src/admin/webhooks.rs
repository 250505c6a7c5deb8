//! Webhook endpoints (issue 19): created, listed, changed, deleted, their secret rotated, a test
//! sent, their deliveries and attempts listed. A URL must pass the egress rules of `http` tool
//! plugins (SPEC §8, `net_guard`): checked here, and again on the address each delivery connects
//! to. An admin manages its tenant's endpoints; an operator any, and may create endpoints that
//! receive every tenant's alerts (`all_tenants`).

use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{admin_event, nullable, page_limit, validate_text, AdminError};
use crate::alerts::{signing, KINDS};
use crate::auth::Principal;
use crate::domain::{Scope, TenantId};
use crate::ledger;
use crate::net_guard::EgressPolicy;
use crate::store::webhook_outbox::{self as outbox, DeliveryRow};
use crate::store::webhooks::{self as store, WebhookRow, WebhookSettings};

/// `POST /admin/webhooks`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookRequest {
    /// Where deliveries are POSTed (`http` or `https`; internal addresses only when listed in
    /// `tools.allowed_http_hosts`, cloud metadata never).
    pub url: String,
    pub description: Option<String>,
    /// Event types to send (`alert.agent_budget`, …); absent: all.
    pub event_types: Option<Vec<String>>,
    pub enabled: Option<bool>,
    /// Every tenant's alerts and the installation's (operator tokens only).
    #[serde(default)]
    pub all_tenants: bool,
}

/// A new endpoint and its secret (shown only here and when rotated).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebhookCreated {
    pub webhook: WebhookRow,
    /// `whsec_…`: verifies `webhook-signature` (Standard Webhooks).
    pub secret: String,
}

/// `PATCH /admin/webhooks/{id}`: absent fields are kept.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhookRequest {
    pub url: Option<String>,
    pub description: Option<String>,
    /// `null`: all event types.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Vec<String>>)]
    pub event_types: Option<Option<Vec<String>>>,
    pub enabled: Option<bool>,
}

/// Paging of `GET /admin/webhooks/{id}/deliveries`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// Deliveries older than this `seq` (the last one of the previous page).
    pub before: Option<i64>,
    /// At most this many (1–500, default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

async fn checked_url(egress: &EgressPolicy, url: &str) -> Result<String, AdminError> {
    if url.len() > 2048 {
        return Err(AdminError::invalid(
            "url",
            "must be at most 2048 characters",
        ));
    }
    egress
        .check_url(url)
        .await
        .map(|u| u.to_string())
        .map_err(|e| AdminError::invalid("url", e.to_string()))
}

fn checked_types(types: Option<Vec<String>>) -> Result<Option<Vec<String>>, AdminError> {
    let Some(mut types) = types else {
        return Ok(None);
    };
    let known = |t: &str| t.strip_prefix("alert.").is_some_and(|k| KINDS.contains(&k));
    if types.is_empty() || types.iter().any(|t| !known(t)) {
        return Err(AdminError::invalid(
            "event_types",
            format!("must list some of: alert.{}", KINDS.join(", alert.")),
        ));
    }
    types.sort();
    types.dedup();
    Ok(Some(types))
}

fn description(d: Option<String>) -> Result<String, AdminError> {
    let d = d.unwrap_or_default();
    validate_text("description", &d)?;
    Ok(d)
}

fn shown(w: &WebhookRow) -> serde_json::Value {
    json!({"url": w.url, "description": w.description, "event_types": w.event_types,
           "enabled": w.enabled})
}

#[tracing::instrument(skip_all, fields(tenant = ?tenant))]
pub async fn create_webhook(
    pool: &sqlx::PgPool,
    egress: &EgressPolicy,
    by: &Principal,
    tenant: TenantId,
    req: CreateWebhookRequest,
) -> Result<WebhookCreated, AdminError> {
    let owner = match (req.all_tenants, by.scope) {
        (true, Scope::Operator) => None,
        (true, _) => {
            return Err(AdminError::PermissionDenied(
                "a webhook for every tenant needs an operator token".into(),
            ))
        }
        (false, _) => Some(tenant),
    };
    let settings = WebhookSettings {
        url: checked_url(egress, &req.url).await?,
        description: description(req.description)?,
        event_types: checked_types(req.event_types)?,
        enabled: req.enabled.unwrap_or(true),
    };
    let secret = signing::new_secret();
    let mut tx = pool.begin().await?;
    if let Some(t) = owner {
        crate::store::tenants::get_tenant(&mut tx, t)
            .await
            .map_err(AdminError::from_store("tenant"))?;
    }
    let row = store::insert_webhook(
        &mut tx,
        Uuid::now_v7(),
        owner,
        &settings,
        &secret,
        &by.subject,
    )
    .await?;
    let payload = json!({"by": by.subject, "webhook_id": row.id, "after": shown(&row)});
    ledger::append(
        &mut tx,
        admin_event(owner, None, "webhook.created", payload),
    )
    .await?;
    tx.commit().await?;
    Ok(WebhookCreated {
        webhook: row,
        secret,
    })
}

pub async fn list_webhooks(
    pool: &sqlx::PgPool,
    scope: Option<TenantId>,
) -> Result<Vec<WebhookRow>, AdminError> {
    let mut conn = pool.acquire().await?;
    Ok(store::list_webhooks(&mut conn, scope).await?)
}

async fn locked(
    conn: &mut sqlx::PgConnection,
    scope: Option<TenantId>,
    id: Uuid,
) -> Result<WebhookRow, AdminError> {
    store::lock_webhook(conn, scope, id)
        .await?
        .ok_or(AdminError::NotFound("webhook"))
}

pub async fn get_webhook(
    pool: &sqlx::PgPool,
    scope: Option<TenantId>,
    id: Uuid,
) -> Result<WebhookRow, AdminError> {
    let mut tx = pool.begin().await?;
    locked(&mut tx, scope, id).await
}

#[tracing::instrument(skip_all, fields(%id))]
pub async fn update_webhook(
    pool: &sqlx::PgPool,
    egress: &EgressPolicy,
    by: &Principal,
    scope: Option<TenantId>,
    id: Uuid,
    req: UpdateWebhookRequest,
) -> Result<WebhookRow, AdminError> {
    let url = match &req.url {
        Some(u) => Some(checked_url(egress, u).await?),
        None => None,
    };
    let mut tx = pool.begin().await?;
    let before = locked(&mut tx, scope, id).await?;
    let settings = WebhookSettings {
        url: url.unwrap_or_else(|| before.url.clone()),
        description: match req.description {
            Some(d) => description(Some(d))?,
            None => before.description.clone(),
        },
        event_types: match req.event_types {
            Some(types) => checked_types(types)?,
            None => before.event_types.clone(),
        },
        enabled: req.enabled.unwrap_or(before.enabled),
    };
    let after = store::update_webhook(&mut tx, id, &settings).await?;
    let payload = json!({"by": by.subject, "webhook_id": id, "before": shown(&before),
                         "after": shown(&after)});
    ledger::append(
        &mut tx,
        admin_event(after.tenant_id, None, "webhook.updated", payload),
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

#[tracing::instrument(skip_all, fields(%id))]
pub async fn delete_webhook(
    pool: &sqlx::PgPool,
    by: &Principal,
    scope: Option<TenantId>,
    id: Uuid,
) -> Result<(), AdminError> {
    let mut tx = pool.begin().await?;
    let before = locked(&mut tx, scope, id).await?;
    store::delete_webhook(&mut tx, id).await?;
    let payload = json!({"by": by.subject, "webhook_id": id, "before": shown(&before)});
    ledger::append(
        &mut tx,
        admin_event(before.tenant_id, None, "webhook.deleted", payload),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A new secret; the old one keeps signing (a second signature) for `grace_seconds`.
#[tracing::instrument(skip_all, fields(%id))]
pub async fn rotate_secret(
    pool: &sqlx::PgPool,
    by: &Principal,
    scope: Option<TenantId>,
    id: Uuid,
    grace_seconds: u64,
) -> Result<WebhookCreated, AdminError> {
    let secret = signing::new_secret();
    let grace = chrono::Duration::seconds(i64::try_from(grace_seconds).unwrap_or(i64::MAX / 1000));
    let mut tx = pool.begin().await?;
    let row = locked(&mut tx, scope, id).await?;
    store::rotate_secret(&mut tx, id, &secret, chrono::Utc::now() + grace).await?;
    let payload =
        json!({"by": by.subject, "webhook_id": id, "previous_secret_valid_seconds": grace_seconds});
    ledger::append(
        &mut tx,
        admin_event(row.tenant_id, None, "webhook.secret_rotated", payload),
    )
    .await?;
    tx.commit().await?;
    Ok(WebhookCreated {
        webhook: row,
        secret,
    })
}

/// Queues a `webhook.test` delivery and waits up to `wait` for its first attempt (any
/// replica's worker may make it); the delivery as it then stands.
pub async fn send_test(
    pool: &sqlx::PgPool,
    scope: Option<TenantId>,
    id: Uuid,
    wait: std::time::Duration,
) -> Result<DeliveryRow, AdminError> {
    let mut tx = pool.begin().await?;
    let row = locked(&mut tx, scope, id).await?;
    let now = chrono::Utc::now();
    let body = json!({
        "type": "webhook.test",
        "timestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "data": {"webhook_id": id, "tenant_id": row.tenant_id,
                 "message": "a test delivery from AEX"},
    });
    let delivery = outbox::insert_test(&mut tx, id, row.tenant_id, &body.to_string()).await?;
    tx.commit().await?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let mut tx = pool.begin().await?;
        outbox::one_snapshot(&mut tx).await?;
        let mut found = outbox::list_deliveries(&mut tx, id, Some(delivery), None, 1).await?;
        tx.commit().await?;
        let done = found.first().is_some_and(|d| !d.attempt_log.is_empty());
        if done || tokio::time::Instant::now() >= deadline {
            return found.pop().ok_or(AdminError::NotFound("delivery"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

pub async fn list_deliveries(
    pool: &sqlx::PgPool,
    scope: Option<TenantId>,
    id: Uuid,
    q: DeliveryQuery,
) -> Result<Vec<DeliveryRow>, AdminError> {
    let limit = page_limit(q.limit, 50, 500)?;
    let mut tx = pool.begin().await?;
    locked(&mut tx, scope, id).await?;
    Ok(outbox::list_deliveries(&mut tx, id, None, q.before, limit).await?)
}
