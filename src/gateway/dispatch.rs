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

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::bound::Candidate;
use super::call_types::{CallOutput, Hold, JSON};
use super::error::openai_error_body;
use super::job::{charge_ambiguous, release, rewrite_model, Dispatch, Reply};
use super::pricing::Pricing;
use super::settlement::{self, elapsed_ms, Commit, Outcome, UsageSource};
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
/// when the first byte can flow), with the agent's quota after this admission; settles before
/// returning. Each candidate's body is built when its attempt is made.
pub async fn run(mut job: Dispatch, hold: Hold, reply: oneshot::Sender<CallOutput>) {
    let reply = Reply::new(reply, job.granted.quota);
    let started = Instant::now();
    let count = job.candidates.len();
    for i in 0..count {
        let served = &job.candidates[i];
        let model = &served.model;
        let body = job.outgoing.body_for(served, i + 1 == count);
        let upstream_started = Instant::now();
        let sent = job
            .gw
            .providers
            .get(model.provider.kind)
            .call(UpstreamRequest {
                provider: &model.provider,
                route: job.route,
                body,
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
                let next = &job.candidates[i + 1].model;
                record_fallback(&job, &hold, model, next, &reason).await;
                continue;
            }
        }
        match sent {
            Ok(UpstreamReply::Complete(resp)) => {
                complete(&job, hold, served, resp, started, reply).await;
            }
            Ok(UpstreamReply::Streaming { chunks, .. }) => {
                stream::relay(&job, hold, served, chunks, started, reply).await;
            }
            Err(e) => fail(&job, hold, served, e, started, reply).await,
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
    served: &Candidate,
    e: ProviderError,
    started: Instant,
    reply: Reply,
) {
    let id = hold.execution_key();
    tracing::warn!(execution_id = id, error = %e, "upstream call failed");
    let (status, code, reason) = match e {
        ProviderError::Connect { .. } => {
            let body = openai_error_body(&e.to_string(), "server_error", "upstream_error", None);
            let body = Bytes::from(body);
            let out = CallOutput::full(id, 502, JSON, body.clone());
            let answer = Some((502, body, false));
            release(job, hold, served, "upstream_unreachable", None, answer).await;
            reply.send(out);
            return;
        }
        ProviderError::Timeout { .. } => (504, "upstream_timeout", "upstream_timeout"),
        ProviderError::Transport { .. } => (502, "upstream_error", "upstream_connection_lost"),
    };
    let held = hold.held.0;
    let message = format!(
        "{e}; the request had been sent, so the provider may have done the work: its hold of {held} micro-USD was charged"
    );
    let body = Bytes::from(openai_error_body(&message, "server_error", code, None));
    let out = CallOutput::full(id, status, JSON, body.clone());
    let answer = Some((status, body, false));
    let settled = charge_ambiguous(job, hold, served, reason, started, None, answer).await;
    reply.send(settled.charged(out));
}

/// A complete answer: an error status releases; a success commits its usage.
async fn complete(
    job: &Dispatch,
    hold: Hold,
    served: &Candidate,
    response: UpstreamResponse,
    started: Instant,
    reply: Reply,
) {
    if !(200..300).contains(&response.status) {
        return refused(job, hold, served, response, reply).await;
    }
    let (usage, source, status, body) = read_success(job, served, &response);
    let body = Bytes::from(body);
    // The answer and the result cached for replay share one body.
    let out = CallOutput::full(hold.execution_key(), status, JSON, body.clone());
    let model = &served.model;
    let outcome = Outcome::Commit(Commit {
        usage,
        source,
        provider: &model.provider.name,
        result: Some((status, body, false)),
        latency_ms: elapsed_ms(started),
        stream: None,
        completion_cap: job.completion_cap(model, &served.bound),
        prompt_bound: job.estimate.prompt_tokens,
        hosted_calls_bound: served.bound.tool_calls,
    });
    let pricing = Pricing::served_by(served);
    let settled = settlement::finish(&job.gw.books, hold, pricing, &outcome).await;
    reply.send(settled.charged(out));
}

/// An error status: nothing billable happened, the hold is released. The provider's own client
/// error goes back as it is; anything else is a 502.
async fn refused(
    job: &Dispatch,
    hold: Hold,
    served: &Candidate,
    response: UpstreamResponse,
    reply: Reply,
) {
    let (status, content_type, body) =
        if (400..500).contains(&response.status) && response.status != 429 {
            let content_type = response.content_type.unwrap_or_else(|| JSON.to_owned());
            (response.status, content_type, response.body)
        } else {
            let message = format!(
                "provider {} returned status {}",
                served.model.provider.name, response.status
            );
            let body = openai_error_body(&message, "server_error", "upstream_error", None);
            (502, JSON.to_owned(), Bytes::from(body))
        };
    let out = CallOutput::full(hold.execution_key(), status, &content_type, body.clone());
    let reason = format!("upstream_status_{}", response.status);
    let answer = Some((status, body, false));
    release(job, hold, served, &reason, Some(response.status), answer).await;
    reply.send(out);
}

/// A success's usage (reported, else counted), where it comes from, and the answer to give: the
/// provider's JSON with the model given back as the alias, or a 502 when it is not JSON (the
/// provider may have done the work, so the prompt is charged).
fn read_success(
    job: &Dispatch,
    served: &Candidate,
    response: &UpstreamResponse,
) -> (Usage, UsageSource, u16, Vec<u8>) {
    let (model, bound) = (&served.model, &served.bound);
    let parsed: Option<Value> = serde_json::from_slice(&response.body)
        .ok()
        .filter(Value::is_object);
    let Some(mut value) = parsed else {
        let usage = Usage::tokens(job.estimate.prompt_tokens, 0);
        let message = format!(
            "provider {} returned a malformed response",
            model.provider.name
        );
        let body = openai_error_body(&message, "server_error", "upstream_error", None);
        return (usage, UsageSource::Estimated, 502, body);
    };
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
    let reported_calls = usage::HostedCalls::of_output(value.get("output").unwrap_or(&Value::Null));
    let usage = Usage {
        hosted_calls: job.billed_calls(bound, reported_calls),
        ..usage
    };
    rewrite_model(&mut value, job.alias());
    let body = serde_json::to_vec(&value).unwrap_or_default();
    (usage, source, response.status, body)
}
