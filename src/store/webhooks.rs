//! Webhook endpoints (`webhooks`), per tenant; `tenant_id` NULL is an operator's endpoint that
//! is sent every tenant's alerts and the installation's. The secret is never part of a listing:
//! [`WebhookRow`] leaves it out, [`get_secrets`] reads it for signing.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::TenantId;

/// A webhook endpoint, as the admin API shows it (without its secret).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema, sqlx::FromRow)]
#[schema(as = WebhookResponse)]
pub struct WebhookRow {
    pub id: Uuid,
    /// `null`: an operator's endpoint for every tenant and the installation.
    pub tenant_id: Option<TenantId>,
    pub url: String,
    pub description: String,
    /// Event types sent (`alert.agent_budget`, …); `null`: all.
    pub event_types: Option<Vec<String>>,
    pub enabled: bool,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

macro_rules! webhook_columns {
    () => {
        "id, tenant_id, url, description, event_types, enabled, created_by, created_at, updated_at"
    };
}

/// What an admin sets on an endpoint.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub url: String,
    pub description: String,
    pub event_types: Option<Vec<String>>,
    pub enabled: bool,
}

pub async fn insert_webhook(
    conn: &mut PgConnection,
    id: Uuid,
    tenant_id: Option<TenantId>,
    w: &WebhookSettings,
    secret: &str,
    by: &str,
) -> Result<WebhookRow, sqlx::Error> {
    sqlx::query_as(concat!(
        "INSERT INTO webhooks (id, tenant_id, url, description, event_types, enabled, secret, \
         created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING ",
        webhook_columns!()
    ))
    .bind(id)
    .bind(tenant_id)
    .bind(&w.url)
    .bind(&w.description)
    .bind(&w.event_types)
    .bind(w.enabled)
    .bind(secret)
    .bind(by)
    .fetch_one(conn)
    .await
}

/// The endpoints a caller sees: `scope: Some(t)` the tenant's own; `None` every one.
pub async fn list_webhooks(
    conn: &mut PgConnection,
    scope: Option<TenantId>,
) -> Result<Vec<WebhookRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        webhook_columns!(),
        " FROM webhooks WHERE ($1::uuid IS NULL OR tenant_id = $1) ORDER BY created_at, id"
    ))
    .bind(scope)
    .fetch_all(conn)
    .await
}

/// One endpoint, locked, if the caller may see it (`scope: None`: any).
pub async fn lock_webhook(
    conn: &mut PgConnection,
    scope: Option<TenantId>,
    id: Uuid,
) -> Result<Option<WebhookRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        webhook_columns!(),
        " FROM webhooks WHERE id = $1 AND ($2::uuid IS NULL OR tenant_id = $2) FOR UPDATE"
    ))
    .bind(id)
    .bind(scope)
    .fetch_optional(conn)
    .await
}

pub async fn update_webhook(
    conn: &mut PgConnection,
    id: Uuid,
    w: &WebhookSettings,
) -> Result<WebhookRow, sqlx::Error> {
    sqlx::query_as(concat!(
        "UPDATE webhooks SET url = $2, description = $3, event_types = $4, enabled = $5, \
         updated_at = now() WHERE id = $1 RETURNING ",
        webhook_columns!()
    ))
    .bind(id)
    .bind(&w.url)
    .bind(&w.description)
    .bind(&w.event_types)
    .bind(w.enabled)
    .fetch_one(conn)
    .await
}

/// Replaces the secret; the old one still signs until `grace_until`.
pub async fn rotate_secret(
    conn: &mut PgConnection,
    id: Uuid,
    secret: &str,
    grace_until: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE webhooks SET previous_secret = secret, previous_secret_until = $3, secret = $2, \
         updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(secret)
    .bind(grace_until)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes the endpoint with its deliveries and their attempts.
pub async fn delete_webhook(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM webhooks WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}
