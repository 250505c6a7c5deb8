//! What one outcome writes: the execution's terminal state, the charge, the cached answer, the
//! ledger event's payload — one builder per outcome, on the facts of the attempt they settle.

use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::outcome::{overrun_kind, Ambiguous, Answer, Commit, Outcome, Release, UsageSource};
use crate::domain::{AgentId, ExecutionState, TenantId};
use crate::gateway::call_types::Hold;
use crate::gateway::pricing::{input_tokens, Pricing};
use crate::gateway::rate_limit;
use crate::ledger::fold::types;
use crate::ledger::{self, ChainId};
use crate::providers::Usage;
use crate::store::executions::ExecutionRow;
use crate::store::settlements::{Charge, Predicted, Settlement};

/// The attempt a settlement writes for, and whose books: from the hold of an attempt this
/// replica dispatched, or from the execution row of a lost replica's.
pub(super) struct Booking<'a> {
    execution_id: Uuid,
    execution_key: &'a str,
    attempt: i32,
    tenant_id: TenantId,
    agent_id: AgentId,
    /// The alias the execution was admitted under (a release records it).
    model_alias: &'a str,
    chain_id: String,
    /// What the settlement expects to find, when the hold is this replica's own.
    predicted: Option<Predicted>,
}

impl<'a> Booking<'a> {
    pub(super) fn of_hold(hold: &'a Hold) -> Self {
        Booking {
            predicted: Some(Predicted {
                estimate_micro_usd: hold.held.0,
                holds_tenant: hold.holds_tenant,
                tail_seq: hold.chain_tail.seq,
                tail_hash: hold.chain_tail.hash.clone(),
            }),
            ..Self::new(
                (hold.execution_id, &hold.execution_key, hold.attempt),
                (hold.tenant_id, hold.agent_id),
                &hold.model_alias,
            )
        }
    }

    pub(super) fn of_row(e: &'a ExecutionRow) -> Self {
        Self::new(
            (e.id, &e.execution_key, e.attempt),
            (e.tenant_id, e.agent_id),
            e.model_alias.as_deref().unwrap_or_default(),
        )
    }

    fn new(
        (execution_id, execution_key, attempt): (Uuid, &'a str, i32),
        (tenant_id, agent_id): (TenantId, AgentId),
        model_alias: &'a str,
    ) -> Self {
        Booking {
            execution_id,
            execution_key,
            attempt,
            tenant_id,
            agent_id,
            model_alias,
            chain_id: ChainId::Agent(agent_id).to_string(),
            predicted: None,
        }
    }
}

/// A settlement ready to write, with what the metrics and the logs say of it.
pub(super) struct Written<'a> {
    pub settlement: Settlement<'a>,
    /// The outcome as telemetry names it: `committed`, or the reason.
    pub outcome: &'a str,
    /// For the metrics: the result label and whether the cost went over the hold.
    pub label: &'static str,
    pub over_hold: bool,
}

/// The part of a settlement one outcome decides.
struct Decided<'a> {
    state: &'static str,
    reason: Option<&'a str>,
    charge: Option<Charge<'a>>,
    answer: Option<&'a Answer>,
    event_type: &'static str,
    payload: Value,
    model_alias: &'a str,
    label: &'static str,
    over_hold: bool,
}

impl<'a> Booking<'a> {
    fn written(&'a self, outcome: &'a str, d: Decided<'a>) -> Written<'a> {
        let settlement = Settlement {
            execution_id: self.execution_id,
            attempt: self.attempt,
            tenant_id: self.tenant_id,
            agent_id: self.agent_id,
            execution_key: self.execution_key,
            chain_id: &self.chain_id,
            chain_lock_key: ledger::chain_lock_key(&self.chain_id),
            state: d.state,
            reason: d.reason,
            charge: d.charge,
            result: d
                .answer
                .map(|(status, body, sse)| (*status, body.as_ref(), *sse)),
            event_type: d.event_type,
            payload: d.payload,
            model_alias: d.model_alias,
            rate_subjects: [
                rate_limit::agent_subject(self.agent_id),
                rate_limit::tenant_subject(self.tenant_id),
            ],
            predicted: self.predicted.clone(),
        };
        Written {
            settlement,
            outcome,
            label: d.label,
            over_hold: d.over_hold,
        }
    }
}

/// What settling `outcome` for `b`, which holds `held` micro-USD priced by `pricing`, writes.
pub(super) fn written<'a>(
    b: &'a Booking<'a>,
    held: i64,
    pricing: Pricing<'a>,
    outcome: &'a Outcome<'a>,
) -> Written<'a> {
    match outcome {
        Outcome::Commit(c) => b.written("committed", committed(b, held, pricing, c)),
        Outcome::Ambiguous(a) => b.written(a.reason, ambiguous(b, held, pricing, a)),
        Outcome::Release(r) => released(b, r),
    }
}

/// A release: it prices nothing, so it needs nothing but the attempt (the reconciler's entry).
pub(super) fn released<'a>(b: &'a Booking<'a>, r: &'a Release<'a>) -> Written<'a> {
    let decided = Decided {
        state: r.state.as_str(),
        reason: Some(r.reason),
        charge: None,
        answer: r.result.as_ref(),
        event_type: types::RELEASED,
        payload: json!({
            "attempt": b.attempt,
            "reason": r.reason,
            "execution_state": r.state.as_str(),
            "upstream_status": r.upstream_status,
        }),
        model_alias: b.model_alias,
        label: "released",
        over_hold: false,
    };
    b.written(r.reason, decided)
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn committed<'a>(
    b: &Booking<'_>,
    held: i64,
    pricing: Pricing<'a>,
    c: &'a Commit<'a>,
) -> Decided<'a> {
    let (actual, saturated) = pricing.cost(c.usage);
    let overrun = (actual > held).then(|| match pricing {
        // More units than held, as the provider reported them, is the provider's.
        Pricing::Metered(m) if c.source == UsageSource::Reported && m.units > m.units_bound => {
            "provider"
        }
        _ => overrun_kind(c),
    });
    let usage = &c.usage;
    let mut payload = json!({
        "attempt": b.attempt,
        "model": pricing.label(),
        "provider": c.provider,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "completion_cap": c.completion_cap,
        "cached_tokens": usage.cached_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "hosted_tool_calls": usage.hosted_calls.total(),
        "hosted_tool_calls_bound": c.hosted_calls_bound,
        "usage": c.source.as_str(),
        "actual_micro_usd": actual,
        "overrun": overrun,
        "cost_saturated": saturated,
        "stream_end": c.stream.map(|s| s.0),
        "stream_events": c.stream.map(|s| s.1),
    });
    if let Some(p) = payload.as_object_mut() {
        p.extend(billed(pricing, *usage));
    }
    Decided {
        state: ExecutionState::Committed.as_str(),
        reason: None,
        charge: Some(Charge {
            actual_micro_usd: actual,
            prompt_tokens: Some(to_i64(usage.prompt_tokens)),
            completion_tokens: Some(to_i64(usage.completion_tokens)),
            usage_source: c.source.as_str(),
            latency_ms: c.latency_ms,
        }),
        answer: c.result.as_ref(),
        event_type: types::COMMITTED,
        payload,
        model_alias: pricing.label(),
        label: "committed",
        over_hold: overrun.is_some(),
    }
}

/// The units a commit bills, each at its own price, as flat fields of the ledger event
/// (settlement has always written flat payloads). By tokens: input tokens at the input price, cached input
/// and cache writes at theirs, output tokens, and `billed_<tool>_calls` for each hosted tool
/// called. Metered: the unit, the units billed and held, the price entry. A fixed price: none.
fn billed(pricing: Pricing<'_>, usage: Usage) -> Map<String, Value> {
    let mut units = Map::new();
    match pricing {
        Pricing::Tokens { .. } => {
            let (input, cached, cache_write) = input_tokens(usage).split();
            for (unit, n) in [
                ("input_tokens", input),
                ("cached_input_tokens", cached),
                ("cache_write_tokens", cache_write),
                ("output_tokens", usage.completion_tokens),
            ] {
                units.insert(format!("billed_{unit}"), json!(n));
            }
            for (tool, n) in usage.hosted_calls.iter() {
                units.insert(format!("billed_{tool}_calls"), json!(n));
            }
        }
        Pricing::Metered(m) => {
            units.insert("unit".into(), json!(m.unit));
            units.insert("billed_units".into(), json!(m.units));
            units.insert("units_bound".into(), json!(m.units_bound));
            units.insert("unit_price".into(), json!(m.price));
        }
        Pricing::Fixed { .. } => {}
    }
    units
}

fn ambiguous<'a>(
    b: &Booking<'_>,
    held: i64,
    pricing: Pricing<'a>,
    a: &'a Ambiguous<'a>,
) -> Decided<'a> {
    let usage = UsageSource::Ambiguous.as_str();
    Decided {
        state: ExecutionState::Failed.as_str(),
        reason: Some(a.reason),
        charge: Some(Charge {
            actual_micro_usd: held,
            prompt_tokens: None,
            completion_tokens: None,
            usage_source: usage,
            latency_ms: a.latency_ms,
        }),
        answer: a.result.as_ref(),
        event_type: types::COMMITTED,
        payload: json!({
            "attempt": b.attempt,
            "model": pricing.label(),
            "provider": a.provider,
            "usage": usage,
            "actual_micro_usd": held,
            "reason": a.reason,
            "execution_state": ExecutionState::Failed.as_str(),
            "stream_end": a.stream.map(|s| s.0),
            "stream_events": a.stream.map(|s| s.1),
        }),
        model_alias: pricing.label(),
        label: "ambiguous",
        over_hold: false,
    }
}
