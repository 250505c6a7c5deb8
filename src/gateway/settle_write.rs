//! Writing one settlement: a transaction of two statements (`store::settlements`). The first
//! settles the hold exactly once and reads the agent chain's tail under the chain's lock; the
//! settlement's ledger event is then built and hashed here, in the replica (`ledger::link`), and
//! the second statement appends it with its projected fact. Postgres no longer encodes or hashes.

use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};

use crate::ledger::encoding::canonical_json;
use crate::ledger::link::{self, AgentChainFacts, ChainTail};
use crate::store::settlements::{self, Opened, SettledEvent, SettledHold, Settlement};

/// Settles the attempt `s` describes; `None` when its reservation was settled before (nothing
/// is written).
pub async fn settle(
    conn: &mut PgConnection,
    s: &Settlement<'_>,
) -> Result<Option<SettledHold>, sqlx::Error> {
    let started = std::time::Instant::now();
    let mut tx = conn.begin().await?;
    let Some(opened) = settlements::open(&mut tx, s).await? else {
        tx.rollback().await?;
        return Ok(None);
    };
    let actual = s.charge.as_ref().map(|c| c.actual_micro_usd);
    let payload = canonical_json(&with_hold_facts(&s.payload, &opened, actual));
    let facts = AgentChainFacts {
        chain_id: s.chain_id,
        tenant_id: s.tenant_id,
        agent_id: s.agent_id,
        execution_id: Some(s.execution_key),
        ts: link::now_micros(),
    };
    let mut tail = ChainTail {
        seq: opened.tail_seq,
        hash: opened.tail_hash.clone(),
    };
    let event = tail.link(&facts, s.event_type, payload);
    settlements::record(
        &mut tx,
        s,
        &SettledEvent {
            seq: event.seq,
            prev_hash: &event.prev_hash,
            event_hash: &event.event_hash,
            ts: facts.ts,
            payload: &event.payload,
        },
    )
    .await?;
    tx.commit().await?;
    crate::metrics::observe_ledger_append(started.elapsed());
    Ok(Some(opened.hold))
}

/// The caller's payload with the facts of the settled hold, as `aex_settle` added them: the
/// estimate held and whether it counted against the tenant's budget and, for a commit, the cost
/// above the hold and whether the agent's budget is now overrun. An overrun is recorded and
/// flagged, never dropped.
fn with_hold_facts(payload: &Value, o: &Opened, actual: Option<i64>) -> Value {
    let mut payload = payload.clone();
    if let Some(fields) = payload.as_object_mut() {
        let estimate = o.hold.estimate_micro_usd;
        fields.insert("estimate_micro_usd".into(), json!(estimate));
        fields.insert("holds_tenant".into(), json!(o.holds_tenant));
        if let Some(actual) = actual {
            let overrun = (i128::from(actual) - i128::from(estimate)).max(0);
            let overrun = i64::try_from(overrun).unwrap_or(i64::MAX);
            fields.insert("overrun_micro_usd".into(), json!(overrun));
            fields.insert(
                "budget_overrun".into(),
                json!(o.hold.remaining_micro_usd < 0),
            );
        }
    }
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opened(estimate: i64, remaining: i64) -> Opened {
        Opened {
            hold: SettledHold {
                estimate_micro_usd: estimate,
                remaining_micro_usd: remaining,
            },
            holds_tenant: false,
            tail_seq: 3,
            tail_hash: "h".into(),
        }
    }

    #[test]
    fn the_hold_facts_are_added_as_aex_settle_added_them() {
        let payload = json!({"attempt": 1, "usage": "reported"});
        let commit = with_hold_facts(&payload, &opened(14, -3), Some(20));
        assert_eq!(
            canonical_json(&commit),
            r#"{"attempt":1,"budget_overrun":true,"estimate_micro_usd":14,"holds_tenant":false,"overrun_micro_usd":6,"usage":"reported"}"#
        );
        let release = with_hold_facts(&payload, &opened(14, 100), None);
        assert_eq!(
            canonical_json(&release),
            r#"{"attempt":1,"estimate_micro_usd":14,"holds_tenant":false,"usage":"reported"}"#
        );
        // The most negative cost and the largest hold cannot overflow the overrun.
        let extreme = with_hold_facts(&payload, &opened(i64::MAX, 0), Some(i64::MIN));
        assert_eq!(extreme["overrun_micro_usd"], 0);
    }
}
