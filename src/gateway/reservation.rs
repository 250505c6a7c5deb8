//! Reservation (SPEC §5.2): deciding the hold — the worst-case estimate, its output cap lowered
//! to fit the budget when policy allows (`clamp_max_tokens`), or a 402 that says what the bound
//! covers — and holding it: the execution, its reservation and the estimate on the books, with
//! the `reservation.reserved` and `execution.dispatched` events hashed here after the agent
//! chain's tail read under its lock (`store::holds`). The hold is released or committed exactly
//! once, by settlement (`gateway::settlement`).

use serde_json::{json, Value};
use uuid::Uuid;

use super::bound;
use super::call_types::{AttemptRef, Granted, Hold, Reservation};
use super::estimate::Estimate;
use super::policy::EffectivePolicy;
use super::pricing::Pricing;
use super::rate_limit::Quota;
use super::refusal::Refuse;
use super::ticket::Ticket;
use crate::domain::{ExecutionState, ReplicaId};
use crate::ledger::encoding::canonical_json;
use crate::ledger::link::ChainTail;
use crate::ledger::link::{self, AgentChainFacts, LinkedEvent};
use crate::money::MicroUsd;
use crate::store::agents::AgentRow;
use crate::store::executions::NewExecution;
use crate::store::holds::{self, HoldEvents, NewReservation};
use crate::store::tenants::TenantRow;
use sqlx::types::Json;

/// The rows admission holds locked, and the agent chain's tail the hold's events link to.
pub(super) struct Locked {
    /// The tenant's row, locked only when it has a budget or rate limits of its own.
    pub tenant: Option<TenantRow>,
    /// The tenant's default policy as read before locking (the locked row's when there is one).
    pub tenant_policy: Json<serde_json::Value>,
    pub agent: AgentRow,
    pub chain_id: String,
    pub tail: ChainTail,
}

/// What the checks granted: the estimate to hold (its output cap possibly lowered to fit the
/// budget) and the agent's rate-limit quota after this admission.
pub(super) struct Grant {
    pub estimate: Estimate,
    pub clamped: bool,
    pub quota: Quota,
}

/// The budget: the estimate to hold (possibly with a clamped output cap), or a 402 that says the
/// bound, what it covers and the remaining budget.
pub(super) fn decide_budget(
    t: &Ticket<'_>,
    books: &Locked,
    effective: &EffectivePolicy,
    cap: Option<u64>,
    clamp_min_output_tokens: u64,
) -> Result<(Estimate, bool), Box<Refuse>> {
    let estimate = t.pricing.estimate(cap);
    let agent_room = books.agent.remaining_micro_usd();
    let tenant_room = books.tenant.as_ref().and_then(|tn| {
        tn.budget_micro_usd
            .map(|b| b - tn.spent_micro_usd - tn.reserved_micro_usd)
    });
    let room = tenant_room.map_or(agent_room, |tr| tr.min(agent_room));
    if estimate.cost.0 <= room {
        return Ok((estimate, false));
    }
    // clamp_max_tokens: lower the output cap until the worst case over every candidate (every
    // choice at the cap) fits, when that is still a useful answer and the request did not
    // insist on its own cap.
    let affordable = match (
        effective.clamp_max_tokens && t.requested_cap.is_none(),
        t.pricing,
        cap,
    ) {
        (true, Pricing::Tokens { candidates }, Some(c)) => {
            bound::affordable_cap(candidates, MicroUsd(room), c)
        }
        _ => None,
    }
    .filter(|n| *n >= clamp_min_output_tokens);
    match (affordable, cap) {
        (Some(n), Some(c)) if n < c => Ok((t.pricing.estimate(Some(n)), true)),
        _ => {
            let whose = if tenant_room.is_some_and(|tr| tr < agent_room) {
                "tenant"
            } else {
                "agent"
            };
            Err(Refuse::insufficient_budget(format!(
                "insufficient budget: this request is estimated at {} micro-USD, {}, but the {whose} has {} micro-USD remaining",
                estimate.cost.0,
                covers(t, &estimate),
                room.max(0)
            )))
        }
    }
}

/// What a hold covers, for the 402's message.
fn covers(t: &Ticket<'_>, e: &Estimate) -> String {
    let candidates = match t.pricing {
        Pricing::Tokens { candidates } => candidates,
        Pricing::Fixed { .. } => return "the tool's declared cost".to_owned(),
        Pricing::Metered(m) => return m.covers.to_owned(),
    };
    let whom = match candidates.len() {
        1 => "the model".to_owned(),
        n => format!("the dearest of {n} candidate models (fallbacks included)"),
    };
    let output = match e.output_cap {
        Some(cap) => format!(
            " and {} output tokens ({} choice(s) × a cap of {cap}{})",
            e.output_tokens,
            t.choices,
            if e.output_tokens > t.choices.saturating_mul(cap) {
                ", plus predicted output"
            } else {
                ""
            }
        ),
        None => String::new(),
    };
    format!(
        "the most {whom} can bill for {} input tokens{output}",
        e.prompt_tokens
    )
}

/// Holds the grant's estimate for attempt `next`, in the caller's transaction, already
/// DISPATCHED: the execution, its reservation (`rate_tokens` charged to the TPM windows), the
/// books, and the two events linked after the chain tail in `books`.
pub(super) async fn hold(
    conn: &mut sqlx::PgConnection,
    replica_id: ReplicaId,
    t: &Ticket<'_>,
    books: &mut Locked,
    next: AttemptRef,
    grant: Grant,
    rate_tokens: i64,
) -> Result<Reservation, sqlx::Error> {
    let (rows, reservation) = held(replica_id, t, books, next, grant, rate_tokens);
    holds::hold(conn, &rows.execution, &rows.reservation, &rows.events()).await?;
    Ok(reservation)
}

/// The rows of a hold, decided and linked: what `store::holds` (or a batch,
/// `store::hold_batch`) writes.
pub(super) struct HoldRows<'t> {
    pub execution: NewExecution<'t>,
    pub reservation: NewReservation,
    chain_id: String,
    ts: chrono::DateTime<chrono::Utc>,
    prev_hash: String,
    reserved: LinkedEvent,
    dispatched: LinkedEvent,
}

impl HoldRows<'_> {
    pub fn events(&self) -> HoldEvents<'_> {
        HoldEvents {
            chain_id: &self.chain_id,
            ts: self.ts,
            seq: self.reserved.seq,
            prev_hash: &self.prev_hash,
            reserved: (&self.reserved.event_hash, &self.reserved.payload),
            dispatched: (&self.dispatched.event_hash, &self.dispatched.payload),
        }
    }
}

/// The rows of the hold of `grant` for attempt `next` (its events linked after the chain tail in
/// `books`), and the admitted attempt. `books` are left as the hold leaves them — the estimate
/// reserved, one more request, the tail at its second event — so that the next hold of the same
/// agent in one transaction (a batch, `admission::batch`) is decided and linked after it.
pub(super) fn held<'t>(
    replica_id: ReplicaId,
    t: &Ticket<'t>,
    books: &mut Locked,
    next: AttemptRef,
    grant: Grant,
    rate_tokens: i64,
) -> (HoldRows<'t>, Reservation) {
    let holds_tenant = books
        .tenant
        .as_ref()
        .is_some_and(|tn| tn.budget_micro_usd.is_some());
    let facts = AgentChainFacts {
        chain_id: &books.chain_id,
        tenant_id: t.tenant_id,
        agent_id: t.agent_id,
        execution_id: Some(t.key),
        ts: link::now_micros(),
    };
    let prev_hash = books.tail.hash.clone();
    let reserved = reserved_payload(t, next.attempt, &grant, holds_tenant);
    let reserved = books.tail.link(&facts, "reservation.reserved", reserved);
    let dispatched = canonical_json(&dispatched_payload(t, next.attempt, &grant.estimate));
    let dispatched = books.tail.link(&facts, "execution.dispatched", dispatched);
    let rows = HoldRows {
        execution: NewExecution {
            replica_id: Some(replica_id),
            estimate_micro_usd: grant.estimate.cost.0,
            provider: Some(t.target.provider),
            ..t.execution(next, ExecutionState::Dispatched)
        },
        reservation: NewReservation {
            id: Uuid::now_v7(),
            holds_tenant,
            rate_tokens,
        },
        chain_id: books.chain_id.clone(),
        ts: facts.ts,
        prev_hash,
        reserved,
        dispatched,
    };
    let estimate = grant.estimate.cost.0;
    // The tail is now the hold's own `execution.dispatched`: what its settlement will expect.
    let hold_facts = (holds_tenant, books.tail.clone());
    let reservation = reservation(t, &books.agent, next, grant, hold_facts);
    books.agent.reserved_micro_usd = books.agent.reserved_micro_usd.saturating_add(estimate);
    books.agent.requests_total = books.agent.requests_total.saturating_add(1);
    (rows, reservation)
}

/// The `reservation.reserved` payload, in canonical form.
fn reserved_payload(t: &Ticket<'_>, attempt: i32, grant: &Grant, holds_tenant: bool) -> String {
    let estimate = &grant.estimate;
    canonical_json(&json!({
        "attempt": attempt,
        "route": t.route.as_str(),
        "model": t.pricing.label(),
        "estimate_micro_usd": estimate.cost.0,
        "prompt_tokens_estimate": estimate.prompt_tokens,
        "output_cap": estimate.output_cap,
        "output_tokens_bound": estimate.output_tokens,
        "choices": t.choices,
        "clamped": grant.clamped,
        "holds_tenant": holds_tenant,
    }))
}

/// The admitted attempt: the hold only settlement consumes, and what the client is told.
fn reservation(
    t: &Ticket<'_>,
    agent: &AgentRow,
    next: AttemptRef,
    grant: Grant,
    (holds_tenant, chain_tail): (bool, ChainTail),
) -> Reservation {
    let Grant {
        estimate,
        clamped,
        quota,
    } = grant;
    Reservation {
        hold: Hold {
            execution_id: next.execution_id,
            execution_key: t.key.to_owned(),
            attempt: next.attempt,
            tenant_id: t.tenant_id,
            agent_id: t.agent_id,
            model_alias: t.pricing.label().to_owned(),
            held: estimate.cost,
            holds_tenant,
            chain_tail,
        },
        estimate,
        granted: Granted {
            clamped,
            remaining_after: agent.remaining_micro_usd() - estimate.cost.0,
            quota,
        },
    }
}

/// The `execution.dispatched` payload: attempt, provider, what is called and, for a model, the
/// output cap sent upstream.
fn dispatched_payload(t: &Ticket<'_>, attempt: i32, estimate: &Estimate) -> Value {
    let mut payload = json!({"attempt": attempt, "provider": t.target.provider});
    if let (Some(p), Some(d)) = (payload.as_object_mut(), t.target.details.as_object()) {
        p.extend(d.clone());
        if matches!(t.pricing, Pricing::Tokens { .. }) {
            p.insert("output_cap".into(), json!(estimate.output_cap));
            p.insert("output_tokens_bound".into(), json!(estimate.output_tokens));
        }
    }
    payload
}
