//! An agent's tokens as a whole: rotate (revoke every live one, issue a successor) and revoke
//! all, each with its ledger event on the agent's chain and announced to every replica.

use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::tokens::{issue_in_tx, IssuedTokenResponse, TokenSpec};
use super::{find_agent, token_ttl, validate_text, AdminError};
use crate::auth::{Principal, RevocationSet, TokenSigner};
use crate::domain::{AgentState, Scope, TenantId};
use crate::ledger::{self, NewEvent};
use crate::store::tokens;

/// `POST /admin/agents/{agent}/rotate_token`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateAgentTokenRequest {
    /// Scope of the new token: `execution` (default) or `read-only`.
    #[serde(default)]
    pub scope: Option<Scope>,
    /// Lifetime of the new token in hours; none means it does not expire.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 87840)]
    pub ttl_hours: Option<u32>,
}

/// The new token (shown this once) and the tokens it replaced.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RotatedTokenResponse {
    #[serde(flatten)]
    pub issued: IssuedTokenResponse,
    pub revoked_tokens: Vec<Uuid>,
}

/// `POST /admin/agents/{agent}/revoke_tokens`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeTokensRequest {
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RevokedTokensResponse {
    pub revoked_tokens: Vec<Uuid>,
}

#[tracing::instrument(skip_all, fields(%tenant_id, agent = id_or_name))]
pub async fn rotate_agent_token(
    pool: &sqlx::PgPool,
    signer: &TokenSigner,
    revocations: &RevocationSet,
    by: &Principal,
    tenant_id: TenantId,
    id_or_name: &str,
    req: RotateAgentTokenRequest,
) -> Result<RotatedTokenResponse, AdminError> {
    let scope = req.scope.unwrap_or(Scope::Execution);
    if !scope.is_agent_scope() {
        return Err(AdminError::invalid(
            "scope",
            "must be `execution` or `read-only`",
        ));
    }
    let ttl = token_ttl("ttl_hours", req.ttl_hours)?;
    let mut tx = pool.begin().await?;
    let agent = find_agent(&mut tx, tenant_id, id_or_name, true).await?;
    if agent.state == AgentState::Decommissioned {
        return Err(AdminError::Conflict(
            "the agent is decommissioned: it cannot get new tokens".into(),
        ));
    }
    let revoked = tokens::revoke_agent_tokens(&mut tx, agent.id, "rotated").await?;
    let spec = TokenSpec {
        tenant_id: Some(tenant_id),
        agent: Some((agent.id, agent.name.clone())),
        scope,
        subject: agent.name.clone(),
        ttl,
        description: Some("rotated".into()),
    };
    let issued = issue_in_tx(&mut tx, signer, by, spec).await?;
    let payload = json!({"by": by.subject, "before": revoked, "after": issued.token_id});
    ledger::append(
        &mut tx,
        NewEvent::for_agent(tenant_id, agent.id, "token.rotated", None, payload),
    )
    .await?;
    tx.commit().await?;
    for jti in &revoked {
        revocations.insert(*jti);
    }
    Ok(RotatedTokenResponse {
        issued,
        revoked_tokens: revoked,
    })
}

#[tracing::instrument(skip_all, fields(%tenant_id, agent = id_or_name))]
pub async fn revoke_agent_tokens(
    pool: &sqlx::PgPool,
    revocations: &RevocationSet,
    by: &Principal,
    tenant_id: TenantId,
    id_or_name: &str,
    reason: Option<String>,
) -> Result<RevokedTokensResponse, AdminError> {
    let reason = reason.unwrap_or_else(|| format!("revoked by {}", by.subject));
    validate_text("reason", &reason)?;
    let mut tx = pool.begin().await?;
    let agent = find_agent(&mut tx, tenant_id, id_or_name, true).await?;
    let revoked = tokens::revoke_agent_tokens(&mut tx, agent.id, &reason).await?;
    if !revoked.is_empty() {
        let payload = json!({"by": by.subject, "jtis": revoked, "reason": reason});
        ledger::append(
            &mut tx,
            NewEvent::for_agent(tenant_id, agent.id, "token.revoked", None, payload),
        )
        .await?;
    }
    tx.commit().await?;
    for jti in &revoked {
        revocations.insert(*jti);
    }
    Ok(RevokedTokensResponse {
        revoked_tokens: revoked,
    })
}
