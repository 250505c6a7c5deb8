//! Administrative use cases, one file per family (tenants, agents, tokens, executions, ledger,
//! config, plugins, usage, metrics, audits, replay), called by the admin API handlers and, for read-only
//! checks, by the CLI directly against the database. Every change that matters appends a ledger
//! event `{"by": <principal>, …, "before": …, "after": …}` in the transaction that makes it.

pub mod activity;
pub mod agent_changes;
pub mod agent_tokens;
pub mod agents;
pub mod alerts;
pub mod audit;
pub mod budgets;
pub mod config;
pub mod executions;
pub mod ledger;
pub mod metrics;
pub mod plugins;
pub mod replay;
pub mod tenants;
pub mod tokens;
pub mod usage;
pub mod webhooks;

use chrono::{DateTime, Utc};

use crate::auth::Principal;
use crate::domain::{AgentId, Scope, TenantId, DEFAULT_TENANT};
use crate::ledger::{ChainId, NewEvent};
use crate::store::StoreError;

/// Errors of admin use cases, rendered in the admin error shape by the HTTP layer.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// A value the database refused (out of range, a NUL byte in text, …).
    #[error("invalid value: {0}")]
    BadValue(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    /// The tenant already has as many agents as `gateway.max_agents_per_tenant` allows.
    #[error(
        "the tenant has reached its limit of {0} agents (decommissioned agents count too); \
         an operator can raise gateway.max_agents_per_tenant"
    )]
    AgentLimitReached(u32),
    #[error("{0}")]
    Forbidden(String),
    /// The caller's role may not do this at all (SPEC §8: plugin installs are the operator's).
    #[error("{0}")]
    PermissionDenied(String),
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

    /// Maps a store error, naming what was not found.
    pub fn from_store(what: &'static str) -> impl Fn(StoreError) -> AdminError {
        move |e| match e {
            StoreError::NotFound => AdminError::NotFound(what),
            other => other.into(),
        }
    }
}

impl From<sqlx::Error> for AdminError {
    fn from(e: sqlx::Error) -> Self {
        if crate::gateway::error::is_unavailable(&e) {
            return AdminError::Unavailable;
        }
        // SQLSTATE class 22 (data exception): the request carried a value Postgres cannot store.
        if let sqlx::Error::Database(db) = &e {
            if db.code().is_some_and(|c| c.starts_with("22")) {
                return AdminError::BadValue(db.message().to_owned());
            }
        }
        AdminError::Internal(e.into())
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
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

/// The tenants a listing covers: an admin's own; for an operator the one it names or (`None`)
/// every tenant.
pub fn visible_tenant(
    principal: &Principal,
    requested: Option<TenantId>,
) -> Result<Option<TenantId>, AdminError> {
    match principal.scope {
        Scope::Operator => Ok(requested),
        _ => acting_tenant(principal, requested).map(Some),
    }
}

/// Refuses anything but an operator token (for changes that span tenants).
pub fn require_operator(principal: &Principal, what: &str) -> Result<(), AdminError> {
    if principal.scope == Scope::Operator {
        Ok(())
    } else {
        Err(AdminError::Forbidden(format!(
            "{what} needs an operator token"
        )))
    }
}

/// A name people type (SPEC §9): 1–128 characters, no control, bidi-override or zero-width
/// characters (which make two names look alike or reorder what an operator reads), no
/// surrounding spaces, and never a UUID (routes take an id or a name: a name that parses as
/// an id could shadow another object).
pub fn validate_name(field: &'static str, name: &str) -> Result<(), AdminError> {
    let length = name.chars().count();
    let ok = !name.trim().is_empty()
        && length <= 128
        && name == name.trim()
        && !name
            .chars()
            .any(|c| c.is_control() || is_invisible_format(c))
        && uuid::Uuid::parse_str(name).is_err();
    if ok {
        Ok(())
    } else {
        Err(AdminError::invalid(
            field,
            "must be 1 to 128 characters, without control, bidi-override or zero-width \
             characters or surrounding spaces, and not a UUID",
        ))
    }
}

/// Bidirectional overrides, embeddings, isolates and marks, and zero-width characters.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{061C}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

/// Free text (a reason, a description): at most 1,000 characters, no control characters.
pub fn validate_text(field: &'static str, text: &str) -> Result<(), AdminError> {
    if text.chars().count() <= 1000 && !text.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(AdminError::invalid(
            field,
            "must be at most 1000 characters, without control characters",
        ))
    }
}

/// The longest token lifetime: ten years (a token that should live longer needs no expiry).
pub const MAX_TTL_HOURS: u32 = 24 * 366 * 10;

/// A token lifetime in hours; `None` means no expiry.
pub fn token_ttl(
    field: &'static str,
    hours: Option<u32>,
) -> Result<Option<chrono::Duration>, AdminError> {
    match hours {
        None => Ok(None),
        Some(h) if (1..=MAX_TTL_HOURS).contains(&h) => Ok(Some(chrono::Duration::hours(h.into()))),
        Some(_) => Err(AdminError::invalid(
            field,
            format!("must be between 1 and {MAX_TTL_HOURS} hours"),
        )),
    }
}

/// A page size: `default` when unset, else 1..=`max`.
pub fn page_limit(limit: Option<i64>, default: i64, max: i64) -> Result<i64, AdminError> {
    let limit = limit.unwrap_or(default);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(AdminError::invalid(
            "limit",
            format!("must be between 1 and {max}"),
        ))
    }
}

/// A timestamp Postgres can store and a person meant (years 1970–9999).
pub fn check_time(field: &'static str, t: Option<DateTime<Utc>>) -> Result<(), AdminError> {
    use chrono::Datelike;
    match t {
        Some(t) if !(1970..=9999).contains(&t.year()) => Err(AdminError::invalid(
            field,
            "must be a time between 1970 and 9999",
        )),
        _ => Ok(()),
    }
}

/// Parses decimal USD given by a person ("5.00") into micro-USD, naming the field on error.
pub fn usd(field: &'static str, text: &str) -> Result<i64, AdminError> {
    crate::money::parse_usd(text)
        .map(|m| m.0)
        .map_err(|e| AdminError::invalid(field, e.to_string()))
}

/// For `Option<Option<T>>` fields of a change request: absent keeps the value (`None`), `null`
/// clears it (`Some(None)`), a value sets it.
pub(crate) fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(d).map(Some)
}

/// Applies a JSON merge patch (RFC 7396, one level) to a stored policy object and validates the
/// result: a field set to `null` returns to inheriting, a field absent is kept.
pub(crate) fn patch_policy(
    field: &'static str,
    current: &serde_json::Value,
    patch: &serde_json::Map<String, serde_json::Value>,
) -> Result<serde_json::Value, AdminError> {
    let mut merged = current.as_object().cloned().unwrap_or_default();
    for (k, v) in patch {
        if v.is_null() {
            merged.remove(k);
        } else {
            merged.insert(k.clone(), v.clone());
        }
    }
    let policy: crate::gateway::policy::Policy =
        serde_path_to_error::deserialize(serde_json::Value::Object(merged)).map_err(|e| {
            let at = match e.path().to_string() {
                p if p == "." => field.to_owned(),
                p => format!("{field}.{p}"),
            };
            AdminError::invalid(field, format!("{at}: {}", e.inner()))
        })?;
    serde_json::to_value(policy).map_err(|e| AdminError::Internal(e.into()))
}

/// An admin event on the chain of what it is about: the agent's, else the tenant's, else the
/// system chain.
pub(crate) fn admin_event(
    tenant_id: Option<TenantId>,
    agent_id: Option<AgentId>,
    event_type: &str,
    payload: serde_json::Value,
) -> NewEvent<'_> {
    let chain = match (agent_id, tenant_id) {
        (Some(a), _) => ChainId::Agent(a),
        (None, Some(t)) => ChainId::Tenant(t),
        (None, None) => ChainId::System,
    };
    NewEvent {
        chain,
        event_type,
        tenant_id,
        agent_id,
        execution_id: None,
        payload,
    }
}

/// Reads an agent by id or, failing that, by name, within the tenant; `lock` takes its row lock.
pub(crate) async fn find_agent(
    conn: &mut sqlx::PgConnection,
    tenant_id: crate::domain::TenantId,
    id_or_name: &str,
    lock: bool,
) -> Result<crate::store::agents::AgentRow, AdminError> {
    let id = match id_or_name.parse::<crate::domain::AgentId>() {
        Ok(id) => id,
        Err(_) => {
            crate::store::agents::get_agent_by_name(conn, tenant_id, id_or_name)
                .await
                .map_err(AdminError::from_store("agent"))?
                .id
        }
    };
    let lock = match lock {
        true => crate::store::agents::Lock::ForUpdate,
        false => crate::store::agents::Lock::No,
    };
    crate::store::agents::get_agent(conn, tenant_id, id, lock)
        .await
        .map_err(AdminError::from_store("agent"))
}
