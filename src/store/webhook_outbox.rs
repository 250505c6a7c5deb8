//! The webhook outbox (`webhook_deliveries`) and its attempts. Rows are written with their alert
//! (`aex_raise_alert`); every replica's worker claims due ones with `FOR UPDATE SKIP LOCKED`,
//! taking a lease instead of holding the row lock across the HTTP call (a slow receiver must
//! not hold a database connection). Deliveries of one subject to one endpoint go in order: only
//! the oldest pending one of its line can be claimed, so a receiver that is down holds its line
//! until it answers or the delivery runs out of retries.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{ReplicaId, TenantId};

/// A claimed delivery with what is needed to send it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub url: String,
    pub secret: String,
    /// Still signing, during a rotation's grace period.
    pub previous_secret: Option<String>,
    pub payload: String,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
}

/// Claims up to `limit` due deliveries, each the head of its line, for `lease_seconds`.
pub async fn claim_due(
    conn: &mut PgConnection,
    limit: i64,
    lease_seconds: f64,
) -> Result<Vec<Claimed>, sqlx::Error> {
    sqlx::query_as(
        "WITH due AS ( \
           SELECT d.id FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
           WHERE d.state = 'pending' AND d.next_attempt_at <= now() AND w.enabled \
             AND (d.lease_until IS NULL OR d.lease_until < now()) \
             AND NOT EXISTS (SELECT 1 FROM webhook_deliveries e \
                             WHERE e.webhook_id = d.webhook_id AND e.order_key = d.order_key \
                               AND e.state = 'pending' AND e.seq < d.seq) \
           ORDER BY d.next_attempt_at, d.seq LIMIT $1 FOR UPDATE OF d SKIP LOCKED), \
         claimed AS ( \
           UPDATE webhook_deliveries d SET attempts = d.attempts + 1, \
             lease_until = now() + make_interval(secs => $2) \
           FROM due WHERE d.id = due.id \
           RETURNING d.id, d.webhook_id, d.payload, d.attempts, d.created_at) \
         SELECT c.id, c.webhook_id, w.url, w.secret, \
           CASE WHEN w.previous_secret_until > now() THEN w.previous_secret END AS previous_secret, \
           c.payload, c.attempts, c.created_at \
         FROM claimed c JOIN webhooks w ON w.id = c.webhook_id",
    )
    .bind(limit)
    .bind(lease_seconds)
    .fetch_all(conn)
    .await
}

/// How one attempt went.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub started_at: DateTime<Utc>,
    pub duration_ms: i64,
    pub status_code: Option<i32>,
    pub error: Option<String>,
}

/// What becomes of the delivery after an attempt.
#[derive(Debug, Clone, Copy)]
pub enum Next {
    Delivered,
    RetryAt(DateTime<Utc>),
    Failed,
}

/// Records the attempt and moves the delivery on, in one transaction (the caller's).
pub async fn finish_attempt(
    conn: &mut PgConnection,
    c: &Claimed,
    replica: ReplicaId,
    r: &AttemptResult,
    next: Next,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO webhook_attempts (delivery_id, attempt, replica_id, started_at, duration_ms, \
         status_code, error) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(c.id)
    .bind(c.attempts)
    .bind(replica)
    .bind(r.started_at)
    .bind(r.duration_ms)
    .bind(r.status_code)
    .bind(&r.error)
    .execute(&mut *conn)
    .await?;
    let (state, at) = match next {
        Next::Delivered => ("delivered", None),
        Next::RetryAt(at) => ("pending", Some(at)),
        Next::Failed => ("failed", None),
    };
    sqlx::query(
        "UPDATE webhook_deliveries SET state = $2, lease_until = NULL, \
         next_attempt_at = COALESCE($3, next_attempt_at), last_error = $4, \
         delivered_at = CASE WHEN $2 = 'delivered' THEN clock_timestamp() END \
         WHERE id = $1",
    )
    .bind(c.id)
    .bind(state)
    .bind(at)
    .bind(&r.error)
    .execute(conn)
    .await?;
    Ok(())
}

/// When the next pending delivery is due (for the worker's sleep).
pub async fn next_due(conn: &mut PgConnection) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT min(next_attempt_at) FROM webhook_deliveries WHERE state = 'pending'",
    )
    .fetch_one(conn)
    .await
}

/// Queues a `webhook.test` delivery to one endpoint (its own line, so it waits for nothing).
pub async fn insert_test(
    conn: &mut PgConnection,
    webhook_id: Uuid,
    tenant_id: Option<TenantId>,
    payload: &str,
) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, webhook_id, tenant_id, event_type, order_key, payload) \
         VALUES ($1, $2, $3, 'webhook.test', 'test:' || $1, $4)",
    )
    .bind(id)
    .bind(webhook_id)
    .bind(tenant_id)
    .bind(payload)
    .execute(&mut *conn)
    .await?;
    sqlx::query("SELECT pg_notify('aex_webhooks', '')")
        .execute(conn)
        .await?;
    Ok(id)
}

/// A delivery and its attempts, as the admin API shows them.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema, sqlx::FromRow)]
#[schema(as = DeliveryResponse)]
pub struct DeliveryRow {
    /// The `webhook-id` header of every attempt.
    pub id: Uuid,
    pub seq: i64,
    pub webhook_id: Uuid,
    pub alert_id: Option<i64>,
    pub event_type: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    #[sqlx(skip)]
    pub attempt_log: Vec<AttemptRow>,
}

/// One attempt to deliver.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema, sqlx::FromRow)]
#[schema(as = DeliveryAttempt)]
pub struct AttemptRow {
    #[serde(skip)]
    pub delivery_id: Uuid,
    pub attempt: i32,
    pub replica_id: Option<Uuid>,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i64,
    /// The receiver's status; `null` when none came (refused, timed out).
    pub status_code: Option<i32>,
    pub error: Option<String>,
}

/// Makes the caller's transaction read one snapshot (REPEATABLE READ; its first statement):
/// [`list_deliveries`] reads the deliveries and their attempts in two statements, and under
/// READ COMMITTED an attempt finished between them showed up beside the state it replaced
/// (`pending` with a successful attempt logged).
pub async fn one_snapshot(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(conn)
        .await?;
    Ok(())
}

/// An endpoint's deliveries, newest first (`before`: keyset paging on `seq`), with attempts.
pub async fn list_deliveries(
    conn: &mut PgConnection,
    webhook_id: Uuid,
    only: Option<Uuid>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    let mut rows: Vec<DeliveryRow> = sqlx::query_as(
        "SELECT id, seq, webhook_id, alert_id, event_type, state, attempts, next_attempt_at, \
         last_error, created_at, delivered_at FROM webhook_deliveries \
         WHERE webhook_id = $1 AND ($2::uuid IS NULL OR id = $2) \
           AND ($3::bigint IS NULL OR seq < $3) ORDER BY seq DESC LIMIT $4",
    )
    .bind(webhook_id)
    .bind(only)
    .bind(before)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let ids: Vec<Uuid> = rows.iter().map(|d| d.id).collect();
    let attempts: Vec<AttemptRow> = sqlx::query_as(
        "SELECT delivery_id, attempt, replica_id, started_at, duration_ms, status_code, error \
         FROM webhook_attempts WHERE delivery_id = ANY ($1) ORDER BY id",
    )
    .bind(&ids)
    .fetch_all(conn)
    .await?;
    for a in attempts {
        if let Some(d) = rows.iter_mut().find(|d| d.id == a.delivery_id) {
            d.attempt_log.push(a);
        }
    }
    Ok(rows)
}
