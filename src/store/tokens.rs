//! Issued tokens: ids and metadata only, never the token itself.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, QueryBuilder};
use uuid::Uuid;

use super::StoreError;
use crate::domain::{AgentId, TenantId};

/// The channel on which revocations are announced to every replica.
pub const REVOCATION_CHANNEL: &str = "aex_revocations";

/// A token's metadata (never the token itself), as the admin API shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema, sqlx::FromRow)]
#[schema(as = TokenResponse)]
pub struct TokenRow {
    /// The token's id (its `jti` claim).
    #[serde(rename = "id")]
    pub jti: Uuid,
    pub tenant_id: Option<TenantId>,
    pub agent_id: Option<AgentId>,
    pub subject: String,
    pub scope: String,
    pub kid: String,
    pub description: Option<String>,
    pub issued_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_reason: Option<String>,
}

/// The columns of [`TokenRow`].
macro_rules! token_columns {
    () => {
        "jti, tenant_id, agent_id, subject, scope, kid, description, issued_at, expires_at, \
         revoked_at, revoked_reason"
    };
}

pub async fn insert_token(conn: &mut PgConnection, token: &TokenRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO api_tokens (jti, tenant_id, agent_id, subject, scope, kid, description, \
         issued_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(token.jti)
    .bind(token.tenant_id)
    .bind(token.agent_id)
    .bind(&token.subject)
    .bind(&token.scope)
    .bind(&token.kid)
    .bind(&token.description)
    .bind(token.issued_at)
    .bind(token.expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Revokes one live token (scoped to its tenant unless `tenant_id` is `None`, the operator's view)
/// and announces it; the announcement is delivered when the caller's transaction commits. `None`
/// when it is not live: missing, or revoked already — by a concurrent change too, which the row
/// lock of this UPDATE serialises, so one revocation is made (and recorded) once.
pub async fn revoke_token(
    conn: &mut PgConnection,
    tenant_id: Option<TenantId>,
    jti: Uuid,
    reason: &str,
) -> Result<Option<TokenRow>, StoreError> {
    let row: Option<TokenRow> = sqlx::query_as(concat!(
        "UPDATE api_tokens SET revoked_at = now(), revoked_reason = $3 \
         WHERE jti = $1 AND ($2::uuid IS NULL OR tenant_id = $2) AND revoked_at IS NULL \
         RETURNING ",
        token_columns!()
    ))
    .bind(jti)
    .bind(tenant_id)
    .bind(reason)
    .fetch_optional(&mut *conn)
    .await?;
    if row.is_some() {
        notify_revoked(conn, &[jti]).await?;
    }
    Ok(row)
}

/// Revokes every live token of an agent; returns their ids.
pub async fn revoke_agent_tokens(
    conn: &mut PgConnection,
    agent_id: AgentId,
    reason: &str,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let jtis: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE api_tokens SET revoked_at = now(), revoked_reason = $2 \
         WHERE agent_id = $1 AND revoked_at IS NULL RETURNING jti",
    )
    .bind(agent_id)
    .bind(reason)
    .fetch_all(&mut *conn)
    .await?;
    notify_revoked(conn, &jtis).await?;
    Ok(jtis)
}

async fn notify_revoked(conn: &mut PgConnection, jtis: &[Uuid]) -> Result<(), sqlx::Error> {
    for jti in jtis {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(REVOCATION_CHANNEL)
            .bind(jti.to_string())
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Every revoked token id (that has not expired long ago), for the in-memory revocation set.
pub async fn list_revoked(conn: &mut PgConnection) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT jti FROM api_tokens WHERE revoked_at IS NOT NULL \
         AND (expires_at IS NULL OR expires_at > now() - interval '1 day')",
    )
    .fetch_all(conn)
    .await
}

/// One token's metadata, within a tenant unless `tenant_id` is `None` (the operator's view).
pub async fn get_token(
    conn: &mut PgConnection,
    tenant_id: Option<TenantId>,
    jti: Uuid,
) -> Result<TokenRow, StoreError> {
    sqlx::query_as(concat!(
        "SELECT ",
        token_columns!(),
        " FROM api_tokens WHERE jti = $1 AND ($2::uuid IS NULL OR tenant_id = $2)"
    ))
    .bind(jti)
    .bind(tenant_id)
    .fetch_optional(conn)
    .await?
    .ok_or(StoreError::NotFound)
}

/// Which tokens to list.
#[derive(Debug, Clone, Default)]
pub struct TokenFilter<'a> {
    /// `None`: every tenant's, and operator tokens (the operator's view).
    pub tenant_id: Option<TenantId>,
    pub agent_id: Option<AgentId>,
    pub scope: Option<&'a str>,
    pub include_revoked: bool,
}

/// Tokens, oldest first.
pub async fn list_tokens(
    conn: &mut PgConnection,
    f: &TokenFilter<'_>,
    limit: i64,
) -> Result<Vec<TokenRow>, sqlx::Error> {
    let mut q = QueryBuilder::new(concat!(
        "SELECT ",
        token_columns!(),
        " FROM api_tokens WHERE true"
    ));
    if let Some(t) = f.tenant_id {
        q.push(" AND tenant_id = ").push_bind(t);
    }
    if let Some(a) = f.agent_id {
        q.push(" AND agent_id = ").push_bind(a);
    }
    if let Some(s) = f.scope {
        q.push(" AND scope = ").push_bind(s.to_owned());
    }
    if !f.include_revoked {
        q.push(" AND revoked_at IS NULL");
    }
    q.push(" ORDER BY issued_at, jti LIMIT ").push_bind(limit);
    q.build_query_as().fetch_all(conn).await
}
