//! One attempt of an execution as a request waiting for it sees it (SPEC §5.1): still in flight,
//! or ended with the outcome its own caller got. The execution row holds the latest attempt; an
//! attempt that ended RELEASED or FAILED is copied to `attempt_outcomes` when the next attempt
//! takes the row over, so its waiters still find its outcome.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::ExecutionState;

/// How the attempt a request waits for stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptStatus {
    InFlight,
    Ended(EndedAttempt),
}

/// An ended attempt: its terminal state, and the answer recorded for it, if one was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedAttempt {
    pub state: ExecutionState,
    pub reason: Option<String>,
    /// Status, body and whether the body is an SSE transcript; `None` when nothing was recorded
    /// (an attempt its replica never finished, or a result pruned past retention).
    pub result: Option<(i32, Vec<u8>, bool)>,
    /// The agent's budget left now, for the answer's headers.
    pub remaining_micro_usd: i64,
}

#[derive(sqlx::FromRow)]
struct AttemptRow {
    /// `None` when the attempt has left the execution row and no copy of it was kept.
    state: Option<String>,
    reason: Option<String>,
    response_status: Option<i32>,
    response_body: Option<Vec<u8>>,
    response_is_stream: Option<bool>,
    remaining_micro_usd: i64,
}

/// Copies the execution's ended attempt (RELEASED or FAILED) to `attempt_outcomes`, in the
/// caller's transaction, before the next attempt reuses the row.
pub async fn archive_outcome(
    conn: &mut PgConnection,
    execution_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO attempt_outcomes (execution_id, attempt, state, reason, response_status, \
         response_body, response_is_stream, completed_at) \
         SELECT id, attempt, state, reason, response_status, response_body, response_is_stream, \
         completed_at FROM executions WHERE id = $1 AND state IN ('RELEASED', 'FAILED') \
         ON CONFLICT ON CONSTRAINT attempt_outcomes_pkey DO NOTHING",
    )
    .bind(execution_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Where attempt `attempt` of the execution stands; `None` when there is no such execution.
/// One statement: the row and its copy are read in one snapshot, and the copy is written in the
/// transaction that moves the row on, so an attempt is never lost between the two.
pub async fn attempt_status(
    conn: &mut PgConnection,
    execution_id: Uuid,
    attempt: i32,
) -> Result<Option<AttemptStatus>, sqlx::Error> {
    let row: Option<AttemptRow> = sqlx::query_as(
        "SELECT CASE WHEN e.attempt = $2 THEN e.state ELSE o.state END AS state, \
         CASE WHEN e.attempt = $2 THEN e.reason ELSE o.reason END AS reason, \
         CASE WHEN e.attempt = $2 THEN e.response_status ELSE o.response_status END AS response_status, \
         CASE WHEN e.attempt = $2 THEN e.response_body ELSE o.response_body END AS response_body, \
         CASE WHEN e.attempt = $2 THEN e.response_is_stream ELSE o.response_is_stream END AS response_is_stream, \
         a.budget_micro_usd - a.spent_micro_usd - a.reserved_micro_usd AS remaining_micro_usd \
         FROM executions e JOIN agents a ON a.id = e.agent_id \
         LEFT JOIN attempt_outcomes o ON o.execution_id = e.id AND o.attempt = $2 \
         WHERE e.id = $1",
    )
    .bind(execution_id)
    .bind(attempt)
    .fetch_optional(conn)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let state = match row.state {
        Some(s) => s
            .parse::<ExecutionState>()
            .map_err(|e| sqlx::Error::Decode(e.into()))?,
        // Moved on without a copy: it ended, with nothing recorded to tell.
        None => ExecutionState::Failed,
    };
    if !state.is_terminal() {
        return Ok(Some(AttemptStatus::InFlight));
    }
    let result = match (row.response_status, row.response_body) {
        (Some(status), Some(body)) => Some((status, body, row.response_is_stream.unwrap_or(false))),
        _ => None,
    };
    Ok(Some(AttemptStatus::Ended(EndedAttempt {
        state,
        reason: row.reason,
        result,
        remaining_micro_usd: row.remaining_micro_usd,
    })))
}

/// Deletes the kept outcomes of attempts older than `older_than` (the result retention).
pub async fn prune_outcomes(
    conn: &mut PgConnection,
    older_than: chrono::DateTime<chrono::Utc>,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM attempt_outcomes WHERE archived_at < $1")
        .bind(older_than)
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}
