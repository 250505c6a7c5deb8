//! Handlers of the admin API, one file per family. Thin: extract (caller, path, query, body),
//! call one admin use case, render JSON. Every error is in the admin shape.

pub mod agents;
pub mod alerts;
pub mod config;
pub mod executions;
pub mod ledger;
pub mod metrics;
pub mod plugins;
pub mod tenants;
pub mod tokens;
pub mod usage;
pub mod webhooks;

use serde::Deserialize;
use utoipa::{IntoParams, IntoResponses};

use super::error::AdminErrorBody;
use crate::domain::TenantId;

/// The errors every admin route may answer, all in the admin shape.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum AdminErrors {
    /// The request is malformed or a value is invalid; `field` names it.
    #[response(status = 400)]
    Invalid(AdminErrorBody),
    /// The bearer token is missing, malformed, expired or revoked.
    #[response(status = 401)]
    Unauthorized(AdminErrorBody),
    /// The token's scope does not allow this (an operator token is needed, or no admin token).
    #[response(status = 403)]
    Forbidden(AdminErrorBody),
    /// No such object in the tenant (another tenant's object is a 404 too).
    #[response(status = 404)]
    NotFound(AdminErrorBody),
    /// The change conflicts with the object's state (a name taken, a transition not allowed).
    #[response(status = 409)]
    Conflict(AdminErrorBody),
    /// The database is unreachable.
    #[response(status = 503)]
    Unavailable(AdminErrorBody),
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TenantQuery {
    /// Tenant to act on (operator tokens only; default `default`, or `X-AEX-Tenant-Id`). An
    /// admin token acts on its own tenant.
    pub tenant_id: Option<TenantId>,
}
