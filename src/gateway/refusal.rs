//! Refusing a call (SPEC §5.1): every reason admission refuses for, and the refusal written in
//! the admission transaction — the execution DENIED with its answer kept for replay, its ledger
//! event and its projection.

use serde_json::json;
use sqlx::PgConnection;

use super::call_types::AttemptRef;
use super::error::openai_error_body;
use super::policy::PolicyDenial;
use super::rate_limit::{Limited, Quota};
use super::ticket::Ticket;
use super::GatewayError;
use crate::domain::{AgentState, ExecutionState};
use crate::ledger::{self, NewEvent};
use crate::store::agents::AgentRow;
use crate::store::executions::{self, NewExecution};
use crate::store::projection;

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

/// What refusing looks like before it is written.
pub(super) struct Refuse {
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

    /// 423: the agent is not READY.
    pub(super) fn not_ready(state: AgentState) -> Box<Self> {
        let message = format!("agent is {}; only READY agents can execute", state.as_str());
        Refuse::new(
            423,
            "invalid_request_error",
            "agent_not_ready",
            "agent_not_ready",
            message,
        )
    }

    /// 403: a policy rule forbids the request.
    pub(super) fn policy(d: PolicyDenial) -> Box<Self> {
        Refuse::new(
            403,
            "permission_error",
            "policy_violation",
            d.rule,
            d.message,
        )
    }

    /// 403: the stored policy cannot be read, so it allows nothing (fails closed).
    pub(super) fn policy_unreadable() -> Box<Self> {
        Refuse::new(
            403,
            "permission_error",
            "policy_unreadable",
            "policy_unreadable",
            "the stored policy of this agent or its tenant cannot be read; calls are refused until an operator sets it again".into(),
        )
    }

    /// 429: the agent's or the tenant's rate limit is used up.
    pub(super) fn rate_limited(l: Limited) -> Box<Self> {
        let Limited {
            whose,
            which,
            quota,
            retry_after_seconds,
        } = l;
        let mut refuse = Refuse::new(
            429,
            "requests",
            "rate_limit_exceeded",
            format!("rate_limit_{whose}"),
            format!("rate limit reached: the {whose}'s {which} are used up; retry after {retry_after_seconds} s"),
        );
        refuse.quota = quota;
        refuse.retry_after_seconds = Some(retry_after_seconds);
        refuse
    }

    /// 402: the hold does not fit the budget; `message` says the bound, what it covers and the
    /// remaining budget.
    pub(super) fn insufficient_budget(message: String) -> Box<Self> {
        Refuse::new(
            402,
            "insufficient_quota",
            "insufficient_budget",
            "insufficient_budget",
            message,
        )
    }
}

/// Writes a refusal: the execution DENIED with its result cached for replay, the ledger event
/// and the projection, all in the caller's transaction.
pub(super) async fn record(
    conn: &mut PgConnection,
    t: &Ticket<'_>,
    agent: &AgentRow,
    next: AttemptRef,
    r: Box<Refuse>,
) -> Result<Refusal, GatewayError> {
    let execution_id = next.execution_id;
    let attempt = next.attempt;
    let body = openai_error_body(&r.message, r.kind, r.code, None);
    executions::upsert_attempt(
        conn,
        &NewExecution {
            reason: Some(&r.reason),
            ..t.execution(next, ExecutionState::Denied)
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
