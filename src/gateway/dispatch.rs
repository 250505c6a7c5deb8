//! The provider call of an admitted execution, on a tracked task: try the model and then its
//! fallbacks while a provider fails before its first byte (connect error, 429, 5xx), and settle
//! the outcome exactly once. The answer is read by what it is (its content type, not what was
//! asked): server-sent events go to [`super::stream`], anything else is read whole here.
//!
//! What is charged (SPEC §5.3): the provider's reported usage; else AEX's own count, capped at
//! the caps it sent; the hold when the outcome is ambiguous (a timeout or a lost connection after
//! the request was sent, when the provider may have done and billed the whole work); nothing
//! only when the provider cannot have done billable work (never connected, or an error status).

use std::time::Instant;

use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::bound::Bound;
use super::call_types::{CallOutput, Hold, JSON};
use super::error::openai_error_body;
use super::job::{charge_ambiguous, elapsed_ms, release, rewrite_model, with_charge, Dispatch};
use super::settlement::{self, Outcome, Priced, UsageSource};
use super::stream;
use crate::config::{ModelRoute, Secret};
use crate::ledger::{self, NewEvent};
use crate::providers::{
    usage, ProviderError, UpstreamReply, UpstreamRequest, UpstreamResponse, Usage,
};

/// Why an attempt may move on to the next candidate: the provider did no work.
fn retryable(reply: &Result<UpstreamReply, ProviderError>) -> Option<String> {
    match reply {
        Err(ProviderError::Connect { .. }) => Some("connect_error".into()),
        Ok(UpstreamReply::Complete(r)) if r.status == 429 || r.status >= 500 => {
            Some(format!("upstream_status_{}", r.status))
        }
        _ => None,
    }
}

/// Runs the call and sends the client's answer on `reply` as soon as it is known (for a stream:
/// when the first byte can flow); settles before returning.
pub async fn run(job: Dispatch, hold: Hold, reply: oneshot::Sender<CallOutput>) {
    // Every answer carries the agent's quota after this admission.
    let (tx, rx) = oneshot::channel::<CallOutput>();
    let quota = job.granted.quota;
    let forward = async move {
        if let Ok(mut out) = rx.await {
            out.quota = quota;
            let _ = reply.send(out);
        }
    };
    tokio::join!(attempt_all(&job, hold, tx), forward);
}

async fn attempt_all(job: &Dispatch, hold: Hold, reply: oneshot::Sender<CallOutput>) {
    let started = Instant::now();
    let count = job.attempts.len();
    for (i, (model, bound, body)) in job.attempts.iter().enumerate() {
        let upstream_started = Instant::now();
        let sent = job
            .gw
            .providers
            .get(model.provider.kind)
            .call(UpstreamRequest {
                provider: &model.provider,
                route: job.route,
                body: body.clone(),
                passthrough_key: job.passthrough.as_ref().map(Secret::expose),
                stream: job.stream,
            })
            .await;
        crate::telemetry::record_ms("upstream_ms", upstream_started);
        let status = match &sent {
            Ok(UpstreamReply::Complete(r)) => Ok(r.status),
            Ok(UpstreamReply::Streaming { status, .. }) => Ok(*status),
            Err(e) => Err(e.kind()),
        };
        crate::metrics::observe_upstream(&model.provider.name, upstream_started.elapsed(), status);
        if i + 1 < count {
            if let Some(reason) = retryable(&sent) {
                record_fallback(job, &hold, model, &job.attempts[i + 1].0, &reason).await;
                continue;
            }
        }
        match sent {
            Ok(UpstreamReply::Complete(resp)) => {
                complete(job, hold, (model, bound), resp, started, reply).await;
            }
            Ok(UpstreamReply::Streaming { chunks, .. }) => {
                stream::relay(job, hold, (model, bound), chunks, started, reply).await;
            }
            Err(e) => fail(job, hold, model, e, started, reply).await,
        }
        return;
    }
}

/// Appends the fallback to the ledger: each attempt is visible there.
async fn record_fallback(
    job: &Dispatch,
    r: &Hold,
    from: &ModelRoute,
    to: &ModelRoute,
    reason: &str,
) {
    crate::metrics::upstream_fallback(&from.provider.name, &to.provider.name);
    let event = NewEvent::for_agent(
        r.tenant_id,
        r.agent_id,
        "execution.fallback",
        Some(&r.execution_key),
        json!({
            "attempt": r.attempt,
            "from_model": from.alias,
            "from_provider": from.provider.name,
            "to_model": to.alias,
            "to_provider": to.provider.name,
            "reason": reason,
        }),
    );
    let appended = async {
        let mut tx = job.gw.pool.begin().await?;
        ledger::append(&mut tx, event).await?;
        tx.commit().await
    };
    if let Err(e) = appended.await {
        tracing::warn!(execution_id = %r.execution_key, error = %e, "could not record a fallback");
    }
}

/// No HTTP answer at all. Never connected: release. Sent and then timed out or lost: charge the
/// hold, and say so in the error body.
async fn fail(
    job: &Dispatch,
    hold: Hold,
    model: &ModelRoute,
    e: ProviderError,
    started: Instant,
    reply: oneshot::Sender<CallOutput>,
) {
    let id = hold.execution_key();
    tracing::warn!(execution_id = id, error = %e, "upstream call failed");
    let (status, code, reason) = match e {
        ProviderError::Connect { .. } => {
            let body = openai_error_body(&e.to_string(), "server_error", "upstream_error", None);
            let out = CallOutput::full(id, 502, JSON, body.clone());
            release(
                job,
                hold,
                model,
                "upstream_unreachable",
                None,
                Some((502, body)),
            )
            .await;
            let _ = reply.send(out);
            return;
        }
        ProviderError::Timeout { .. } => (504, "upstream_timeout", "upstream_timeout"),
        ProviderError::Transport { .. } => (502, "upstream_error", "upstream_connection_lost"),
    };
    let held = hold.held.0;
    let message = format!(
        "{e}; the request had been sent, so the provider may have done the work: its hold of {held} micro-USD was charged"
    );
    let body = openai_error_body(&message, "server_error", code, None);
    let out = CallOutput::full(id, status, JSON, body.clone());
    let answer = Some((status, body, false));
    let settled = charge_ambiguous(job, hold, model, reason, started, None, answer).await;
    let _ = reply.send(with_charge(out, settled));
}

/// A complete answer: an error status releases; a success commits its usage.
async fn complete(
    job: &Dispatch,
    hold: Hold,
    (model, bound): (&ModelRoute, &Bound),
    response: UpstreamResponse,
    started: Instant,
    reply: oneshot::Sender<CallOutput>,
) {
    let id = hold.execution_key();
    if !(200..300).contains(&response.status) {
        let (status, content_type, body) =
            if (400..500).contains(&response.status) && response.status != 429 {
                // The provider's own client error goes back as it is.
                let content_type = response.content_type.unwrap_or_else(|| JSON.to_owned());
                (response.status, content_type, response.body.to_vec())
            } else {
                let message = format!(
                    "provider {} returned status {}",
                    model.provider.name, response.status
                );
                let body = openai_error_body(&message, "server_error", "upstream_error", None);
                (502, JSON.to_owned(), body)
            };
        let out = CallOutput::full(id, status, &content_type, body.clone());
        let reason = format!("upstream_status_{}", response.status);
        release(
            job,
            hold,
            model,
            &reason,
            Some(response.status),
            Some((status, body)),
        )
        .await;
        let _ = reply.send(out);
        return;
    }

    let parsed: Option<Value> = serde_json::from_slice(&response.body)
        .ok()
        .filter(Value::is_object);
    let (usage, source, status, body) = match parsed {
        Some(mut value) => {
            let (usage, source) = match usage::reported(job.route, &value) {
                Some(u) => (u, UsageSource::Reported),
                None => {
                    let text = usage::output_text(job.route, &value);
                    (
                        job.counted_usage(model, bound, &text),
                        UsageSource::Estimated,
                    )
                }
            };
            let reported_calls =
                usage::HostedCalls::of_output(value.get("output").unwrap_or(&Value::Null));
            let usage = Usage {
                hosted_calls: job.billed_calls(bound, reported_calls),
                ..usage
            };
            rewrite_model(&mut value, &hold.model_alias);
            (
                usage,
                source,
                response.status,
                serde_json::to_vec(&value).unwrap_or_default(),
            )
        }
        None => {
            // A 2xx that is not JSON: the provider may have done the work, so the prompt is
            // charged; the client learns the answer was unusable.
            let usage = Usage::tokens(job.estimate.prompt_tokens, 0);
            let message = format!(
                "provider {} returned a malformed response",
                model.provider.name
            );
            (
                usage,
                UsageSource::Estimated,
                502,
                openai_error_body(&message, "server_error", "upstream_error", None),
            )
        }
    };
    let out = CallOutput::full(id, status, JSON, body.clone());
    let outcome = Outcome::Commit {
        usage,
        source,
        provider: model.provider.name.clone(),
        result: Some((status, body, false)),
        latency_ms: elapsed_ms(started),
        stream: None,
        completion_cap: job.completion_cap(model, bound),
        prompt_bound: job.estimate.prompt_tokens,
        hosted_calls_bound: bound.tool_calls,
    };
    let settled = settlement::finish(&job.gw.books, hold, Priced::Tokens(model), &outcome).await;
    let _ = reply.send(with_charge(out, settled));
}
