//! Admission and reservation (SPEC §5.1–§5.2): one short transaction that locks the tenant (only
//! when it has limits of its own) and then the agent, decides idempotency under that lock, checks
//! lifecycle, policy and budget, and either holds the estimate or records the refusal — with its
//! ledger event in the same transaction either way.
//!
//! An admitted call is sent at once, so the same transaction also moves it `RESERVED ->
//! DISPATCHED` (both ledger events): DISPATCHED is durable before the provider is called, as
//! recovery needs, without a commit of its own. A durable commit is the dearest step of a call,
//! and under one busy agent every commit serialises on the agent's row and chain; the window this
//! gives up (a replica lost between this commit and sending the request is settled as "provider
//! may have done work") is one the reconciler already treats conservatively.

use chrono::{DateTime, Datelike, TimeZone, Utc};
use serde_json::{json, Value};
use sqlx::PgConnection;
use uuid::Uuid;

use super::bound;
use super::call_types::{AttemptRef, Granted, Hold, Reservation, SETTLEMENT_FAILED};
use super::error::openai_error_body;
use super::estimate::Estimate;
use super::policy::{self, Policy, RequestFacts};
use super::pricing::Pricing;
use super::rate_limit::{self, Limits, Quota, Verdict};
use super::{Gateway, GatewayError};
use crate::domain::{AgentId, AgentState, BudgetPeriod, CallRoute, ExecutionState, TenantId};
use crate::ledger::encoding::canonical_json;
use crate::ledger::fold::types;
use crate::ledger::link::{self, AgentChainFacts, ChainTail};
use crate::ledger::{self, AppendedEvent, ChainId, NewEvent};
use crate::money::MicroUsd;
use crate::store::agents::{self, AgentRow};
use crate::store::executions::{self, NewExecution};
use crate::store::holds::{self, HoldEvents, NewReservation};
use crate::store::{attempts, projection, rate_windows, tenants, StoreError};

/// Everything admission decides on.
pub struct Ticket<'a> {
    pub tenant_id: TenantId,
    pub agent_id: AgentId,
    pub route: CallRoute,
    pub key: &'a str,
    pub keyed: bool,
    pub fingerprint: &'a str,
    pub pricing: Pricing<'a>,
    pub body: &'a serde_json::Map<String, Value>,
    /// The input bound (the largest over the candidates).
    pub prompt_tokens: u64,
    /// Choices generated (`n`): the output cap applies to each.
    pub choices: u64,
    /// The output cap per choice the request asked for.
    pub requested_cap: Option<u64>,
    /// The cap that applies when the request sets none; `None` for routes without output.
    pub default_cap: Option<u64>,
    pub stream: bool,
    pub passthrough: bool,
    /// Where the call goes once admitted.
    pub target: Target<'a>,
}

/// What an admitted call is dispatched to, for the execution row and the `execution.dispatched`
/// event.
pub struct Target<'a> {
    pub provider: &'a str,
    /// What is called (model or tool facts), merged into the event's payload.
    pub details: Value,
}

/// A recorded refusal (execution DENIED, ledger event written).
#[derive(Debug, Clone)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub reason: String,
    pub body: Vec<u8>,
    pub execution_key: String,
    pub remaining: i64,
    pub quota: Quota,
    pub retry_after_seconds: Option<i64>,
}

/// A stored terminal result to replay.
#[derive(Debug, Clone)]
pub struct StoredResult {
    pub status: u16,
    pub body: Vec<u8>,
    pub is_stream: bool,
    pub execution_key: String,
    pub remaining: i64,
}

pub enum Admission {
    Reserved(Reservation),
    Refused(Refusal),
    Replay(StoredResult),
    /// An attempt of the same key is in flight: wait for it and answer with its outcome.
    InFlight(AttemptRef),
}

/// What refusing looks like before it is written.
struct Refuse {
    status: u16,
    kind: &'static str,
    code: &'static str,
    reason: String,
    message: String,
    quota: Quota,
    retry_after_seconds: Option<i64>,
}

impl Refuse {
    fn new(
        status: u16,
        kind: &'static str,
        code: &'static str,
        reason: impl Into<String>,
        message: String,
    ) -> Box<Self> {
        Box::new(Refuse {
            status,
            kind,
            code,
            reason: reason.into(),
            message,
            quota: Quota::default(),
            retry_after_seconds: None,
        })
    }
}

fn agent_limits(agent: &AgentRow) -> Limits {
    Limits {
        rpm: agent.rpm_limit.map(i64::from),
        tpm: agent.tpm_limit,
    }
}

fn tenant_limits(tenant: &tenants::TenantRow) -> Limits {
    Limits {
        rpm: tenant.rpm_limit.map(i64::from),
        tpm: tenant.tpm_limit,
    }
}

/// The agent's limits, then the tenant's, against the windows (read under the row locks).
async fn check_rates(
    conn: &mut PgConnection,
    t: &Ticket<'_>,
    agent: &AgentRow,
    tenant: Option<&tenants::TenantRow>,
    cap: Option<u64>,
) -> Result<Result<(Option<u64>, Quota), Box<Refuse>>, sqlx::Error> {
    let output = cap.map_or(0, |c| c.saturating_mul(t.choices));
    let tokens = i64::try_from(t.prompt_tokens.saturating_add(output)).unwrap_or(i64::MAX);
    let mut subjects = vec![(
        "agent",
        rate_limit::agent_subject(t.agent_id),
        agent_limits(agent),
    )];
    if let Some(tn) = tenant {
        subjects.push((
            "tenant",
            rate_limit::tenant_subject(t.tenant_id),
            tenant_limits(tn),
        ));
    }
    let mut agent_quota = Quota::default();
    for (whose, subject, limits) in subjects {
        match rate_limit::check(conn, &subject, limits, tokens).await? {
            Verdict::Allowed(q) => {
                if whose == "agent" {
                    agent_quota = q;
                }
            }
            Verdict::Limited {
                quota,
                retry_after_seconds,
                which,
            } => {
                let quota = if whose == "agent" { quota } else { agent_quota };
                let mut refuse = Refuse::new(
                    429,
                    "requests",
                    "rate_limit_exceeded",
                    format!("rate_limit_{whose}"),
                    format!("rate limit reached: the {whose}'s {which} are used up; retry after {retry_after_seconds} s"),
                );
                refuse.quota = quota;
                refuse.retry_after_seconds = Some(retry_after_seconds);
                return Ok(Err(refuse));
            }
        }
    }
    Ok(Ok((cap, agent_quota)))
}

/// Runs the admission transaction.
pub async fn admit(gw: &Gateway, t: &Ticket<'_>) -> Result<Admission, GatewayError> {
    let _slot = gw.books.agent_gates.enter(t.agent_id).await;
    let mut tx = gw.pool.begin().await?;

    // Lock order is always tenant, then agent. The tenant row is only locked when the tenant
    // has a budget or rate limits of its own: otherwise a busy tenant would serialise all of its
    // agents for nothing.
    let (tenant_limited, tenant_policy) = tenants::admission_view(&mut tx, t.tenant_id)
        .await?
        .ok_or(GatewayError::Unauthorized(crate::auth::AuthError::Revoked))?;
    let tenant = match tenant_limited {
        true => Some(tenants::lock_tenant(&mut tx, t.tenant_id).await?),
        false => None,
    };
    // The agent's chain is locked with its row and its tail read: the hold's events are hashed
    // here, after it, not by Postgres.
    let chain_id = ChainId::Agent(t.agent_id).to_string();
    let chain = (chain_id.as_str(), ledger::chain_lock_key(&chain_id));
    let (mut agent, mut tail) =
        match agents::lock_agent_chain(&mut tx, t.tenant_id, t.agent_id, chain).await {
            Ok(l) => (
                l.agent,
                ChainTail {
                    seq: l.tail_seq,
                    hash: l.tail_hash,
                },
            ),
            Err(StoreError::NotFound) => {
                return Err(GatewayError::Unauthorized(crate::auth::AuthError::Revoked))
            }
            Err(e) => return Err(e.into()),
        };
    if let Some(reset) = roll_budget_period(&mut tx, &mut agent).await? {
        tail = ChainTail {
            seq: reset.seq,
            hash: reset.event_hash,
        };
    }

    let mut execution_id = Uuid::now_v7();
    let mut attempt = 1;
    if t.keyed {
        if let Some(existing) =
            executions::find_by_key(&mut tx, t.tenant_id, t.agent_id, t.key).await?
        {
            if existing.fingerprint != t.fingerprint {
                return Err(GatewayError::IdempotencyConflict(
                    "this Idempotency-Key was used with a different request".into(),
                ));
            }
            match existing.state {
                ExecutionState::Committed | ExecutionState::Denied => {
                    let stored = executions::get_result(&mut tx, existing.id).await?;
                    let Some((status, body, is_stream)) = stored else {
                        return Err(GatewayError::IdempotencyConflict(
                            "the result of this execution is no longer retained".into(),
                        ));
                    };
                    return Ok(Admission::Replay(StoredResult {
                        status: u16::try_from(status).unwrap_or(500),
                        body,
                        is_stream,
                        execution_key: existing.execution_key,
                        remaining: agent.remaining_micro_usd(),
                    }));
                }
                ExecutionState::Reserving
                | ExecutionState::Reserved
                | ExecutionState::Dispatched => {
                    return Ok(Admission::InFlight(AttemptRef {
                        execution_id: existing.id,
                        attempt: existing.attempt,
                    }));
                }
                ExecutionState::Failed if existing.reason.as_deref() == Some(SETTLEMENT_FAILED) => {
                    return Err(GatewayError::IdempotencyConflict(
                        "this execution's outcome could not be recorded, so it is not run again"
                            .into(),
                    ));
                }
                ExecutionState::Released | ExecutionState::Failed => {
                    // This request found the attempt ended, so it starts the next one (under the
                    // agent's row lock: one admission of the key at a time, on any replica).
                    // Requests that waited for the ended attempt answer from its outcome, which
                    // the next attempt's row would overwrite: keep it.
                    attempts::archive_outcome(&mut tx, existing.id).await?;
                    execution_id = existing.id;
                    attempt = existing.attempt + 1;
                }
            }
        }
    }

    // The locked row is authoritative when there is one; otherwise the unlocked read will do.
    let tenant_policy = tenant
        .as_ref()
        .map_or(&tenant_policy.0, |tn| &tn.default_policy.0);
    let effective = Policy::effective(&agent.policy, tenant_policy).map_err(|e| {
        tracing::error!(agent = %agent.id, error = %e, "stored policy does not parse: call refused");
    });

    let admitted = match &effective {
        Ok(effective) => match decide(t, &agent, effective) {
            Ok(cap) => check_rates(&mut tx, t, &agent, tenant.as_ref(), cap).await?,
            Err(refuse) => Err(refuse),
        }
        .and_then(|(cap, quota)| {
            decide_budget(gw, t, &agent, tenant.as_ref(), effective, cap)
                .map(|(e, c)| (e, c, quota))
        }),
        // Fails closed: a policy that cannot be read allows nothing.
        Err(()) => Err(Refuse::new(
            403,
            "permission_error",
            "policy_unreadable",
            "policy_unreadable",
            "the stored policy of this agent or its tenant cannot be read; calls are refused until an operator sets it again".into(),
        )),
    };
    let (estimate, clamped, quota) = match admitted {
        Ok(ok) => ok,
        Err(refuse) => {
            let refusal = record_refusal(&mut tx, t, &agent, execution_id, attempt, refuse).await?;
            tx.commit().await?;
            return Ok(Admission::Refused(refusal));
        }
    };
    // Only admitted requests consume quota, charged with the estimate and corrected at settlement.
    let limited =
        agent_limits(&agent).any() || tenant.as_ref().is_some_and(|tn| tenant_limits(tn).any());
    let rate_tokens = if limited {
        let tokens = i64::try_from(estimate.tokens()).unwrap_or(i64::MAX);
        rate_windows::consume(&mut tx, &rate_limit::agent_subject(t.agent_id), tokens).await?;
        if tenant.as_ref().is_some_and(|tn| tenant_limits(tn).any()) {
            rate_windows::consume(&mut tx, &rate_limit::tenant_subject(t.tenant_id), tokens)
                .await?;
        }
        tokens
    } else {
        0
    };

    let holds_tenant = tenant
        .as_ref()
        .is_some_and(|tn| tn.budget_micro_usd.is_some());
    let reserved = json!({
        "attempt": attempt,
        "route": t.route.as_str(),
        "model": t.pricing.label(),
        "estimate_micro_usd": estimate.cost.0,
        "prompt_tokens_estimate": estimate.prompt_tokens,
        "output_cap": estimate.output_cap,
        "output_tokens_bound": estimate.output_tokens,
        "choices": t.choices,
        "clamped": clamped,
        "holds_tenant": holds_tenant,
    });
    let facts = AgentChainFacts {
        chain_id: &chain_id,
        tenant_id: t.tenant_id,
        agent_id: t.agent_id,
        execution_id: Some(t.key),
        ts: link::now_micros(),
    };
    let prev_hash = tail.hash.clone();
    let reserved = tail.link(&facts, "reservation.reserved", canonical_json(&reserved));
    let dispatched_payload = canonical_json(&dispatched_payload(t, attempt, &estimate));
    let dispatched = tail.link(&facts, "execution.dispatched", dispatched_payload);
    holds::hold(
        &mut tx,
        &NewExecution {
            id: execution_id,
            tenant_id: t.tenant_id,
            agent_id: t.agent_id,
            execution_key: t.key,
            keyed: t.keyed,
            route: t.route.as_str(),
            fingerprint: t.fingerprint,
            model_alias: t.pricing.model_alias(),
            state: ExecutionState::Dispatched.as_str(),
            attempt,
            stream: t.stream,
            replica_id: Some(gw.books.replica_id),
            estimate_micro_usd: estimate.cost.0,
            reason: None,
            provider: Some(t.target.provider),
        },
        &NewReservation {
            id: Uuid::now_v7(),
            holds_tenant,
            rate_tokens,
        },
        &HoldEvents {
            chain_id: &chain_id,
            ts: facts.ts,
            seq: reserved.seq,
            prev_hash: &prev_hash,
            reserved: (&reserved.event_hash, &reserved.payload),
            dispatched: (&dispatched.event_hash, &dispatched.payload),
        },
    )
    .await?;
    tx.commit().await?;
    crate::metrics::admission("admitted", "ok");
    Ok(Admission::Reserved(Reservation {
        hold: Hold {
            execution_id,
            execution_key: t.key.to_owned(),
            attempt,
            tenant_id: t.tenant_id,
            agent_id: t.agent_id,
            model_alias: t.pricing.label().to_owned(),
            held: estimate.cost,
        },
        estimate,
        granted: Granted {
            clamped,
            remaining_after: agent.remaining_micro_usd() - estimate.cost.0,
            quota,
        },
    }))
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

/// Lifecycle, then policy: the output cap the request may use (`None` for routes without output).
fn decide(
    t: &Ticket<'_>,
    agent: &AgentRow,
    effective: &policy::EffectivePolicy,
) -> Result<Option<u64>, Box<Refuse>> {
    if agent.state != AgentState::Ready {
        let message = format!(
            "agent is {}; only READY agents can execute",
            agent.state.as_str()
        );
        return Err(Refuse::new(
            423,
            "invalid_request_error",
            "agent_not_ready",
            "agent_not_ready",
            message,
        ));
    }
    let facts = RequestFacts::from_body(
        t.route,
        t.body,
        t.pricing.model_alias(),
        t.prompt_tokens,
        t.choices,
        t.requested_cap,
        t.passthrough,
    );
    let cap = policy::evaluate(effective, &facts, t.default_cap.unwrap_or(0)).map_err(|d| {
        Refuse::new(
            403,
            "permission_error",
            "policy_violation",
            d.rule,
            d.message,
        )
    })?;
    // Routes without output (embeddings) hold no output tokens.
    Ok(t.default_cap.map(|_| cap))
}

/// The budget: the estimate to hold (possibly with a clamped output cap), or a 402 that says the
/// bound, what it covers and the remaining budget.
fn decide_budget(
    gw: &Gateway,
    t: &Ticket<'_>,
    agent: &AgentRow,
    tenant: Option<&tenants::TenantRow>,
    effective: &policy::EffectivePolicy,
    cap: Option<u64>,
) -> Result<(Estimate, bool), Box<Refuse>> {
    let estimate = t.pricing.estimate(cap);
    let agent_room = agent.remaining_micro_usd();
    let tenant_room = tenant.and_then(|tn| {
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
    .filter(|n| *n >= u64::from(gw.settings.gateway.clamp_min_output_tokens));
    match (affordable, cap) {
        (Some(n), Some(c)) if n < c => Ok((t.pricing.estimate(Some(n)), true)),
        _ => {
            let whose = if tenant_room.is_some_and(|tr| tr < agent_room) {
                "tenant"
            } else {
                "agent"
            };
            let message = format!(
                "insufficient budget: this request is estimated at {} micro-USD, {}, but the {whose} has {} micro-USD remaining",
                estimate.cost.0,
                covers(t, &estimate),
                room.max(0)
            );
            Err(Refuse::new(
                402,
                "insufficient_quota",
                "insufficient_budget",
                "insufficient_budget",
                message,
            ))
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

/// Writes a refusal: the execution DENIED with its result cached for replay, the ledger event
/// and the projection, all in the caller's transaction.
async fn record_refusal(
    conn: &mut PgConnection,
    t: &Ticket<'_>,
    agent: &AgentRow,
    execution_id: Uuid,
    attempt: i32,
    r: Box<Refuse>,
) -> Result<Refusal, GatewayError> {
    let body = openai_error_body(&r.message, r.kind, r.code, None);
    executions::upsert_attempt(
        conn,
        &NewExecution {
            id: execution_id,
            tenant_id: t.tenant_id,
            agent_id: t.agent_id,
            execution_key: t.key,
            keyed: t.keyed,
            route: t.route.as_str(),
            fingerprint: t.fingerprint,
            model_alias: t.pricing.model_alias(),
            state: ExecutionState::Denied.as_str(),
            attempt,
            stream: t.stream,
            replica_id: None,
            estimate_micro_usd: 0,
            reason: Some(&r.reason),
            provider: None,
        },
    )
    .await?;
    executions::store_result(conn, execution_id, r.status, &body, false).await?;
    ledger::append(
        conn,
        NewEvent::for_agent(
            t.tenant_id,
            t.agent_id,
            "execution.denied",
            Some(t.key),
            json!({
                "attempt": attempt,
                "route": t.route.as_str(),
                "model": t.pricing.label(),
                "status": r.status,
                "code": r.code,
                "reason": r.reason,
                "remaining_micro_usd": agent.remaining_micro_usd(),
            }),
        ),
    )
    .await?;
    projection::record(
        conn,
        &projection::Fact {
            tenant_id: Some(t.tenant_id),
            agent_id: Some(t.agent_id),
            execution_id: Some(t.key),
            kind: "admission.denied",
            reason: Some(&r.reason),
            model_alias: t.pricing.model_alias(),
            ..projection::Fact::default()
        },
    )
    .await?;
    crate::metrics::admission("denied", r.code);
    Ok(Refusal {
        status: r.status,
        code: r.code,
        reason: r.reason,
        body,
        execution_key: t.key.to_owned(),
        remaining: agent.remaining_micro_usd(),
        quota: r.quota,
        retry_after_seconds: r.retry_after_seconds,
    })
}

/// Starts the agent's next budget period when the current one has ended (checked lazily, at
/// admission); the period's ledger event when it did.
async fn roll_budget_period(
    conn: &mut PgConnection,
    agent: &mut AgentRow,
) -> Result<Option<AppendedEvent>, GatewayError> {
    let period = agent.budget_period;
    match period_start(period, Utc::now()) {
        Some(start) if agent.period_started_at < start => Ok(Some(
            restart_budget_period(conn, agent, period, start).await?,
        )),
        _ => Ok(None),
    }
}

/// Starts the agent's budget period `period` at `start`, in the caller's transaction: `spent`
/// becomes what was committed since `start` (everything, for a lifetime budget), recorded with
/// its ledger event (returned). Used when a period ends and when an operator changes the period.
pub async fn restart_budget_period(
    conn: &mut PgConnection,
    agent: &mut AgentRow,
    period: BudgetPeriod,
    start: DateTime<Utc>,
) -> Result<AppendedEvent, sqlx::Error> {
    // Commits booked since the boundary but before this (lazy) reset belong to the new period.
    let lifetime = period == BudgetPeriod::Lifetime;
    let spent_after = holds::committed_since(conn, agent.id, start, lifetime).await?;
    agents::reset_period(conn, agent.id, start, spent_after).await?;
    let event = ledger::append(
        conn,
        NewEvent {
            chain: ChainId::Agent(agent.id),
            event_type: types::PERIOD_RESET,
            tenant_id: Some(agent.tenant_id),
            agent_id: Some(agent.id),
            execution_id: None,
            payload: json!({
                "period": period.as_str(),
                "spent_before_micro_usd": agent.spent_micro_usd,
                "spent_after_micro_usd": spent_after,
                "period_started_at": start.to_rfc3339(),
                // Holds made before the reset are not spent yet and stay held.
                "holds_tenant": false,
            }),
        },
    )
    .await?;
    agent.spent_micro_usd = spent_after;
    agent.period_started_at = start;
    Ok(event)
}

/// The start of the period containing `now`; `None` for lifetime budgets.
pub fn period_start(period: BudgetPeriod, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match period {
        BudgetPeriod::Lifetime => None,
        BudgetPeriod::Daily => Utc
            .with_ymd_and_hms(now.year(), now.month(), now.day(), 0, 0, 0)
            .single(),
        BudgetPeriod::Monthly => Utc
            .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
            .single(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_start_at_midnight_utc_and_the_first_of_the_month() {
        let now = Utc.with_ymd_and_hms(2026, 11, 27, 17, 5, 0).unwrap();
        assert_eq!(period_start(BudgetPeriod::Lifetime, now), None);
        assert_eq!(
            period_start(BudgetPeriod::Daily, now),
            Some(Utc.with_ymd_and_hms(2026, 11, 27, 0, 0, 0).unwrap())
        );
        assert_eq!(
            period_start(BudgetPeriod::Monthly, now),
            Some(Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap())
        );
    }
}
