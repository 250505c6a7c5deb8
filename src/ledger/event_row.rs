//! A ledger event as the verifiers read it: every hashed field, plus its id. [`EventRef`]
//! borrows its text from the database row, so that walking a million events decodes them without
//! allocating; [`EventRow`] owns it, for callers that keep rows.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::Row;
use uuid::Uuid;

use super::encoding::EventHeader;

/// The columns both types read, in the order [`EventRef::from_row`] expects them, for `concat!`
/// so that the SQL stays a static string.
macro_rules! select_events {
    () => {
        "SELECT id, chain_id, seq, prev_hash, event_hash, event_type, tenant_id, agent_id, \
         execution_id, ts, payload FROM event_log"
    };
}
pub(crate) use select_events;

/// One event, borrowed from its row.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventRef<'r> {
    pub(crate) id: i64,
    pub(crate) chain_id: &'r str,
    pub(crate) seq: i64,
    pub(crate) prev_hash: &'r str,
    pub(crate) event_hash: &'r str,
    pub(crate) event_type: &'r str,
    pub(crate) tenant_id: Option<Uuid>,
    pub(crate) agent_id: Option<Uuid>,
    pub(crate) execution_id: Option<&'r str>,
    pub(crate) ts: DateTime<Utc>,
    pub(crate) payload: &'r str,
}

impl<'r> EventRef<'r> {
    /// Reads a row of [`select_events!`] by position (by name costs a lookup per column).
    pub(crate) fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
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

    /// The hashed fields other than the payload.
    pub(crate) fn header(&self) -> EventHeader<'r> {
        EventHeader {
            chain_id: self.chain_id,
            seq: self.seq,
            prev_hash: self.prev_hash,
            event_type: self.event_type,
            tenant_id: self.tenant_id,
            agent_id: self.agent_id,
            execution_id: self.execution_id,
            ts: self.ts,
        }
    }
}

/// One event, owned.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct EventRow {
    pub(crate) id: i64,
    pub(crate) chain_id: String,
    pub(crate) seq: i64,
    pub(crate) prev_hash: String,
    pub(crate) event_hash: String,
    pub(crate) event_type: String,
    pub(crate) tenant_id: Option<Uuid>,
    pub(crate) agent_id: Option<Uuid>,
    pub(crate) execution_id: Option<String>,
    pub(crate) ts: DateTime<Utc>,
    pub(crate) payload: String,
}

impl EventRow {
    pub(crate) fn view(&self) -> EventRef<'_> {
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
