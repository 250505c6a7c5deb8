//! Executions: the idempotency identity, the state machine, and the cached result for replay.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{AgentId, ExecutionState, ReplicaId, TenantId};

/// One execution, as the admin API shows it too.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema, sqlx::FromRow)]
#[schema(as = ExecutionResponse)]
pub struct ExecutionRow {
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub agent_id: AgentId,
    pub execution_key: String,
    pub keyed: bool,
    pub route: String,
    pub fingerprint: String,
    pub model_alias: Option<String>,
    #[schema(value_type = String)]
    pub state: ExecutionState,
    pub attempt: i32,
    pub stream: bool,
    pub replica_id: Option<ReplicaId>,
    pub provider: Option<String>,
    pub estimate_micro_usd: i64,
    pub actual_micro_usd: Option<i64>,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    pub usage_source: Option<String>,
    pub reason: Option<String>,
    pub response_status: Option<i32>,
    pub response_is_stream: bool,
    pub result_pruned_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub dispatched_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// The columns of [`ExecutionRow`] (the cached body is fetched separately: it can be large).
macro_rules! execution_columns {
    () => {
        "id, tenant_id, agent_id, execution_key, keyed, route, fingerprint, model_alias, state, \
         attempt, stream, replica_id, provider, estimate_micro_usd, actual_micro_usd, \
         prompt_tokens, completion_tokens, usage_source, reason, response_status, \
         response_is_stream, result_pruned_at, created_at, updated_at, dispatched_at, completed_at"
    };
}
pub(crate) use execution_columns;

/// A new execution (or a new attempt of a released one) as admission writes it.
#[derive(Debug, Clone)]
pub struct NewExecution<'a> {
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub agent_id: AgentId,
    pub execution_key: &'a str,
    pub keyed: bool,
    pub route: &'a str,
    pub fingerprint: &'a str,
    pub model_alias: Option<&'a str>,
    pub state: &'a str,
    pub attempt: i32,
    pub stream: bool,
    pub replica_id: Option<ReplicaId>,
    pub estimate_micro_usd: i64,
    pub reason: Option<&'a str>,
    /// Who is called, when the execution is written DISPATCHED.
    pub provider: Option<&'a str>,
}

pub async fn find_by_key(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    agent_id: AgentId,
    key: &str,
) -> Result<Option<ExecutionRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        execution_columns!(),
        " FROM executions WHERE tenant_id = $1 AND agent_id = $2 AND execution_key = $3"
    ))
    .bind(tenant_id)
    .bind(agent_id)
    .bind(key)
    .fetch_optional(conn)
    .await
}

pub async fn get_execution(
    conn: &mut PgConnection,
    tenant_id: TenantId,
    id: Uuid,
) -> Result<Option<ExecutionRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        execution_columns!(),
        " FROM executions WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Inserts a new execution, or turns a released/failed one into its next attempt (same row, so
/// the caller's key keeps one identity): the `aex_upsert_execution` function, which an admitted
/// call's hold (`store::holds`) runs too.
pub async fn upsert_attempt(
    conn: &mut PgConnection,
    e: &NewExecution<'_>,
) -> Result<(), sqlx::Error> {
    bind_execution(
        sqlx::query(
            "SELECT aex_upsert_execution($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
             $14, $15)",
        ),
        e,
    )
    .bind(e.reason)
    .bind(e.provider)
    .execute(conn)
    .await?;
    Ok(())
}

/// Binds an execution's fields as `aex_upsert_execution` and `aex_hold` take them first ($1 to
/// $13: id to estimate).
pub(crate) fn bind_execution<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    e: &'q NewExecution<'q>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(e.id)
        .bind(e.tenant_id)
        .bind(e.agent_id)
        .bind(e.execution_key)
        .bind(e.keyed)
        .bind(e.route)
        .bind(e.fingerprint)
        .bind(e.model_alias)
        .bind(e.state)
        .bind(e.attempt)
        .bind(e.stream)
        .bind(e.replica_id)
        .bind(e.estimate_micro_usd)
}

/// Stores the result a replay will return.
pub async fn store_result(
    conn: &mut PgConnection,
    id: Uuid,
    status: u16,
    body: &[u8],
    is_stream: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE executions SET response_status = $2, response_body = $3, \
         response_is_stream = $4, updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(i32::from(status))
    .bind(body)
    .bind(is_stream)
    .execute(conn)
    .await?;
    Ok(())
}

/// The cached result of a terminal execution, if still retained.
pub async fn get_result(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<(i32, Vec<u8>, bool)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT response_status, response_body, response_is_stream FROM executions \
         WHERE id = $1 AND response_body IS NOT NULL AND response_status IS NOT NULL",
    )
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Non-terminal executions owned by replicas that are stopped or silent since `stale_before`
/// (or by no replica at all). Found through their holds: an execution is open exactly while its
/// attempt's reservation is RESERVED (the admission writes both, the settlement ends both), and
/// `reservations_unsettled_idx` lists those (by `settled_at IS NULL`, migrations/20261210000001);
/// `executions` has no index on `state`, so that the settlement's update of the row is a HOT one
/// (migrations/20261208000004).
pub async fn list_orphaned(
    conn: &mut PgConnection,
    stale_before: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<ExecutionRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        execution_columns!(),
        " FROM executions e WHERE (id, attempt) IN \
            (SELECT h.execution_id, h.attempt FROM reservations h WHERE h.settled_at IS NULL) \
          AND state IN ('RESERVING', 'RESERVED', 'DISPATCHED') \
          AND NOT EXISTS (SELECT 1 FROM replicas r WHERE r.id = e.replica_id \
                          AND r.stopped_at IS NULL AND r.heartbeat_at >= $1) \
          ORDER BY created_at LIMIT $2"
    ))
    .bind(stale_before)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Locks one execution row (the reconciler's claim before settling it).
pub async fn lock_execution(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<ExecutionRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        execution_columns!(),
        " FROM executions WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Drops cached bodies older than the retention period; the rows and ledger stay. Every
/// execution finished before `older_than` is marked pruned, with a body or without (its result,
/// if any, is no longer retained either way): `executions_unpruned_idx` then holds only the rows
/// of the retention period and the open ones, and a result completes after its row was created,
/// so the `created_at` bound finds them all through it.
pub async fn prune_results(
    conn: &mut PgConnection,
    older_than: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE executions SET response_body = NULL, result_pruned_at = now() \
         WHERE result_pruned_at IS NULL AND created_at < $1 AND completed_at < $1",
    )
    .bind(older_than)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Which of `ids` exist, read only once every transaction that had locked one of `agents` has
/// ended. After a transaction's COMMIT went unanswered, its backend may still be finishing it (it
/// notices its client is gone only when it next reads or writes the socket): a read at once could
/// miss a commit that becomes visible a moment later. That transaction holds its agents' rows
/// `FOR UPDATE` until it ends, so `FOR SHARE` on them waits for exactly that; the executions are
/// then read by a second statement, whose snapshot is taken after the wait.
pub async fn existing_once_agents_free(
    conn: &mut PgConnection,
    agents: &[Uuid],
    ids: &[Uuid],
) -> Result<std::collections::HashSet<Uuid>, sqlx::Error> {
    // Ascending, the order every admission locks agents in.
    sqlx::query("SELECT id FROM agents WHERE id = ANY($1) ORDER BY id FOR SHARE")
        .bind(agents)
        .fetch_all(&mut *conn)
        .await?;
    let found: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM executions WHERE id = ANY($1)")
        .bind(ids)
        .fetch_all(&mut *conn)
        .await?;
    Ok(found.into_iter().collect())
}
