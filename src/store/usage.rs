//! Usage summaries: executions counted and their costs and tokens summed over a time range, in
//! total and per agent and model.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::domain::{AgentId, TenantId};

/// Counts and sums over one group of executions.
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema, sqlx::FromRow)]
#[schema(as = UsageLine)]
pub struct UsageRow {
    /// The agent id, model alias or tenant id the row is about (empty for the total).
    pub key: String,
    /// The agent's name, when grouped by agent.
    #[serde(rename = "name")]
    pub label: Option<String>,
    pub executions: i64,
    pub committed: i64,
    pub denied: i64,
    pub failed: i64,
    pub spent_micro_usd: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
}

/// How to group a summary.
#[derive(Debug, Clone, Copy)]
pub enum GroupBy {
    Total,
    Tenant,
    Agent,
    Model,
}

const SUMS: &str = "count(*) AS executions, \
     count(*) FILTER (WHERE e.state = 'COMMITTED') AS committed, \
     count(*) FILTER (WHERE e.state = 'DENIED') AS denied, \
     count(*) FILTER (WHERE e.state = 'FAILED') AS failed, \
     LEAST(COALESCE(sum(e.actual_micro_usd) FILTER (WHERE e.state = 'COMMITTED'), 0), 9223372036854775807)::bigint AS spent_micro_usd, \
     LEAST(COALESCE(sum(e.prompt_tokens), 0), 9223372036854775807)::bigint AS prompt_tokens, \
     LEAST(COALESCE(sum(e.completion_tokens), 0), 9223372036854775807)::bigint AS completion_tokens";

/// Executions created in `[since, until)`, of one tenant or (`None`) all, grouped.
pub async fn summarise(
    conn: &mut PgConnection,
    tenant_id: Option<TenantId>,
    agent_id: Option<AgentId>,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    group: GroupBy,
) -> Result<Vec<UsageRow>, sqlx::Error> {
    let (key, label, group_sql) = match group {
        GroupBy::Total => ("''", "NULL::text", ""),
        GroupBy::Tenant => ("e.tenant_id::text", "NULL::text", " GROUP BY e.tenant_id"),
        GroupBy::Agent => ("e.agent_id::text", "min(a.name)", " GROUP BY e.agent_id"),
        GroupBy::Model => (
            "COALESCE(e.model_alias, '')",
            "NULL::text",
            " GROUP BY e.model_alias",
        ),
    };
    let mut q = sqlx::QueryBuilder::new("SELECT ");
    q.push(key)
        .push(" AS key, ")
        .push(label)
        .push(" AS label, ")
        .push(SUMS)
        .push(" FROM executions e JOIN agents a ON a.id = e.agent_id WHERE e.created_at >= ")
        .push_bind(since)
        .push(" AND e.created_at < ")
        .push_bind(until);
    if let Some(t) = tenant_id {
        q.push(" AND e.tenant_id = ").push_bind(t);
    }
    if let Some(a) = agent_id {
        q.push(" AND e.agent_id = ").push_bind(a);
    }
    q.push(group_sql)
        .push(" ORDER BY spent_micro_usd DESC, key");
    q.build_query_as().fetch_all(conn).await
}
