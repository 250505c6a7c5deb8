//! Tokens: issue (shown once), list, revoke and rotate. A revocation is announced to every
//! replica by `NOTIFY` when its transaction commits, and applied to this replica's set at once.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    acting_tenant, admin_event, find_agent, page_limit, require_operator, token_ttl, validate_name,
    validate_text, visible_tenant, AdminError,
};
use crate::auth::{Principal, RevocationSet, TokenSigner};
use crate::domain::{AgentId, AgentState, Scope, TenantId};
use crate::ledger;
pub use crate::store::tokens::TokenRow as TokenResponse;
use crate::store::tokens::{self as store, TokenFilter, TokenRow};

/// `POST /admin/tokens`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueTokenRequest {
    /// `execution` or `read-only` (for an agent), `admin` (of the tenant), `operator`.
    pub scope: Scope,
    /// The agent (id or name) an `execution` or `read-only` token is for.
    #[serde(default)]
    pub agent: Option<String>,
    /// Who an `admin` or `operator` token names (default: the scope).
    #[serde(default)]
    pub subject: Option<String>,
    /// Lifetime in hours; none means it does not expire.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 87840)]
    pub ttl_hours: Option<u32>,
    #[serde(default)]
    pub description: Option<String>,
}

/// A freshly issued token, shown this once.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IssuedTokenResponse {
    pub token: String,
    pub token_id: Uuid,
    pub scope: Scope,
    pub tenant_id: Option<TenantId>,
    pub agent_id: Option<AgentId>,
    pub subject: String,
    pub expires_at: Option<DateTime<Utc>>,
}

/// What to sign and record.
#[derive(Debug, Clone)]
pub(crate) struct TokenSpec {
    pub tenant_id: Option<TenantId>,
    pub agent: Option<(AgentId, String)>,
    pub scope: Scope,
    pub subject: String,
    pub ttl: Option<chrono::Duration>,
    pub description: Option<String>,
}

/// Signs a token and records its id and metadata with a `token.issued` event.
pub(crate) async fn issue_in_tx(
    conn: &mut PgConnection,
    signer: &TokenSigner,
    by: &Principal,
    spec: TokenSpec,
) -> Result<IssuedTokenResponse, AdminError> {
    let agent_id = spec.agent.as_ref().map(|(id, _)| *id);
    let issued = signer
        .issue(
            &spec.subject,
            spec.scope,
            spec.tenant_id,
            agent_id,
            spec.ttl,
        )
        .map_err(|e| AdminError::Internal(e.into()))?;
    let row = TokenRow {
        jti: issued.claims.jti,
        tenant_id: spec.tenant_id,
        agent_id,
        subject: spec.subject.clone(),
        scope: spec.scope.as_str().to_owned(),
        kid: issued.kid.clone(),
        description: spec.description,
        issued_at: Utc::now(),
        expires_at: issued.expires_at(),
        revoked_at: None,
        revoked_reason: None,
    };
    store::insert_token(conn, &row).await?;
    let payload = json!({
        "by": by.subject,
        "jti": row.jti,
        "scope": row.scope,
        "subject": row.subject,
        "expires_at": issued.claims.exp,
    });
    ledger::append(
        conn,
        admin_event(spec.tenant_id, agent_id, "token.issued", payload),
    )
    .await?;
    Ok(IssuedTokenResponse {
        expires_at: issued.expires_at(),
        token_id: row.jti,
        token: issued.token,
        scope: spec.scope,
        tenant_id: spec.tenant_id,
        agent_id,
        subject: row.subject,
    })
}

/// Issues a token of any scope the caller may grant: an admin its own tenant's agent and admin
/// tokens, an operator anything.
#[tracing::instrument(skip_all, fields(scope = ?req.scope))]
pub async fn issue_token(
    pool: &sqlx::PgPool,
    signer: &TokenSigner,
    by: &Principal,
    tenant: Option<TenantId>,
    req: IssueTokenRequest,
) -> Result<IssuedTokenResponse, AdminError> {
    let ttl = token_ttl("ttl_hours", req.ttl_hours)?;
    if let Some(d) = &req.description {
        validate_text("description", d)?;
    }
    if let Some(s) = &req.subject {
        validate_name("subject", s)?;
    }
    let tenant_id = acting_tenant(by, tenant)?;
    let mut tx = pool.begin().await?;
    let (tenant_id, agent, subject) = match (req.scope, &req.agent) {
        (Scope::Execution | Scope::ReadOnly, None) => {
            return Err(AdminError::invalid(
                "agent",
                "an execution or read-only token is for an agent",
            ))
        }
        (Scope::Execution | Scope::ReadOnly, Some(name)) => {
            let a = find_agent(&mut tx, tenant_id, name, true).await?;
            if a.state == AgentState::Decommissioned {
                return Err(AdminError::Conflict(
                    "the agent is decommissioned: it cannot get new tokens".into(),
                ));
            }
            (Some(tenant_id), Some((a.id, a.name.clone())), a.name)
        }
        (Scope::Admin | Scope::Operator, Some(_)) => {
            return Err(AdminError::invalid(
                "agent",
                "admin and operator tokens belong to no agent",
            ))
        }
        (Scope::Admin, None) => {
            crate::store::tenants::get_tenant(&mut tx, tenant_id)
                .await
                .map_err(AdminError::from_store("tenant"))?;
            let subject = req.subject.clone().unwrap_or_else(|| "admin".into());
            (Some(tenant_id), None, subject)
        }
        (Scope::Operator, None) => {
            require_operator(by, "issuing an operator token")?;
            let subject = req.subject.clone().unwrap_or_else(|| "operator".into());
            (None, None, subject)
        }
    };
    let spec = TokenSpec {
        tenant_id,
        agent,
        scope: req.scope,
        subject,
        ttl,
        description: req.description,
    };
    let issued = issue_in_tx(&mut tx, signer, by, spec).await?;
    tx.commit().await?;
    Ok(issued)
}

/// Filters of `GET /admin/tokens`.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokenQuery {
    /// An operator without it sees every tenant's tokens and the operator tokens.
    pub tenant_id: Option<TenantId>,
    /// Only this agent's tokens (id or name).
    pub agent: Option<String>,
    pub scope: Option<Scope>,
    /// Include revoked tokens (default false).
    #[serde(default)]
    pub include_revoked: bool,
    /// At most this many (1–1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

pub async fn list_tokens(
    pool: &sqlx::PgPool,
    by: &Principal,
    q: &TokenQuery,
) -> Result<Vec<TokenResponse>, AdminError> {
    let limit = page_limit(q.limit, 100, 1000)?;
    let mut conn = pool.acquire().await?;
    let mut filter = TokenFilter {
        tenant_id: visible_tenant(by, q.tenant_id)?,
        agent_id: None,
        scope: q.scope.map(Scope::as_str),
        include_revoked: q.include_revoked,
    };
    if let Some(agent) = &q.agent {
        let tenant = acting_tenant(by, q.tenant_id)?;
        filter.agent_id = Some(find_agent(&mut conn, tenant, agent, false).await?.id);
        filter.tenant_id = Some(tenant);
    }
    Ok(store::list_tokens(&mut conn, &filter, limit).await?)
}

/// Revokes one token the caller can see; revoking a revoked token changes nothing.
#[tracing::instrument(skip_all, fields(%jti))]
pub async fn revoke_token(
    pool: &sqlx::PgPool,
    revocations: &RevocationSet,
    by: &Principal,
    tenant: Option<TenantId>,
    jti: Uuid,
    reason: Option<String>,
) -> Result<TokenResponse, AdminError> {
    let reason = reason.unwrap_or_else(|| format!("revoked by {}", by.subject));
    validate_text("reason", &reason)?;
    let scope = visible_tenant(by, tenant)?;
    let mut tx = pool.begin().await?;
    let before = store::get_token(&mut tx, scope, jti)
        .await
        .map_err(AdminError::from_store("token"))?;
    if before.revoked_at.is_some() {
        return Ok(before);
    }
    let revoked = store::revoke_token(&mut tx, scope, jti, &reason)
        .await
        .map_err(AdminError::from_store("token"))?;
    let Some(row) = revoked else {
        // Revoked meanwhile by a concurrent request, which recorded it.
        drop(tx);
        let mut conn = pool.acquire().await?;
        return store::get_token(&mut conn, scope, jti)
            .await
            .map_err(AdminError::from_store("token"));
    };
    let payload = json!({"by": by.subject, "jti": jti, "reason": reason});
    ledger::append(
        &mut tx,
        admin_event(row.tenant_id, row.agent_id, "token.revoked", payload),
    )
    .await?;
    tx.commit().await?;
    revocations.insert(jti);
    Ok(row)
}

fn not_live() -> AdminError {
    AdminError::Conflict("only a live token can be rotated; issue a new one instead".into())
}

/// Revokes a live token and issues its successor: same scope, holder and lifetime.
#[tracing::instrument(skip_all, fields(%jti))]
pub async fn rotate_token(
    pool: &sqlx::PgPool,
    signer: &TokenSigner,
    revocations: &RevocationSet,
    by: &Principal,
    tenant: Option<TenantId>,
    jti: Uuid,
) -> Result<IssuedTokenResponse, AdminError> {
    let scope = visible_tenant(by, tenant)?;
    let mut tx = pool.begin().await?;
    let old = store::get_token(&mut tx, scope, jti)
        .await
        .map_err(AdminError::from_store("token"))?;
    if old.revoked_at.is_some() || old.expires_at.is_some_and(|e| e <= Utc::now()) {
        return Err(not_live());
    }
    let token_scope: Scope = old.scope.parse().map_err(anyhow::Error::msg)?;
    if token_scope == Scope::Operator {
        require_operator(by, "rotating an operator token")?;
    }
    let agent = match (old.tenant_id, old.agent_id) {
        (Some(tenant_id), Some(id)) => {
            let a = crate::store::agents::get_agent(
                &mut tx,
                tenant_id,
                id,
                crate::store::agents::Lock::ForUpdate,
            )
            .await
            .map_err(AdminError::from_store("agent"))?;
            Some((a.id, a.name))
        }
        _ => None,
    };
    let revoked = store::revoke_token(&mut tx, scope, jti, "rotated")
        .await
        .map_err(AdminError::from_store("token"))?;
    if revoked.is_none() {
        // Revoked or rotated meanwhile by a concurrent request: it had one successor already.
        return Err(not_live());
    }
    let spec = TokenSpec {
        tenant_id: old.tenant_id,
        agent,
        scope: token_scope,
        subject: old.subject.clone(),
        ttl: old.expires_at.map(|e| e - old.issued_at),
        description: old.description.clone(),
    };
    let issued = issue_in_tx(&mut tx, signer, by, spec).await?;
    let payload = json!({"by": by.subject, "before": jti, "after": issued.token_id});
    ledger::append(
        &mut tx,
        admin_event(old.tenant_id, old.agent_id, "token.rotated", payload),
    )
    .await?;
    tx.commit().await?;
    revocations.insert(jti);
    Ok(issued)
}
