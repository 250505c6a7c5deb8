//! Hashing events in the replica (issue 17): admission and settlement read their agent chain's
//! tail under the chain's advisory lock (`aex_lock_agent_chain`, `aex_settle_books`), link their
//! events to it here with the canonical encoding v1, and Postgres only inserts the rows. The verifier recomputes every hash
//! from the stored fields, so what is computed here is checked exactly as before.

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{json, Map, Value};

use super::encoding::{canonical_json, event_hash, EventHeader};
use crate::domain::{AgentId, TenantId};
use crate::store::settlements::{SettledBooks, Settlement, SettlementEvent};

/// A chain's last event as read under its advisory lock: what the next event links to (seq 0 and
/// the genesis hash for an empty chain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainTail {
    pub seq: i64,
    pub hash: String,
}

/// An event linked to its chain: the fields the hash covers beside the header's constants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedEvent {
    pub seq: i64,
    pub prev_hash: String,
    pub event_hash: String,
    pub payload: String,
}

/// Who an agent-chain event is about and when it happened; shared by the events one
/// transaction appends.
#[derive(Debug, Clone, Copy)]
pub struct AgentChainFacts<'a> {
    pub chain_id: &'a str,
    pub tenant_id: TenantId,
    pub agent_id: AgentId,
    pub execution_id: Option<&'a str>,
    /// Microseconds, the precision Postgres stores: the hash covers the stored value.
    pub ts: DateTime<Utc>,
}

/// Now, at the precision Postgres stores a timestamp.
pub fn now_micros() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

impl ChainTail {
    /// Links the next event (`payload` in canonical form) after this tail, which then points at it.
    pub fn link(
        &mut self,
        facts: &AgentChainFacts<'_>,
        event_type: &str,
        payload: String,
    ) -> LinkedEvent {
        let seq = self.seq + 1;
        let hash = event_hash(
            &EventHeader {
                chain_id: facts.chain_id,
                seq,
                prev_hash: &self.hash,
                event_type,
                tenant_id: Some(facts.tenant_id.0),
                agent_id: Some(facts.agent_id.0),
                execution_id: facts.execution_id,
                ts: facts.ts,
            },
            &payload,
        );
        let prev_hash = std::mem::replace(&mut self.hash, hash.clone());
        self.seq = seq;
        LinkedEvent {
            seq,
            prev_hash,
            event_hash: hash,
            payload,
        }
    }
}

/// A settlement's event (`store::settlements::settle`), linked after the tail its transaction
/// read under the chain's lock, now: the settlement's payload with the facts of the hold.
pub fn settlement_event(s: &Settlement<'_>, books: &SettledBooks) -> SettlementEvent {
    let mut tail = ChainTail {
        seq: books.tail_seq,
        hash: books.tail_hash.clone(),
    };
    let facts = AgentChainFacts {
        chain_id: s.chain_id,
        tenant_id: s.tenant_id,
        agent_id: s.agent_id,
        execution_id: Some(s.execution_key),
        ts: now_micros(),
    };
    let actual = s.charge.as_ref().map(|c| c.actual_micro_usd);
    let payload = with_hold_facts(&s.payload, actual, books);
    let event = tail.link(&facts, s.event_type, canonical_json(&payload));
    SettlementEvent {
        seq: event.seq,
        prev_hash: event.prev_hash,
        event_hash: event.event_hash,
        payload: event.payload,
        ts: facts.ts,
    }
}

/// The caller's payload fields and the facts of the hold (which win), as `aex_settle` merged them
/// in SQL before: the hold, whether it held the tenant and, for a charge, the overrun over the
/// hold and whether the agent's budget is now overrun.
fn with_hold_facts(payload: &Value, actual: Option<i64>, books: &SettledBooks) -> Value {
    let held = books.held;
    let mut merged: Map<String, Value> = payload.as_object().cloned().unwrap_or_default();
    merged.insert("estimate_micro_usd".into(), json!(held.estimate_micro_usd));
    merged.insert("holds_tenant".into(), json!(books.holds_tenant));
    if let Some(actual) = actual {
        let overrun = actual.saturating_sub(held.estimate_micro_usd).max(0);
        merged.insert("overrun_micro_usd".into(), json!(overrun));
        merged.insert("budget_overrun".into(), json!(held.remaining_micro_usd < 0));
    }
    Value::Object(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::GENESIS_HASH;
    use chrono::TimeZone;
    use uuid::Uuid;

    #[test]
    fn linked_events_chain_from_the_tail_and_hash_as_the_verifier_does() {
        let (tenant, agent) = (TenantId(Uuid::from_u128(1)), AgentId(Uuid::from_u128(2)));
        let chain = format!("agent:{agent}");
        let ts = Utc.with_ymd_and_hms(2026, 12, 6, 12, 0, 0).unwrap();
        let facts = AgentChainFacts {
            chain_id: &chain,
            tenant_id: tenant,
            agent_id: agent,
            execution_id: Some("k"),
            ts,
        };
        let mut tail = ChainTail {
            seq: 0,
            hash: GENESIS_HASH.to_owned(),
        };
        let first = tail.link(&facts, "reservation.reserved", "{\"a\":1}".into());
        let second = tail.link(&facts, "execution.dispatched", "{}".into());
        assert_eq!((first.seq, first.prev_hash.as_str()), (1, GENESIS_HASH));
        assert_eq!((second.seq, &second.prev_hash), (2, &first.event_hash));
        assert_eq!(tail.hash, second.event_hash);
        let header = EventHeader {
            chain_id: &chain,
            seq: 2,
            prev_hash: &first.event_hash,
            event_type: "execution.dispatched",
            tenant_id: Some(tenant.0),
            agent_id: Some(agent.0),
            execution_id: Some("k"),
            ts,
        };
        assert_eq!(second.event_hash, event_hash(&header, "{}"));
        assert_eq!(now_micros().timestamp_subsec_nanos() % 1000, 0);
    }

    #[test]
    fn the_facts_of_the_hold_win_and_a_release_has_no_overrun() {
        use crate::store::settlements::SettledHold;
        let books = SettledBooks {
            held: SettledHold {
                estimate_micro_usd: 10,
                remaining_micro_usd: -3,
            },
            holds_tenant: true,
            tail_seq: 0,
            tail_hash: GENESIS_HASH.to_owned(),
        };
        let payload = json!({"attempt": 1, "holds_tenant": "caller", "usage": "reported"});
        assert_eq!(
            canonical_json(&with_hold_facts(&payload, Some(14), &books)),
            r#"{"attempt":1,"budget_overrun":true,"estimate_micro_usd":10,"holds_tenant":true,"overrun_micro_usd":4,"usage":"reported"}"#
        );
        let released = SettledBooks {
            holds_tenant: false,
            ..books.clone()
        };
        assert_eq!(
            canonical_json(&with_hold_facts(&payload, None, &released)),
            r#"{"attempt":1,"estimate_micro_usd":10,"holds_tenant":false,"usage":"reported"}"#
        );
        assert_eq!(
            with_hold_facts(&payload, Some(4), &books)["overrun_micro_usd"],
            0
        );
    }
}
