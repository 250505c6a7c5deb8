//! Finding executions for the admin API: filtered listing (newest first, keyset paged) and
//! lookup by the caller's key within a tenant.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, QueryBuilder};
use uuid::Uuid;

use super::executions::{execution_columns, ExecutionRow};
use crate::domain::{AgentId, TenantId};

const COLUMNS: &str = concat!(
    "SELECT ",
    execution_columns!(),
    " FROM executions WHERE tenant_id = "
);

/// Which of a tenant's executions to list.
#[derive(Debug, Clone, Default)]
pub struct ExecutionFilter {
    pub agent_id: Option<AgentId>,
    pub state: Option<String>,
    pub model_alias: Option<String>,
    pub route: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Keyset paging: executions older than this id (ids are time-ordered UUIDv7).
    pub before: Option<Uuid>,
}

pub async fn list_executions(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    f: &ExecutionFilter,
    limit: i64,
) -> Result<Vec<ExecutionRow>, sqlx::Error> {
    let mut q = QueryBuilder::new(COLUMNS);
    q.push_bind(tenant_id);
    if let Some(a) = f.agent_id {
        q.push(" AND agent_id = ").push_bind(a);
    }
    if let Some(s) = &f.state {
        q.push(" AND state = ").push_bind(s.clone());
    }
    if let Some(m) = &f.model_alias {
        q.push(" AND model_alias = ").push_bind(m.clone());
    }
    if let Some(r) = &f.route {
        q.push(" AND route = ").push_bind(r.clone());
    }
    if let Some(t) = f.since {
        q.push(" AND created_at >= ").push_bind(t);
    }
    if let Some(t) = f.until {
        q.push(" AND created_at < ").push_bind(t);
    }
    if let Some(b) = f.before {
        q.push(" AND id < ").push_bind(b);
    }
    q.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
    q.build_query_as().fetch_all(conn).await
}

/// The executions of a tenant with this caller key (one per agent at most).
pub async fn find_by_key_in_tenant(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    key: &str,
) -> Result<Vec<ExecutionRow>, sqlx::Error> {
    let mut q = QueryBuilder::new(COLUMNS);
    q.push_bind(tenant_id)
        .push(" AND execution_key = ")
        .push_bind(key.to_owned())
        .push(" ORDER BY id LIMIT 10");
    q.build_query_as().fetch_all(conn).await
}
