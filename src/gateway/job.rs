//! The job an admitted model call runs as on its tracked task ([`Dispatch`]), and the endings
//! every way of relaying its answer shares: release the hold, charge it for an ambiguous outcome,
//! give the model its alias back. Both [`super::dispatch`] (a
//! complete answer) and [`super::stream`] (server-sent events) build on this; neither imports
//! the other's internals.

use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;
use tokio::sync::oneshot;

use super::bound::{Bound, Candidate};
use super::call_types::{CallOutput, Granted, Hold};
use super::estimate::Estimate;
use super::outgoing::{self, Outgoing};
use super::pricing::Pricing;
use super::rate_limit::Quota;
use super::settlement::{self, elapsed_ms, Ambiguous, Answer, Outcome, Release, SettleResult};
use super::{estimate, Gateway};
use crate::config::{ModelRoute, Secret};
use crate::domain::{CallRoute, ExecutionState};
use crate::providers::usage::HostedCalls;
use crate::providers::Usage;

/// Everything the task needs; owned, because it outlives the request.
pub struct Dispatch {
    pub gw: Arc<Gateway>,
    /// The estimate the hold covers: the caps sent and the prompt bound.
    pub estimate: Estimate,
    /// What the client is told with every answer.
    pub granted: Granted,
    pub route: CallRoute,
    /// Each candidate model with its bound for this request, in the order to try them.
    pub candidates: Vec<Candidate>,
    /// What the body each candidate is sent is made from.
    pub outgoing: Outgoing,
    pub passthrough: Option<Secret>,
    pub stream: bool,
    pub client_wants_usage: bool,
}

/// Where the client's answer goes: every answer carries the agent's quota after this admission.
pub struct Reply {
    tx: oneshot::Sender<CallOutput>,
    quota: Quota,
}

impl Reply {
    pub fn new(tx: oneshot::Sender<CallOutput>, quota: Quota) -> Self {
        Reply { tx, quota }
    }

    /// Sends the answer, with the quota; false when the client is gone.
    pub fn send(self, mut out: CallOutput) -> bool {
        out.quota = self.quota;
        self.tx.send(out).is_ok()
    }
}

impl Dispatch {
    /// The model alias the agent asked for (the first candidate), which answers carry.
    pub fn alias(&self) -> &str {
        self.candidates
            .first()
            .map_or("", |c| c.model.alias.as_str())
    }

    /// The completion tokens the caps sent to `model` allow: its cap per choice × choices (plus
    /// what its bound adds, such as predicted output).
    pub fn completion_cap(&self, model: &ModelRoute, bound: &Bound) -> Option<u64> {
        outgoing::cap_sent(model, self.estimate.output_cap).map(|cap| bound.output_tokens(cap))
    }

    /// AEX's own count of an answer the provider reported no usage for: the prompt at the model's
    /// input bound, the output counted from its text and never more than the caps sent allow, so
    /// never more than the hold.
    pub fn counted_usage(&self, model: &ModelRoute, bound: &Bound, output: &str) -> Usage {
        let counted = estimate::count_text(model.tokenizer, output);
        Usage::tokens(
            bound.prompt_tokens,
            self.completion_cap(model, bound)
                .map_or(counted, |cap| counted.min(cap)),
        )
    }

    /// The hosted-tool calls billed for an answer: those the provider reported (a responses
    /// answer's call items); for chat, whose answers do not report them, one `web_search` call
    /// when the request asked for a hosted tool (`web_search_options`: OpenAI's search models
    /// search once per request).
    pub fn billed_calls(&self, bound: &Bound, reported: HostedCalls) -> HostedCalls {
        if self.route == CallRoute::ChatCompletions
            && bound.tool_calls.is_some()
            && reported.total() == 0
        {
            let mut calls = HostedCalls::default();
            calls.add("web_search", 1);
            return calls;
        }
        reported
    }
}

/// Releases the hold with `reason`, keeping `answer` (the caller's status and body) for the
/// requests that waited for this attempt; a failure to do so is logged by settlement.
pub async fn release(
    job: &Dispatch,
    hold: Hold,
    served: &Candidate,
    reason: &str,
    status: Option<u16>,
    answer: Option<Answer>,
) {
    let outcome = Outcome::Release(Release {
        reason,
        state: ExecutionState::Released,
        upstream_status: status,
        result: answer,
    });
    let pricing = Pricing::served_by(served);
    settlement::finish(&job.gw.books, hold, pricing, &outcome).await;
}

/// Charges the hold for an ambiguous outcome (`usage: ambiguous`, execution FAILED with
/// `reason`): the provider may have generated, and will bill, the whole answer. `answer` is what
/// the caller got, kept for the requests that waited for this attempt.
pub async fn charge_ambiguous(
    job: &Dispatch,
    hold: Hold,
    served: &Candidate,
    reason: &str,
    started: Instant,
    stream: Option<(&'static str, u64)>,
    answer: Option<Answer>,
) -> SettleResult {
    let outcome = Outcome::Ambiguous(Ambiguous {
        reason,
        provider: &served.model.provider.name,
        latency_ms: elapsed_ms(started),
        stream,
        result: answer,
    });
    let pricing = Pricing::served_by(served);
    settlement::finish(&job.gw.books, hold, pricing, &outcome).await
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
