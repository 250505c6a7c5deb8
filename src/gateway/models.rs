//! `GET /v1/models`: the aliases an agent may use, in OpenAI's list shape; and the aliases a
//! tenant's agents may use, for its admin's view of the routing table.

use serde::Serialize;

use super::policy::{EffectivePolicy, Policy};
use super::GatewayError;
use crate::config::RoutingTable;
use crate::domain::{AgentId, TenantId};
use crate::store::agents;

/// One model in OpenAI's shape.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ModelObject {
    pub id: String,
    pub object: &'static str,
    pub created: i64,
    pub owned_by: String,
}

/// The aliases of the active routing table the agent's effective policy allows, sorted.
pub async fn visible_models(
    pool: &sqlx::PgPool,
    routing: &RoutingTable,
    tenant_id: TenantId,
    agent_id: AgentId,
) -> Result<Vec<ModelObject>, GatewayError> {
    let mut conn = pool.acquire().await?;
    let row = agents::policies_of_agent(&mut conn, tenant_id, agent_id).await?;
    drop(conn);
    let (agent, tenant) = row.ok_or(GatewayError::Unauthorized(crate::auth::AuthError::Revoked))?;
    let effective = match Policy::effective(&agent.0, &tenant.0) {
        Ok(effective) => effective,
        Err(e) => {
            // Fails closed: an unreadable stored policy allows no model.
            tracing::error!(agent = %agent_id, error = %e, "stored policy does not parse: no model listed");
            return Ok(Vec::new());
        }
    };
    Ok(routing
        .aliases()
        .into_iter()
        .filter(|alias| allows(&effective, alias))
        .filter_map(|alias| routing.model(alias))
        .map(|m| ModelObject {
            id: m.alias.clone(),
            object: "model",
            created: 0,
            owned_by: m.provider.name.clone(),
        })
        .collect())
}

fn allows(effective: &EffectivePolicy, alias: &str) -> bool {
    effective
        .allowed_models
        .as_ref()
        .is_none_or(|allowed| allowed.iter().any(|a| a == alias))
}

/// The aliases of the active routing table that at least one of the tenant's agents (not
/// decommissioned) may use, sorted: what a tenant admin is shown of the routing table.
pub async fn tenant_models(
    pool: &sqlx::PgPool,
    routing: &RoutingTable,
    tenant_id: TenantId,
) -> Result<Vec<std::sync::Arc<crate::config::ModelRoute>>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let rows = agents::policies_of_tenant(&mut conn, tenant_id).await?;
    drop(conn);
    let policies: Vec<EffectivePolicy> = rows
        .iter()
        // Fails closed: an agent whose stored policy does not parse allows no model.
        .filter_map(|(agent, tenant)| {
            Policy::effective(&agent.0, &tenant.0)
                .map_err(
                    |e| tracing::error!(%tenant_id, error = %e, "a stored policy does not parse"),
                )
                .ok()
        })
        .collect();
    Ok(routing
        .aliases()
        .into_iter()
        .filter(|alias| policies.iter().any(|p| allows(p, alias)))
        .filter_map(|alias| routing.model(alias).cloned())
        .collect())
}
