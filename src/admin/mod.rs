//! Administrative use cases (agents, tokens, audits, replay), called by the admin API handlers
//! and, for read-only checks, by the CLI directly against the database.

pub mod agents;
pub mod audit;
pub mod metrics;
pub mod replay;

use crate::auth::Principal;
use crate::domain::{Scope, TenantId, DEFAULT_TENANT};

/// Errors of admin use cases, rendered in the admin error shape by the HTTP layer.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("the database is unavailable")]
    Unavailable,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl AdminError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        AdminError::Invalid {
            field,
            message: message.into(),
        }
    }
}

impl From<sqlx::Error> for AdminError {
    fn from(e: sqlx::Error) -> Self {
        if crate::gateway::error::is_unavailable(&e) {
            AdminError::Unavailable
        } else {
            AdminError::Internal(e.into())
        }
    }
}

impl From<crate::store::StoreError> for AdminError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match e {
            StoreError::Conflict(what) => AdminError::Conflict(format!("{what} already exists")),
            StoreError::NotFound => AdminError::NotFound("object"),
            StoreError::Db(db) => db.into(),
        }
    }
}

/// The tenant an admin request acts on: an admin token's own tenant, or for an operator the
/// tenant it names (default: `default`). An admin naming another tenant gets a 404.
pub fn acting_tenant(
    principal: &Principal,
    requested: Option<TenantId>,
) -> Result<TenantId, AdminError> {
    match (principal.scope, principal.tenant_id, requested) {
        (Scope::Operator, _, Some(t)) => Ok(t),
        (Scope::Operator, _, None) => Ok(DEFAULT_TENANT),
        (Scope::Admin, Some(own), Some(t)) if t != own => Err(AdminError::NotFound("tenant")),
        (Scope::Admin, Some(own), _) => Ok(own),
        _ => Err(AdminError::Forbidden(
            "an admin or operator token is required".into(),
        )),
    }
}
