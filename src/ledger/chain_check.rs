//! The verification of one chain, event by event in sequence order: each event must follow the
//! one before it (next seq, `prev_hash` = its hash), hash to its stored hash, and agree with the
//! head the latest checkpoint recorded; the chain must reach that head. The state is one event
//! (the last good one), whatever the chain's length.

use serde::Serialize;

use super::checkpoint::Head;
use super::encoding::EventHeader;
use super::encoding::{event_digest, hash_is, GENESIS_HASH};
use crate::store::chain_events::EventRef;

/// The first event that failed verification.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BadEvent {
    /// The event's id (for a truncated chain: its last remaining event; 0 if none is left).
    pub id: i64,
    pub chain_id: String,
    pub seq: i64,
    pub problem: String,
}

/// What is wrong with `event` given the event before it in its chain, if anything.
pub(crate) fn check(event: &EventRef<'_>, last_seq: i64, last_hash: &str) -> Option<String> {
    if event.seq != last_seq + 1 {
        return Some(format!(
            "sequence gap: expected seq {} after {}, found {}",
            last_seq + 1,
            last_seq,
            event.seq
        ));
    }
    if event.prev_hash != last_hash {
        return Some("prev_hash does not match the hash of the previous event".to_owned());
    }
    check_contents(event)
}

/// The hashed fields of an event other than the payload.
fn header<'r>(e: &EventRef<'r>) -> EventHeader<'r> {
    EventHeader {
        chain_id: e.chain_id,
        seq: e.seq,
        prev_hash: e.prev_hash,
        event_type: e.event_type,
        tenant_id: e.tenant_id,
        agent_id: e.agent_id,
        execution_id: e.execution_id,
        ts: e.ts,
    }
}

/// Whether the stored hash is the hash of the event's contents.
fn check_contents(event: &EventRef<'_>) -> Option<String> {
    let digest = event_digest(&header(event), event.payload);
    (!hash_is(event.event_hash, &digest))
        .then(|| "event_hash does not match the event's contents (edited)".to_owned())
}

/// One chain's state: its last good event and what the checkpoint recorded of it.
#[derive(Debug)]
pub(crate) struct ChainCheck {
    last_id: i64,
    last_seq: i64,
    /// The hash the next event must link to; reused, so following a chain does not allocate.
    last_hash: String,
    /// A partial walk starts at the checkpointed head itself, whose predecessor is not read.
    at_anchor: bool,
    /// The head the latest checkpoint recorded for this chain.
    head: Option<Head>,
    /// The checkpoint's id, for the messages.
    checkpoint: i64,
}

impl ChainCheck {
    /// A chain read from its first event.
    pub(crate) fn from_genesis(head: Option<Head>, checkpoint: i64) -> Self {
        ChainCheck {
            last_id: 0,
            last_seq: 0,
            last_hash: GENESIS_HASH.to_owned(),
            at_anchor: false,
            head,
            checkpoint,
        }
    }

    /// A chain read from its checkpointed head on (the startup gate's partial walk).
    pub(crate) fn from_anchor(head: Head, checkpoint: i64) -> Self {
        ChainCheck {
            last_id: 0,
            last_seq: head.seq - 1,
            last_hash: String::new(),
            at_anchor: true,
            head: Some(head),
            checkpoint,
        }
    }

    /// Checks the next event of the chain; the problem, if any (the state then stays put).
    pub(crate) fn event(&mut self, event: &EventRef<'_>) -> Option<String> {
        let problem = match &self.head {
            // The anchor of a partial walk: only its hash is compared, with the checkpoint's.
            Some(h) if self.at_anchor && event.seq == h.seq => {
                if event.event_hash != h.hash {
                    Some(format!("differs from checkpoint {}", self.checkpoint))
                } else {
                    check_contents(event)
                }
            }
            _ => check(event, self.last_seq, &self.last_hash),
        };
        let problem = problem.or_else(|| match &self.head {
            Some(h) if h.seq == event.seq && h.hash != event.event_hash => Some(format!(
                "differs from the hash recorded by checkpoint {}",
                self.checkpoint
            )),
            _ => None,
        });
        if problem.is_none() {
            self.last_id = event.id;
            self.last_seq = event.seq;
            self.last_hash.clear();
            self.last_hash.push_str(event.event_hash);
            self.at_anchor = false;
        }
        problem
    }

    /// After the chain's last event: it must reach its checkpointed head.
    pub(crate) fn finish(&self, chain: &str) -> Option<BadEvent> {
        let head = self.head.as_ref()?;
        (self.last_seq < head.seq).then(|| BadEvent {
            id: self.last_id,
            chain_id: chain.to_owned(),
            seq: self.last_seq,
            problem: format!(
                "the chain ends at seq {} but checkpoint {} recorded seq {}: its tail was removed",
                self.last_seq, self.checkpoint, head.seq
            ),
        })
    }
}

/// A chain the checkpoint recorded and the table no longer has.
pub(crate) fn missing_chain(chain: &str, head: &Head, checkpoint: i64) -> BadEvent {
    BadEvent {
        id: 0,
        chain_id: chain.to_owned(),
        seq: 0,
        problem: format!(
            "the whole chain is missing; checkpoint {checkpoint} recorded it at seq {}",
            head.seq
        ),
    }
}
