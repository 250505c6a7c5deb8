//! Reading the ledger for the admin API: events filtered by tenant, agent, execution, type or
//! chain, in append order and keyset paged. (Appending and verifying live in `ledger`.)

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, QueryBuilder};

use crate::domain::{AgentId, TenantId};

/// One ledger event with its hash-chain links, as the admin API shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema, sqlx::FromRow)]
#[schema(as = LedgerEvent)]
pub struct EventRow {
    pub id: i64,
    pub chain_id: String,
    pub seq: i64,
    pub prev_hash: String,
    pub event_hash: String,
    pub event_type: String,
    pub tenant_id: Option<TenantId>,
    pub agent_id: Option<AgentId>,
    pub execution_id: Option<String>,
    pub ts: DateTime<Utc>,
    /// The canonical payload text, parsed (`json`, unlike `jsonb`, keeps its key order).
    #[schema(value_type = Object)]
    pub payload: Json<serde_json::Value>,
}

/// Which events to read.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// `None`: every tenant's and the system chain (the operator's view).
    pub tenant_id: Option<TenantId>,
    pub agent_id: Option<AgentId>,
    pub execution_id: Option<String>,
    pub event_type: Option<String>,
    pub chain_id: Option<String>,
    /// Keyset paging: events appended after this id.
    pub after_id: Option<i64>,
}

/// Events in append order (ascending id).
pub async fn list_events(
    conn: &mut PgConnection,
    f: &EventFilter,
    limit: i64,
) -> Result<Vec<EventRow>, sqlx::Error> {
    let mut q = QueryBuilder::new(
        "SELECT id, chain_id, seq, prev_hash, event_hash, event_type, tenant_id, agent_id, \
         execution_id, ts, payload::json AS payload FROM event_log WHERE true",
    );
    if let Some(t) = f.tenant_id {
        q.push(" AND tenant_id = ").push_bind(t);
    }
    if let Some(a) = f.agent_id {
        q.push(" AND agent_id = ").push_bind(a);
    }
    if let Some(e) = &f.execution_id {
        q.push(" AND execution_id = ").push_bind(e.clone());
    }
    if let Some(t) = &f.event_type {
        q.push(" AND event_type = ").push_bind(t.clone());
    }
    if let Some(c) = &f.chain_id {
        q.push(" AND chain_id = ").push_bind(c.clone());
    }
    if let Some(after) = f.after_id {
        q.push(" AND id > ").push_bind(after);
    }
    q.push(" ORDER BY id LIMIT ").push_bind(limit);
    q.build_query_as().fetch_all(conn).await
}

/// One ledger event as shown in an execution's timeline.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct TimelineEvent {
    pub id: i64,
    pub chain_id: String,
    pub seq: i64,
    pub event_type: String,
    pub ts: chrono::DateTime<chrono::Utc>,
    pub event_hash: String,
    #[schema(value_type = Object)]
    #[sqlx(json)]
    pub payload: serde_json::Value,
}

/// Every ledger event of an execution key within a tenant, in order.
pub async fn timeline(
    conn: &mut PgConnection,
    tenant: TenantId,
    execution_id: &str,
) -> Result<Vec<TimelineEvent>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, chain_id, seq, event_type, ts, event_hash, payload::json AS payload FROM event_log \
         WHERE tenant_id = $1 AND execution_id = $2 ORDER BY id",
    )
    .bind(tenant)
    .bind(execution_id)
    .fetch_all(conn)
    .await
}
