//! One governed call from request body to settled result: prepare, admit (a duplicate of an
//! attempt in flight waits for it and answers with its outcome; an admitted call is committed
//! DISPATCHED), then hand the provider call and its settlement to a tracked task that outlives
//! the client's connection.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, oneshot};

use super::admission::{self, Admission, AttemptRef, Pricing, Reservation, Target, Ticket};
use super::dispatch::{self, Dispatch};
use super::error::openai_error_body;
use super::prepare;
use super::rate_limit::Quota;
use super::{Gateway, GatewayError};
use crate::config::Secret;
use crate::domain::{AgentId, CallRoute, ExecutionState, TenantId};
use crate::store::attempts::{self, AttemptStatus, EndedAttempt};

/// A northbound call as the HTTP layer hands it over.
pub struct CallInput {
    pub tenant_id: TenantId,
    pub agent_id: AgentId,
    pub route: CallRoute,
    pub body: Map<String, Value>,
    pub idempotency_key: Option<String>,
    pub passthrough_key: Option<Secret>,
}

/// A response body: complete, or server-sent events as they are relayed.
pub enum CallBody {
    Full(Bytes),
    Stream(mpsc::Receiver<Bytes>),
}

/// What to send back: a body with its status, and the AEX headers.
pub struct CallOutput {
    pub status: u16,
    pub body: CallBody,
    pub content_type: String,
    pub execution_id: String,
    pub cost_micro_usd: Option<i64>,
    pub remaining_micro_usd: Option<i64>,
    pub replayed: bool,
    /// The agent's rate-limit quota (`x-ratelimit-*` headers) and, on a 429, `Retry-After`.
    pub quota: Quota,
    pub retry_after_seconds: Option<i64>,
}

pub const JSON: &str = "application/json";
pub const SSE: &str = "text/event-stream";

impl CallOutput {
    pub fn full(
        execution_id: &str,
        status: u16,
        content_type: &str,
        body: impl Into<Bytes>,
    ) -> Self {
        CallOutput {
            status,
            body: CallBody::Full(body.into()),
            content_type: content_type.to_owned(),
            execution_id: execution_id.to_owned(),
            cost_micro_usd: None,
            remaining_micro_usd: None,
            replayed: false,
            quota: Quota::default(),
            retry_after_seconds: None,
        }
    }

    pub fn error(execution_id: &str, status: u16, kind: &str, code: &str, message: &str) -> Self {
        Self::full(
            execution_id,
            status,
            JSON,
            openai_error_body(message, kind, code, None),
        )
    }
}

/// Runs one governed call to its (possibly streaming) result, recording its facts on the
/// request span.
pub async fn execute(gw: Arc<Gateway>, input: CallInput) -> Result<CallOutput, GatewayError> {
    let span = tracing::Span::current();
    span.record("tenant", tracing::field::display(input.tenant_id));
    span.record("agent", tracing::field::display(input.agent_id));
    if input.route == CallRoute::ToolsExecute {
        return super::tool_call::execute(gw, input).await;
    }
    let p = prepare::prepare(&gw, &input)?;
    span.record("execution_id", p.key.as_str());
    let model = p.model();
    span.record("model", model.alias.as_str());
    let ticket = Ticket {
        tenant_id: input.tenant_id,
        agent_id: input.agent_id,
        route: input.route,
        key: &p.key,
        keyed: p.keyed,
        fingerprint: &p.fingerprint,
        pricing: Pricing::Tokens {
            candidates: &p.candidates,
        },
        body: &input.body,
        prompt_tokens: p.prompt_tokens,
        choices: p.shape.choices,
        requested_cap: p.requested_cap,
        default_cap: p.default_cap,
        stream: p.stream,
        passthrough: input.passthrough_key.is_some(),
        target: Target {
            provider: &model.provider.name,
            details: json!({"model": model.alias, "upstream_model": model.upstream_model}),
        },
    };
    let reservation = match admit_until_decided(&gw, &ticket).await? {
        Ok(r) => r,
        Err(answer) => return Ok(answer),
    };

    // The provider call and settlement run on a tracked task: if the client goes away, the call
    // still completes (or, for a stream, stops) and is booked, and shutdown waits for it.
    let (tx, rx) = oneshot::channel();
    let cap = reservation.estimate.output_cap;
    let job = Dispatch {
        gw: Arc::clone(&gw),
        route: input.route,
        attempts: p
            .candidates
            .iter()
            .map(|c| {
                (
                    Arc::clone(&c.model),
                    c.bound,
                    prepare::upstream_body(&input.body, &p, c, cap),
                )
            })
            .collect(),
        reservation,
        passthrough: input.passthrough_key.clone(),
        stream: p.stream,
        client_wants_usage: p.client_wants_usage,
    };
    // The task carries the request span, so its upstream and settlement facts land there.
    gw.tasks.spawn(tracing::Instrument::instrument(
        dispatch::run(job, tx),
        span.clone(),
    ));
    let out = rx.await.map_err(|_| {
        GatewayError::Internal(anyhow::anyhow!("dispatch task ended without a result"))
    })?;
    Ok(out)
}

/// Admits the ticket: the reservation, or the answer to give without one (a recorded refusal, a
/// replay, or the outcome of the attempt of the same key that was in flight when it arrived).
pub async fn admit_until_decided(
    gw: &Gateway,
    ticket: &Ticket<'_>,
) -> Result<Result<Reservation, CallOutput>, GatewayError> {
    let span = tracing::Span::current();
    let admission_started = std::time::Instant::now();
    let admitted = admission::admit(gw, ticket).await?;
    crate::telemetry::record_ms("admission_ms", admission_started);
    match admitted {
        Admission::Reserved(r) => Ok(Ok(r)),
        Admission::Refused(f) => {
            span.record("outcome", f.code);
            let mut out = CallOutput::full(&f.execution_key, f.status, JSON, f.body);
            out.remaining_micro_usd = Some(f.remaining);
            out.quota = f.quota;
            out.retry_after_seconds = f.retry_after_seconds;
            Ok(Err(out))
        }
        Admission::Replay(s) => {
            span.record("outcome", "replayed");
            let content_type = if s.is_stream { SSE } else { JSON };
            let out = CallOutput::full(&s.execution_key, s.status, content_type, s.body);
            Ok(Err(replayed(out, s.remaining)))
        }
        // Never a new attempt from here: this request arrived while that attempt was in flight,
        // so it gets that attempt's outcome, failure included (SPEC §5.1). Only a request that
        // arrives after an attempt ended starts the next one.
        Admission::InFlight(attempt) => {
            let ended = wait_for_attempt(gw, attempt).await?;
            span.record("outcome", "replayed");
            Ok(Err(answer_of_attempt(ticket.key, ended)?))
        }
    }
}

/// A stored answer given again: no charge, `Idempotent-Replayed: true`.
fn replayed(mut out: CallOutput, remaining_micro_usd: i64) -> CallOutput {
    out.cost_micro_usd = Some(0);
    out.remaining_micro_usd = Some(remaining_micro_usd);
    out.replayed = true;
    out
}

/// Polls (without locks) until the attempt has ended, up to the idempotency wait.
async fn wait_for_attempt(gw: &Gateway, attempt: AttemptRef) -> Result<EndedAttempt, GatewayError> {
    let _waiting = gw.waiting_for_duplicate();
    let deadline = tokio::time::Instant::now()
        + Duration::from_secs(gw.settings.gateway.idempotency_wait_seconds);
    let mut delay = Duration::from_millis(20);
    loop {
        if tokio::time::Instant::now() >= deadline {
            return Err(GatewayError::InProgress);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(250));
        let mut conn = gw.pool.acquire().await?;
        match attempts::attempt_status(&mut conn, attempt.execution_id, attempt.attempt).await? {
            Some(AttemptStatus::InFlight) => {}
            Some(AttemptStatus::Ended(ended)) => return Ok(ended),
            None => {
                return Err(GatewayError::Internal(anyhow::anyhow!(
                    "the execution a request waited for is gone"
                )))
            }
        }
    }
}

/// The answer an ended attempt gave its own caller, for a request that waited for it; when none
/// was recorded (its replica was lost), the failure in the OpenAI shape from its reason.
fn answer_of_attempt(key: &str, ended: EndedAttempt) -> Result<CallOutput, GatewayError> {
    let out = match ended.result {
        Some((status, body, is_stream)) => {
            let content_type = if is_stream { SSE } else { JSON };
            let status = u16::try_from(status).unwrap_or(500);
            CallOutput::full(key, status, content_type, body)
        }
        None if matches!(
            ended.state,
            ExecutionState::Committed | ExecutionState::Denied
        ) =>
        {
            return Err(GatewayError::IdempotencyConflict(
                "the result of this execution is no longer retained".into(),
            ))
        }
        None => {
            let reason = ended.reason.as_deref().unwrap_or("failed");
            let (status, code) = if reason.contains("timeout") {
                (504, "upstream_timeout")
            } else {
                (502, "upstream_error")
            };
            let message = format!("the attempt in flight under this key failed: {reason}");
            CallOutput::error(key, status, "server_error", code, &message)
        }
    };
    Ok(replayed(out, ended.remaining_micro_usd))
}
