//! Tenants: the isolation boundary. Operators create, list and change them; an admin sees only
//! its own. A tenant's budget, when set, is one every reservation of its agents must also fit.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use utoipa::ToSchema;

use super::agents::check_limits;
use super::{
    admin_event, nullable, patch_policy, require_operator, usd, validate_name, visible_tenant,
    AdminError,
};
use crate::auth::Principal;
use crate::domain::{Scope, TenantId, DEFAULT_TENANT};
use crate::gateway::policy::Policy;
use crate::ledger;
use crate::store::tenants::{self as store, TenantRow, TenantSettings};

/// `POST /admin/tenants`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantRequest {
    /// Unique.
    #[schema(min_length = 1, max_length = 128)]
    pub name: String,
    /// Budget every agent of the tenant also draws from, in decimal USD; none: unlimited.
    #[serde(default)]
    #[schema(pattern = r"^([0-9]+(\.[0-9]{0,6})?|\.[0-9]{1,6})$", example = "5.00")]
    pub budget_usd: Option<String>,
    #[serde(default)]
    #[schema(minimum = 1)]
    pub rpm: Option<i32>,
    #[serde(default)]
    #[schema(minimum = 1)]
    pub tpm: Option<i64>,
    /// Policy values the tenant's agents inherit unless they set their own.
    #[serde(default)]
    pub default_policy: Option<Policy>,
}

/// `PATCH /admin/tenants/{tenant}`: fields left out are kept; `null` clears a budget or limit.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenantRequest {
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, pattern = r"^([0-9]+(\.[0-9]{0,6})?|\.[0-9]{1,6})$")]
    pub budget_usd: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i32>, minimum = 1)]
    pub rpm: Option<Option<i32>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>, minimum = 1)]
    pub tpm: Option<Option<i64>>,
    /// A merge patch of the default policy: a field set to `null` is removed.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub default_policy: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TenantResponse {
    pub id: TenantId,
    pub name: String,
    pub budget_micro_usd: Option<i64>,
    pub spent_micro_usd: i64,
    pub reserved_micro_usd: i64,
    /// `budget - spent - reserved`, when the tenant has a budget.
    pub remaining_micro_usd: Option<i64>,
    pub rpm_limit: Option<i32>,
    pub tpm_limit: Option<i64>,
    #[schema(value_type = Object)]
    pub default_policy: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<TenantRow> for TenantResponse {
    fn from(t: TenantRow) -> Self {
        TenantResponse {
            remaining_micro_usd: t.budget_micro_usd.map(|b| {
                b.saturating_sub(t.spent_micro_usd)
                    .saturating_sub(t.reserved_micro_usd)
            }),
            id: t.id,
            name: t.name,
            budget_micro_usd: t.budget_micro_usd,
            spent_micro_usd: t.spent_micro_usd,
            reserved_micro_usd: t.reserved_micro_usd,
            rpm_limit: t.rpm_limit,
            tpm_limit: t.tpm_limit,
            default_policy: t.default_policy.0,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

fn settings_of(t: &TenantRow) -> TenantSettings {
    TenantSettings {
        name: t.name.clone(),
        budget_micro_usd: t.budget_micro_usd,
        rpm_limit: t.rpm_limit,
        tpm_limit: t.tpm_limit,
        default_policy: t.default_policy.0.clone(),
    }
}

fn settings_json(s: &TenantSettings) -> serde_json::Value {
    json!({
        "name": s.name,
        "budget_micro_usd": s.budget_micro_usd,
        "rpm_limit": s.rpm_limit,
        "tpm_limit": s.tpm_limit,
        "default_policy": s.default_policy,
    })
}

#[tracing::instrument(skip_all, fields(name = %req.name))]
pub async fn create_tenant(
    pool: &sqlx::PgPool,
    by: &Principal,
    req: CreateTenantRequest,
) -> Result<TenantResponse, AdminError> {
    require_operator(by, "creating a tenant")?;
    validate_name("name", &req.name)?;
    check_limits(req.rpm, req.tpm)?;
    let settings = TenantSettings {
        name: req.name.clone(),
        budget_micro_usd: req
            .budget_usd
            .as_deref()
            .map(|b| usd("budget_usd", b))
            .transpose()?,
        rpm_limit: req.rpm,
        tpm_limit: req.tpm,
        default_policy: serde_json::to_value(req.default_policy.unwrap_or_default())
            .map_err(anyhow::Error::from)?,
    };
    let mut tx = pool.begin().await?;
    let id = TenantId(uuid::Uuid::now_v7());
    let row = store::save_tenant(&mut tx, id, &settings).await?;
    let payload = json!({"by": by.subject, "after": settings_json(&settings)});
    ledger::append(
        &mut tx,
        admin_event(Some(id), None, "tenant.created", payload),
    )
    .await?;
    tx.commit().await?;
    Ok(row.into())
}

/// Finds a tenant by id or name; an admin finds only its own (another is a 404).
async fn find_tenant(
    conn: &mut PgConnection,
    by: &Principal,
    id_or_name: &str,
    lock: bool,
) -> Result<TenantRow, AdminError> {
    let not_found = AdminError::from_store("tenant");
    let id = match id_or_name.parse::<TenantId>() {
        Ok(id) => id,
        Err(_) => {
            store::get_tenant_by_name(conn, id_or_name)
                .await
                .map_err(&not_found)?
                .id
        }
    };
    if by.scope != Scope::Operator && by.tenant_id != Some(id) {
        return Err(AdminError::NotFound("tenant"));
    }
    let found = match lock {
        true => store::lock_tenant(conn, id).await,
        false => store::get_tenant(conn, id).await,
    };
    found.map_err(not_found)
}

pub async fn get_tenant(
    pool: &sqlx::PgPool,
    by: &Principal,
    id_or_name: &str,
) -> Result<TenantResponse, AdminError> {
    let mut conn = pool.acquire().await?;
    Ok(find_tenant(&mut conn, by, id_or_name, false).await?.into())
}

pub async fn list_tenants(
    pool: &sqlx::PgPool,
    by: &Principal,
) -> Result<Vec<TenantResponse>, AdminError> {
    let only = visible_tenant(by, None)?;
    let mut conn = pool.acquire().await?;
    let rows = store::list_tenants(&mut conn, only).await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

#[tracing::instrument(skip_all, fields(tenant = id_or_name))]
pub async fn update_tenant(
    pool: &sqlx::PgPool,
    by: &Principal,
    id_or_name: &str,
    req: UpdateTenantRequest,
) -> Result<TenantResponse, AdminError> {
    require_operator(by, "changing a tenant")?;
    if let Some(name) = &req.name {
        validate_name("name", name)?;
    }
    check_limits(req.rpm.flatten(), req.tpm.flatten())?;
    let budget = match &req.budget_usd {
        Some(Some(b)) => Some(Some(usd("budget_usd", b)?)),
        Some(None) => Some(None),
        None => None,
    };
    let mut tx = pool.begin().await?;
    let before = find_tenant(&mut tx, by, id_or_name, true).await?;
    if before.id == DEFAULT_TENANT && req.name.as_ref().is_some_and(|n| *n != before.name) {
        return Err(AdminError::invalid(
            "name",
            "the default tenant keeps its name",
        ));
    }
    let old = settings_of(&before);
    let new = TenantSettings {
        name: req.name.clone().unwrap_or_else(|| old.name.clone()),
        budget_micro_usd: budget.unwrap_or(old.budget_micro_usd),
        rpm_limit: req.rpm.unwrap_or(old.rpm_limit),
        tpm_limit: req.tpm.unwrap_or(old.tpm_limit),
        default_policy: match &req.default_policy {
            Some(patch) => patch_policy("default_policy", &old.default_policy, patch)?,
            None => old.default_policy.clone(),
        },
    };
    let row = store::save_tenant(&mut tx, before.id, &new).await?;
    let payload =
        json!({"by": by.subject, "before": settings_json(&old), "after": settings_json(&new)});
    ledger::append(
        &mut tx,
        admin_event(Some(before.id), None, "tenant.updated", payload),
    )
    .await?;
    tx.commit().await?;
    Ok(row.into())
}
