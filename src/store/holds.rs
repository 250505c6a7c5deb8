//! The writes of an admitted call in one round trip, inside the admission transaction: the
//! `aex_hold_hashed` function (migrations/20261207520001_ledger_hash_in_replica.sql) writes the
//! execution, its reservation (settled later, exactly once, by `store::settlements`), the
//! estimate on the tenant's and agent's books, and the ledger events `reservation.reserved` and
//! `execution.dispatched`, hashed by the caller after the chain tail it read under the chain's
//! lock (`store::agents::lock_agent_chain`).
//!
//! [`lock_hot`] and [`HotLock::hold`] are the same transaction on the money transactions' pool
//! (`store::hot`), pipelined: BEGIN, the tenant's admission view and the agent's row and chain
//! locked and its rate windows read in the first round trip, the admission counted in its
//! windows (when it has limits), the hold and COMMIT in the second.

use serde_json::Value;
use sqlx::types::Json;
use sqlx::PgConnection;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::agents::{AgentRow, LOCK_AGENT_CHAIN};
use super::executions::{bind_execution, NewExecution};
use super::hot::{pg_error, HotConn, HotPool, BEGIN};
use super::hot_rows::agent_row;
use super::rate_windows::{self, Charges, WindowUse, USE_OF_SUBJECTS};
use super::tenants::ADMISSION_VIEW;
use crate::domain::{AgentId, TenantId};

/// The reservation of the attempt, beside what the execution already says.
#[derive(Debug, Clone, Copy)]
pub struct NewReservation {
    pub id: Uuid,
    /// Whether the hold also counts against the tenant's budget.
    pub holds_tenant: bool,
    /// Tokens charged to the TPM windows at admission (0 when no limit applies).
    pub rate_tokens: i64,
}

/// The two events of a hold, linked to the agent's chain by the caller: `reservation.reserved` at
/// `seq` after `prev_hash`, `execution.dispatched` at `seq + 1` after it.
pub struct HoldEvents<'a> {
    pub chain_id: &'a str,
    pub ts: chrono::DateTime<chrono::Utc>,
    pub seq: i64,
    pub prev_hash: &'a str,
    pub reserved: (&'a str, &'a str),
    pub dispatched: (&'a str, &'a str),
}

/// Holds `e.estimate_micro_usd` for the attempt `e` describes, with its two events as hashed by
/// the caller: `reserved` and `dispatched` are (hash, canonical payload).
pub async fn hold(
    conn: &mut PgConnection,
    e: &NewExecution<'_>,
    r: &NewReservation,
    events: &HoldEvents<'_>,
) -> Result<(), sqlx::Error> {
    let started = std::time::Instant::now();
    bind_execution(sqlx::query(HOLD), e)
        .bind(e.provider)
        .bind(r.id)
        .bind(r.holds_tenant)
        .bind(r.rate_tokens)
        .bind(events.chain_id)
        .bind(events.ts)
        .bind(events.seq)
        .bind(events.prev_hash)
        .bind(events.reserved.0)
        .bind(events.reserved.1)
        .bind(events.dispatched.0)
        .bind(events.dispatched.1)
        .execute(conn)
        .await?;
    crate::metrics::observe_ledger_append(started.elapsed());
    Ok(())
}

/// The hold, on either driver.
const HOLD: &str = "SELECT aex_hold_hashed($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
     $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25)";

/// An admission transaction open on the money transactions' pool, the agent's row and chain
/// locked. Dropped without [`HotLock::hold`] or [`HotLock::abandon`], its connection is closed
/// (the server rolls back).
pub struct HotLock {
    // Boxed: a pooled connection is a few hundred bytes, moved along with the lock.
    conn: Box<HotConn>,
}

/// What [`lock_hot`] read: what `store::tenants::admission_view` and
/// `store::agents::lock_agent_chain` read on the sqlx pool.
#[derive(Debug, Clone)]
pub struct HotLocked {
    /// Whether the tenant has a budget or rate limits of its own (its row is not locked here),
    /// and its default policy.
    pub tenant_limited: bool,
    pub tenant_policy: Json<Value>,
    pub agent: AgentRow,
    pub tail_seq: i64,
    pub tail_hash: String,
    /// What the agent's rate-limit subject used in the sliding minute (read after the lock).
    pub window: WindowUse,
}

/// BEGIN, the tenant's admission view, the agent's row (`FOR UPDATE`), chain lock and chain
/// tail, and then what its rate-limit `subject` used, in one round trip; `None` (rolled back)
/// when the tenant or the agent does not exist.
pub async fn lock_hot(
    pool: &HotPool,
    tenant_id: TenantId,
    agent_id: AgentId,
    chain: (&str, i64),
    subject: &str,
) -> Result<Option<(HotLock, HotLocked)>, sqlx::Error> {
    let mut conn = pool.get().await?;
    let begin = conn.prepare(BEGIN).await?;
    let tenant = conn.prepare(ADMISSION_VIEW).await?;
    let agent = conn.prepare(LOCK_AGENT_CHAIN).await?;
    let windows = conn.prepare(USE_OF_SUBJECTS).await?;
    conn.begun();
    let client = conn.client()?;
    let tenant_params: [&(dyn ToSql + Sync); 1] = [&tenant_id.0];
    let agent_params: [&(dyn ToSql + Sync); 4] = [&tenant_id.0, &agent_id.0, &chain.0, &chain.1];
    let subjects = vec![subject];
    let window_params: [&(dyn ToSql + Sync); 1] = [&subjects];
    let (_, tenant, agent, window) = tokio::try_join!(
        client.execute(&begin, &[]),
        client.query_opt(&tenant, &tenant_params),
        client.query_opt(&agent, &agent_params),
        client.query_one(&windows, &window_params),
    )
    .map_err(pg_error)?;
    let (Some(tenant), Some(agent)) = (tenant, agent) else {
        conn.rollback().await?;
        return Ok(None);
    };
    let locked = HotLocked {
        tenant_limited: tenant.try_get(0).map_err(pg_error)?,
        tenant_policy: Json(tenant.try_get(1).map_err(pg_error)?),
        agent: agent_row(&agent)?,
        tail_seq: agent.try_get("tail_seq").map_err(pg_error)?,
        tail_hash: agent.try_get("tail_hash").map_err(pg_error)?,
        window: rate_windows::use_of_row(&window)?,
    };
    let conn = Box::new(conn);
    Ok(Some((HotLock { conn }, locked)))
}

impl HotLock {
    /// The admission counted in its rate windows (`charges`, when any), [`hold`] and COMMIT,
    /// in one round trip.
    pub async fn hold(
        mut self,
        e: &NewExecution<'_>,
        r: &NewReservation,
        events: &HoldEvents<'_>,
        charges: &Charges,
    ) -> Result<(), sqlx::Error> {
        let started = std::time::Instant::now();
        let params: [&(dyn ToSql + Sync); 25] = [
            &e.id,
            &e.tenant_id.0,
            &e.agent_id.0,
            &e.execution_key,
            &e.keyed,
            &e.route,
            &e.fingerprint,
            &e.model_alias,
            &e.state,
            &e.attempt,
            &e.stream,
            &e.replica_id.map(|r| r.0),
            &e.estimate_micro_usd,
            &e.provider,
            &r.id,
            &r.holds_tenant,
            &r.rate_tokens,
            &events.chain_id,
            &events.ts,
            &events.seq,
            &events.prev_hash,
            &events.reserved.0,
            &events.reserved.1,
            &events.dispatched.0,
            &events.dispatched.1,
        ];
        charges.commit_with(&mut self.conn, HOLD, &params).await?;
        crate::metrics::observe_ledger_append(started.elapsed());
        Ok(())
    }

    /// Rolls the transaction back (nothing was written) and gives the connection back.
    pub async fn abandon(mut self) -> Result<(), sqlx::Error> {
        self.conn.rollback().await
    }
}

/// What the agent committed since `start` (everything when `lifetime`): its `spent` when a
/// budget period restarts at `start`.
pub async fn committed_since(
    conn: &mut PgConnection,
    agent: crate::domain::AgentId,
    start: chrono::DateTime<chrono::Utc>,
    lifetime: bool,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COALESCE(sum(actual_micro_usd), 0)::bigint FROM reservations \
         WHERE agent_id = $1 AND state = 'COMMITTED' AND ($3 OR settled_at >= $2)",
    )
    .bind(agent)
    .bind(start)
    .bind(lifetime)
    .fetch_one(conn)
    .await
}
