//! The provider call of an admitted execution, on a tracked task: try the model and then its
//! fallbacks while a provider fails before its first byte (connect error, 429, 5xx), and settle
//! the outcome exactly once. Streams are handed to [`super::stream`].

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::admission::Reservation;
use super::call::{CallOutput, JSON};
use super::error::openai_error_body;
use super::estimate;
use super::settlement::{self, Outcome, Priced, SettleResult, UsageSource};
use super::{stream, Gateway};
use crate::config::{ModelRoute, Secret};
use crate::domain::{CallRoute, ExecutionState};
use crate::ledger::{self, NewEvent};
use crate::providers::{
    usage, ProviderError, UpstreamReply, UpstreamRequest, UpstreamResponse, Usage,
};

/// Everything the task needs; owned, because it outlives the request.
pub struct Dispatch {
    pub gw: Arc<Gateway>,
    pub reservation: Reservation,
    pub route: CallRoute,
    /// Each candidate model with the body to send it, in the order to try them.
    pub attempts: Vec<(Arc<ModelRoute>, Bytes)>,
    pub passthrough: Option<Secret>,
    pub stream: bool,
    pub client_wants_usage: bool,
}

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
pub async fn run(job: Dispatch, reply: oneshot::Sender<CallOutput>) {
    // Every answer carries the agent's quota after this admission.
    let (tx, rx) = oneshot::channel::<CallOutput>();
    let quota = job.reservation.quota;
    let forward = async move {
        if let Ok(mut out) = rx.await {
            out.quota = quota;
            let _ = reply.send(out);
        }
    };
    tokio::join!(attempt_all(&job, tx), forward);
}

async fn attempt_all(job: &Dispatch, reply: oneshot::Sender<CallOutput>) {
    let started = Instant::now();
    let count = job.attempts.len();
    for (i, (model, body)) in job.attempts.iter().enumerate() {
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
            Err(e) => Err(e),
        };
        crate::metrics::observe_upstream(&model.provider.name, upstream_started.elapsed(), status);
        if i + 1 < count {
            if let Some(reason) = retryable(&sent) {
                record_fallback(job, model, &job.attempts[i + 1].0, &reason).await;
                continue;
            }
        }
        match sent {
            Ok(UpstreamReply::Complete(resp)) => complete(job, model, resp, started, reply).await,
            Ok(UpstreamReply::Streaming { chunks, .. }) => {
                stream::relay(job, model, chunks, started, reply).await;
            }
            Err(e) => fail(job, model, e, reply).await,
        }
        return;
    }
}

/// Appends the fallback to the ledger: each attempt is visible there.
async fn record_fallback(job: &Dispatch, from: &ModelRoute, to: &ModelRoute, reason: &str) {
    crate::metrics::upstream_fallback(&from.provider.name, &to.provider.name);
    let r = &job.reservation;
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

/// Releases the hold with `reason`, keeping `answer` (the caller's status and body) for the
/// requests that waited for this attempt; the failure to do so is logged once here.
pub async fn release(
    job: &Dispatch,
    model: &ModelRoute,
    reason: &str,
    status: Option<u16>,
    answer: Option<(u16, Vec<u8>)>,
) {
    let outcome = Outcome::Release {
        reason: reason.to_owned(),
        state: ExecutionState::Released,
        upstream_status: status,
        result: answer.map(|(status, body)| (status, body, false)),
    };
    if let Err(e) =
        settlement::settle(&job.gw, &job.reservation, Priced::Tokens(model), &outcome).await
    {
        tracing::error!(execution_id = %job.reservation.execution_key, error = %e, "release failed after retries");
    }
}

/// No HTTP answer at all: release, and tell the client in the OpenAI shape.
async fn fail(
    job: &Dispatch,
    model: &ModelRoute,
    e: ProviderError,
    reply: oneshot::Sender<CallOutput>,
) {
    let (status, code, reason) = match e {
        ProviderError::Timeout { .. } => (504, "upstream_timeout", "upstream_timeout"),
        _ => (502, "upstream_error", "upstream_unreachable"),
    };
    tracing::warn!(execution_id = %job.reservation.execution_key, error = %e, "upstream call failed");
    let body = openai_error_body(&e.to_string(), "server_error", code, None);
    release(job, model, reason, None, Some((status, body.clone()))).await;
    let _ = reply.send(CallOutput::full(
        &job.reservation.execution_key,
        status,
        JSON,
        body,
    ));
}

/// Rewrites the upstream model name back to the alias the agent used (a complete answer here, a
/// streamed event read as JSON in `stream`).
pub(super) fn rewrite_model(value: &mut Value, alias: &str) {
    if let Some(obj) = value.as_object_mut() {
        if obj.contains_key("model") {
            obj.insert("model".into(), Value::String(alias.to_owned()));
        }
    }
}

/// A complete answer: an error status releases; a success commits its usage.
async fn complete(
    job: &Dispatch,
    model: &ModelRoute,
    response: UpstreamResponse,
    started: Instant,
    reply: oneshot::Sender<CallOutput>,
) {
    let r = &job.reservation;
    let id = r.execution_key.as_str();
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
        release(
            job,
            model,
            &format!("upstream_status_{}", response.status),
            Some(response.status),
            Some((status, body.clone())),
        )
        .await;
        let _ = reply.send(CallOutput::full(id, status, &content_type, body));
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
                    let completion = estimate::count_text(model.tokenizer, &text);
                    (
                        Usage {
                            prompt_tokens: r.estimate.prompt_tokens,
                            completion_tokens: completion,
                        },
                        UsageSource::Estimated,
                    )
                }
            };
            rewrite_model(&mut value, &r.model_alias);
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
            let usage = Usage {
                prompt_tokens: r.estimate.prompt_tokens,
                completion_tokens: 0,
            };
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
    let latency_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    let outcome = Outcome::Commit {
        usage,
        source,
        provider: model.provider.name.clone(),
        result: Some((status, body.clone(), false)),
        latency_ms,
        stream: None,
    };
    let mut out = CallOutput::full(id, status, JSON, body);
    match settlement::settle(&job.gw, r, Priced::Tokens(model), &outcome).await {
        Ok(SettleResult::Committed {
            actual_micro_usd,
            remaining_micro_usd,
        }) => {
            out.cost_micro_usd = Some(actual_micro_usd);
            out.remaining_micro_usd = Some(remaining_micro_usd);
        }
        Ok(_) => {}
        // The provider succeeded: the client gets its answer; the unsettled reservation is left
        // for recovery and the failure is logged once here.
        Err(e) => tracing::error!(execution_id = id, error = %e, "settlement failed after retries"),
    }
    let _ = reply.send(out);
}
