//! The provider call of an admitted media request and its settlement, on a tracked task that
//! outlives the client: never connected releases the hold; sent and then timed out or lost
//! charges the hold (the provider may have done the work); an error status releases it (a client
//! error is relayed as the provider sent it); a success is billed by its [`Plan::bill`] — the
//! units the provider reports, each at its price — or, when the answer does not say what was
//! done, charged the hold.

use std::time::Instant;

use bytes::Bytes;

use super::plan::Plan;
use crate::config::{ModelRoute, Secret};
use crate::domain::{CallRoute, ExecutionState};
use crate::gateway::call_types::{CallOutput, Hold, JSON};
use crate::gateway::error::openai_error_body;
use crate::gateway::pricing::Pricing;
use crate::gateway::settlement::{self, elapsed_ms, Ambiguous, Commit, Outcome, Release};
use crate::gateway::Gateway;
use crate::providers::media::WholeRequest;
use crate::providers::{ProviderError, UpstreamResponse, Usage};

/// One admitted media call: what the task needs.
pub struct Job<'a> {
    pub gw: &'a Gateway,
    pub route: CallRoute,
    pub model: &'a ModelRoute,
    pub plan: Plan,
    pub passthrough: Option<Secret>,
}

pub async fn run(job: Job<'_>, hold: Hold) -> CallOutput {
    let started = Instant::now();
    let sent = job
        .gw
        .providers
        .http()
        .send_whole(WholeRequest {
            provider: &job.model.provider,
            path: job.route.upstream_path(),
            content_type: &job.plan.upstream_content_type,
            body: job.plan.upstream_body.clone(),
            passthrough_key: job.passthrough.as_ref().map(Secret::expose),
        })
        .await;
    crate::telemetry::record_ms("upstream_ms", started);
    let status = sent.as_ref().map(|r| r.status).map_err(ProviderError::kind);
    crate::metrics::observe_upstream(&job.model.provider.name, started.elapsed(), status);
    match sent {
        Ok(resp) if (200..300).contains(&resp.status) => answered(&job, hold, resp, started).await,
        Ok(resp) => refused(&job, hold, resp).await,
        Err(e) => failed(&job, hold, e, started).await,
    }
}

/// A success: billed by what it reports, or the hold when it does not say.
async fn answered(
    job: &Job<'_>,
    hold: Hold,
    resp: UpstreamResponse,
    started: Instant,
) -> CallOutput {
    let id = hold.execution_key().to_owned();
    let content_type = resp
        .content_type
        .clone()
        .unwrap_or_else(|| job.plan.content_type.clone());
    let body = rewrite_model(&content_type, &resp.body, &job.model.alias);
    let out = CallOutput::full(&id, resp.status, &content_type, body.clone());
    let held = job.plan.held(job.model);
    let Some(bill) = job
        .plan
        .bill(job.model, resp.content_type.as_deref(), &resp.body)
    else {
        let outcome = Outcome::Ambiguous(Ambiguous {
            reason: "upstream_answer_unreadable",
            provider: &job.model.provider.name,
            latency_ms: elapsed_ms(started),
            stream: None,
            result: Some((resp.status, body, false)),
        });
        let pricing = Pricing::Metered(held);
        return settlement::finish(&job.gw.books, hold, pricing, &outcome)
            .await
            .charged(out);
    };
    let pricing = Pricing::Metered(held.billed(bill.units, bill.price.as_deref(), bill.cost));
    let outcome = Outcome::Commit(Commit {
        usage: Usage::tokens(job.plan.prompt_tokens, 0),
        source: bill.source,
        provider: &job.model.provider.name,
        result: Some((resp.status, body, false)),
        latency_ms: elapsed_ms(started),
        stream: None,
        completion_cap: None,
        prompt_bound: job.plan.prompt_tokens,
        hosted_calls_bound: None,
    });
    settlement::finish(&job.gw.books, hold, pricing, &outcome)
        .await
        .charged(out)
}

/// A JSON answer with its `model` given back as the alias; anything else as it came (shared, not
/// copied).
fn rewrite_model(content_type: &str, body: &Bytes, alias: &str) -> Bytes {
    if !content_type.contains("json") {
        return body.clone();
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(mut obj)) if obj.contains_key("model") => {
            obj.insert("model".into(), serde_json::Value::String(alias.to_owned()));
            serde_json::to_vec(&obj).map_or_else(|_| body.clone(), Bytes::from)
        }
        _ => body.clone(),
    }
}

/// An error status: nothing billable happened; the hold is released.
async fn refused(job: &Job<'_>, hold: Hold, resp: UpstreamResponse) -> CallOutput {
    let id = hold.execution_key().to_owned();
    let (status, content_type, body) = if (400..500).contains(&resp.status) && resp.status != 429 {
        let content_type = resp.content_type.unwrap_or_else(|| JSON.to_owned());
        (resp.status, content_type, resp.body)
    } else {
        let message = format!(
            "provider {} returned status {}",
            job.model.provider.name, resp.status
        );
        let body = openai_error_body(&message, "server_error", "upstream_error", None);
        (502, JSON.to_owned(), Bytes::from(body))
    };
    let reason = format!("upstream_status_{}", resp.status);
    let outcome = Outcome::Release(Release {
        reason: &reason,
        state: ExecutionState::Released,
        upstream_status: Some(resp.status),
        result: Some((status, body.clone(), false)),
    });
    let pricing = Pricing::Metered(job.plan.held(job.model));
    settlement::finish(&job.gw.books, hold, pricing, &outcome).await;
    CallOutput::full(&id, status, &content_type, body)
}

/// No answer: never connected releases; sent and then lost or timed out charges the hold.
async fn failed(job: &Job<'_>, hold: Hold, e: ProviderError, started: Instant) -> CallOutput {
    let id = hold.execution_key().to_owned();
    tracing::warn!(execution_id = %id, error = %e, "upstream call failed");
    let pricing = Pricing::Metered(job.plan.held(job.model));
    let (status, code, reason) = match e {
        ProviderError::Connect { .. } => {
            let body = openai_error_body(&e.to_string(), "server_error", "upstream_error", None);
            let body = Bytes::from(body);
            let outcome = Outcome::Release(Release {
                reason: "upstream_unreachable",
                state: ExecutionState::Released,
                upstream_status: None,
                result: Some((502, body.clone(), false)),
            });
            settlement::finish(&job.gw.books, hold, pricing, &outcome).await;
            return CallOutput::full(&id, 502, JSON, body);
        }
        ProviderError::Timeout { .. } => (504, "upstream_timeout", "upstream_timeout"),
        ProviderError::Transport { .. } => (502, "upstream_error", "upstream_connection_lost"),
    };
    let message = format!(
        "{e}; the request had been sent, so the provider may have done the work: its hold of {} micro-USD was charged",
        hold.held.0
    );
    let body = Bytes::from(openai_error_body(&message, "server_error", code, None));
    let outcome = Outcome::Ambiguous(Ambiguous {
        reason,
        provider: &job.model.provider.name,
        latency_ms: elapsed_ms(started),
        stream: None,
        result: Some((status, body.clone(), false)),
    });
    let out = CallOutput::full(&id, status, JSON, body);
    settlement::finish(&job.gw.books, hold, pricing, &outcome)
        .await
        .charged(out)
}
