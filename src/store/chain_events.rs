//! The ledger's chains in `event_log`: one event appended through `aex_append_event`, and the
//! reads of the verifiers, the fold, the export and anchoring: every hashed field of an event,
//! plus its id. [`EventRef`] borrows its text from the database row, so
//! that walking a million events decodes them without allocating; [`EventRow`] owns it, for
//! callers that keep rows. (What an event is and its chain lock are `ledger::append`'s; the admin
//! API's listing is `event_log`.)

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use super::checkpoints::Head;
use crate::domain::{AgentId, TenantId};

/// The columns both types read, in the order [`EventRef::from_row`] expects them, for `concat!`
/// so that the SQL stays a static string.
macro_rules! select_events {
    () => {
        "SELECT id, chain_id, seq, prev_hash, event_hash, event_type, tenant_id, agent_id, \
         execution_id, ts, payload FROM event_log"
    };
}

/// An event to append, its payload already in canonical form.
#[derive(Debug, Clone)]
pub struct NewChainEvent<'a> {
    pub chain_id: &'a str,
    /// The advisory-lock key of the chain's tail.
    pub lock_key: i64,
    pub event_type: &'a str,
    pub tenant_id: Option<TenantId>,
    pub agent_id: Option<AgentId>,
    pub execution_id: Option<&'a str>,
    pub payload: &'a str,
}

/// Appends an event in the caller's transaction: one round trip to the `aex_append_event`
/// function, which takes the chain's advisory lock, reads the tail, hashes with the canonical
/// encoding and inserts (see the migration that defines it). Returns `(id, seq, event_hash)`.
pub async fn append(
    conn: &mut PgConnection,
    e: &NewChainEvent<'_>,
) -> Result<(i64, i64, String), sqlx::Error> {
    sqlx::query_as("SELECT id, seq, event_hash FROM aex_append_event($1, $2, $3, $4, $5, $6, $7)")
        .bind(e.chain_id)
        .bind(e.lock_key)
        .bind(e.event_type)
        .bind(e.tenant_id)
        .bind(e.agent_id)
        .bind(e.execution_id)
        .bind(e.payload)
        .fetch_one(conn)
        .await
}

/// Rows of [`select_events!`], streamed; decode each with [`EventRef::from_row`].
pub type EventRows<'a> = BoxStream<'a, Result<PgRow, sqlx::Error>>;

/// One event, borrowed from its row.
#[derive(Debug, Clone, Copy)]
pub struct EventRef<'r> {
    pub id: i64,
    pub chain_id: &'r str,
    pub seq: i64,
    pub prev_hash: &'r str,
    pub event_hash: &'r str,
    pub event_type: &'r str,
    pub tenant_id: Option<Uuid>,
    pub agent_id: Option<Uuid>,
    pub execution_id: Option<&'r str>,
    pub ts: DateTime<Utc>,
    pub payload: &'r str,
}

impl<'r> EventRef<'r> {
    /// Reads a row of [`select_events!`] by position (by name costs a lookup per column).
    pub fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        Ok(EventRef {
            id: row.try_get(0)?,
            chain_id: row.try_get(1)?,
            seq: row.try_get(2)?,
            prev_hash: row.try_get(3)?,
            event_hash: row.try_get(4)?,
            event_type: row.try_get(5)?,
            tenant_id: row.try_get(6)?,
            agent_id: row.try_get(7)?,
            execution_id: row.try_get(8)?,
            ts: row.try_get(9)?,
            payload: row.try_get(10)?,
        })
    }
}

/// One event, owned.
#[derive(Debug, sqlx::FromRow)]
pub struct EventRow {
    pub id: i64,
    pub chain_id: String,
    pub seq: i64,
    pub prev_hash: String,
    pub event_hash: String,
    pub event_type: String,
    pub tenant_id: Option<Uuid>,
    pub agent_id: Option<Uuid>,
    pub execution_id: Option<String>,
    pub ts: DateTime<Utc>,
    pub payload: String,
}

impl EventRow {
    pub fn view(&self) -> EventRef<'_> {
        EventRef {
            id: self.id,
            chain_id: &self.chain_id,
            seq: self.seq,
            prev_hash: &self.prev_hash,
            event_hash: &self.event_hash,
            event_type: &self.event_type,
            tenant_id: self.tenant_id,
            agent_id: self.agent_id,
            execution_id: self.execution_id.as_deref(),
            ts: self.ts,
            payload: &self.payload,
        }
    }
}

/// Every event in id (append) order: the order rows sit in on disk.
pub fn all_by_id(pool: &PgPool) -> EventRows<'_> {
    sqlx::query(concat!(select_events!(), " ORDER BY id")).fetch(pool)
}

/// The events of the chains named, in id order.
pub fn chains_by_id<'a>(pool: &'a PgPool, chains: &'a [String]) -> EventRows<'a> {
    sqlx::query(concat!(
        select_events!(),
        " WHERE chain_id = ANY($1) ORDER BY id"
    ))
    .bind(chains)
    .fetch(pool)
}

/// One chain in sequence order.
pub fn chain_by_seq<'a>(pool: &'a PgPool, chain: &'a str) -> EventRows<'a> {
    sqlx::query(concat!(
        select_events!(),
        " WHERE chain_id = $1 ORDER BY seq"
    ))
    .bind(chain)
    .fetch(pool)
}

/// One chain from `from_seq` on, in sequence order.
pub fn chain_from_seq<'a>(pool: &'a PgPool, chain: &'a str, from_seq: i64) -> EventRows<'a> {
    sqlx::query(concat!(
        select_events!(),
        " WHERE chain_id = $1 AND seq >= $2 ORDER BY seq"
    ))
    .bind(chain)
    .bind(from_seq)
    .fetch(pool)
}

/// Every event in (chain, seq) order, owned.
pub fn all_by_chain(pool: &PgPool) -> BoxStream<'_, Result<EventRow, sqlx::Error>> {
    sqlx::query_as::<_, EventRow>(concat!(select_events!(), " ORDER BY chain_id, seq")).fetch(pool)
}

/// At most `limit` events with an id above `after_id`, in id order, owned: a page of a walk
/// down the primary key. The LIMIT is what keeps the plan an index range scan whatever the
/// statistics say; `id > $1` alone was planned (generic plan, or no statistics) as a whole-table
/// scan and a sort of every event with its payload, every pass. Within a chain, ids rise with
/// seq (its tail lock serialises the appends, each taking its id inside).
pub async fn page_after_id(
    pool: &PgPool,
    after_id: i64,
    limit: i64,
) -> Result<Vec<EventRow>, sqlx::Error> {
    sqlx::query_as::<_, EventRow>(concat!(
        select_events!(),
        " WHERE id > $1 ORDER BY id LIMIT $2"
    ))
    .bind(after_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// A chain's events with `after < seq <= until`, in sequence order.
pub async fn chain_range(
    pool: &PgPool,
    chain: &str,
    after: i64,
    until: i64,
) -> Result<Vec<EventRow>, sqlx::Error> {
    sqlx::query_as::<_, EventRow>(concat!(
        select_events!(),
        " WHERE chain_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq"
    ))
    .bind(chain)
    .bind(after)
    .bind(until)
    .fetch_all(pool)
    .await
}

/// The hash of a chain's event at `seq`, if the event is there.
pub async fn hash_at(pool: &PgPool, chain: &str, seq: i64) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT event_hash FROM event_log WHERE chain_id = $1 AND seq = $2")
        .bind(chain)
        .bind(seq)
        .fetch_optional(pool)
        .await
}

/// A money event as the fold reads it: `(tenant_id, agent_id, event_type, payload)`.
pub type MoneyEvent = (Option<Uuid>, Option<Uuid>, String, String);

/// Every event of the types given, chain by chain in sequence order.
pub fn of_types<'a>(
    pool: &'a PgPool,
    event_types: &'a [&'a str],
) -> BoxStream<'a, Result<MoneyEvent, sqlx::Error>> {
    sqlx::query_as::<_, MoneyEvent>(
        "SELECT tenant_id, agent_id, event_type, payload FROM event_log \
         WHERE event_type = ANY($1) ORDER BY chain_id, seq",
    )
    .bind(event_types)
    .fetch(pool)
}

/// The head of every chain: a skip scan over the (chain_id, seq) index, one probe per chain.
pub async fn current_heads(conn: &mut PgConnection) -> Result<BTreeMap<String, Head>, sqlx::Error> {
    let rows: Vec<(String, i64, String)> = sqlx::query_as(
        "WITH RECURSIVE chains(chain_id) AS ( \
           (SELECT chain_id FROM event_log ORDER BY chain_id LIMIT 1) \
           UNION ALL \
           SELECT (SELECT e.chain_id FROM event_log e WHERE e.chain_id > c.chain_id ORDER BY e.chain_id LIMIT 1) \
           FROM chains c WHERE c.chain_id IS NOT NULL) \
         SELECT c.chain_id, t.seq, t.event_hash FROM chains c \
         CROSS JOIN LATERAL (SELECT seq, event_hash FROM event_log e WHERE e.chain_id = c.chain_id \
                             ORDER BY seq DESC LIMIT 1) t \
         WHERE c.chain_id IS NOT NULL",
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(chain, seq, hash)| (chain, Head { seq, hash }))
        .collect())
}

/// Events of one type and tenant for many chains, column by column in `unnest` order, to go in
/// with one multi-row `INSERT … SELECT FROM unnest(…)` (`aex dev seed-ledger`).
#[derive(Debug, Default)]
pub struct EventColumns {
    pub chain_id: Vec<String>,
    pub seq: Vec<i64>,
    pub prev_hash: Vec<String>,
    pub event_hash: Vec<String>,
    pub agent_id: Vec<Uuid>,
    pub execution_id: Vec<String>,
    pub ts: Vec<DateTime<Utc>>,
    pub payload: Vec<String>,
}

impl EventColumns {
    pub fn len(&self) -> usize {
        self.seq.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seq.is_empty()
    }

    /// Inserts the events and empties the columns.
    pub async fn insert(
        &mut self,
        pool: &PgPool,
        event_type: &str,
        tenant: Uuid,
        encoding: i16,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO event_log (chain_id, seq, prev_hash, event_hash, event_type, tenant_id, \
             agent_id, execution_id, ts, payload, encoding) \
             SELECT c, s, p, h, $11, $9, a, x, t, b, $10 \
             FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::uuid[], \
                         $6::text[], $7::timestamptz[], $8::text[]) AS u(c, s, p, h, a, x, t, b)",
        )
        .bind(&self.chain_id)
        .bind(&self.seq)
        .bind(&self.prev_hash)
        .bind(&self.event_hash)
        .bind(&self.agent_id)
        .bind(&self.execution_id)
        .bind(&self.ts)
        .bind(&self.payload)
        .bind(tenant)
        .bind(encoding)
        .bind(event_type)
        .execute(pool)
        .await?;
        *self = EventColumns::default();
        Ok(())
    }
}
