//! `GET /admin/activity` (the seed's route): the newest facts of the `events` projection —
//! admissions refused, usage committed, reservations released — newest first.

use super::{page_limit, visible_tenant, AdminError};
use crate::auth::Principal;
use crate::domain::TenantId;
use crate::store::projection;
pub use crate::store::projection::FactRow as ActivityItem;

pub async fn recent(
    pool: &sqlx::PgPool,
    by: &Principal,
    tenant: Option<TenantId>,
    before_id: Option<i64>,
    limit: Option<i64>,
) -> Result<Vec<ActivityItem>, AdminError> {
    let limit = page_limit(limit, 50, 500)?;
    let tenant = visible_tenant(by, tenant)?;
    let mut conn = pool.acquire().await?;
    Ok(projection::list_recent(&mut conn, tenant, before_id, limit).await?)
}
