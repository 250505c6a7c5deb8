//! Authentication: JWT issue and verification, the principal a request acts as, and the
//! in-memory revocation set every replica keeps current.

mod jwt;
mod revocation;

pub use jwt::{AuthError, Claims, IssuedToken, TokenSigner};
pub use revocation::RevocationSet;

use crate::domain::{AgentId, Scope, TenantId};

/// Who a verified request acts as.
#[derive(Debug, Clone)]
pub struct Principal {
    pub jti: uuid::Uuid,
    pub subject: String,
    pub scope: Scope,
    /// `None` only for operator tokens, which act on every tenant.
    pub tenant_id: Option<TenantId>,
    /// Set for agent scopes (`execution`, `read-only`).
    pub agent_id: Option<AgentId>,
}
