//! Relaying a provider's server-sent events to the client, event by event as they arrive: the
//! model rewritten to the alias in every chunk, the usage-only chunk stripped unless the client
//! asked for it, usage captured (or the output counted when the provider reports none, capped at
//! the caps sent), and the transcript kept for replay. The usual chat chunk takes
//! [`super::chat_chunk`]'s fast path (its bytes kept, only the model value replaced); every other
//! event is read as JSON.
//!
//! Read-your-writes (SPEC §3): the stream's ending — from the usage chunk, `[DONE]`, or once every
//! choice has its finishing chunk, for chat; `response.completed`/`failed`/`incomplete` for
//! responses; `message_delta`/`message_stop` for Anthropic's Messages — is held back until the settlement has committed, and its last JSON event then
//! carries `"aex": {"cost_micro_usd", "budget_remaining_micro_usd"}`: a client holding the last
//! byte can read its books and see this call in them.
//!
//! However the stream ends, it is settled: finished, or abandoned by the client (which stops the
//! upstream call), cut because the client stopped reading for
//! `server.stream_write_timeout_seconds`, or cut by a shutdown past its drain timeout, what was
//! received is committed, never zero; cut by the provider (a timeout or a lost connection), it is
//! ambiguous and the hold is charged unless the provider had already reported its usage.

use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::WaitForCancellationFuture;

use super::bound::{Bound, Candidate};
use super::call_types::{CallBody, CallOutput, Hold, SSE};
use super::chat_chunk;
use super::job::{self, rewrite_model, Dispatch, Reply};
use super::messages_events::MessagesStream;
use super::pricing::Pricing;
use super::settlement::{self, elapsed_ms, Answer, Commit, Outcome, SettleResult, UsageSource};
use crate::domain::CallRoute;
use crate::providers::sse::{self, SseSplitter};
use crate::providers::usage::HostedCalls;
use crate::providers::{usage, ProviderError, Usage};

/// How a relayed stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Finished,
    ClientGone,
    /// The client took nothing for `server.stream_write_timeout_seconds`.
    ClientStalled,
    UpstreamFailed,
    /// Cut by a shutdown whose drain timeout passed.
    ServerDraining,
}

impl End {
    fn as_str(self) -> &'static str {
        match self {
            End::Finished => "finished",
            End::ClientGone => "client_disconnected",
            End::ClientStalled => "client_stalled",
            End::UpstreamFailed => "upstream_failed",
            End::ServerDraining => "server_draining",
        }
    }
}

/// Per-stream state: what was seen, what was sent.
struct Relay<'a> {
    route: CallRoute,
    alias: &'a str,
    /// The alias as a JSON string, as the fast path writes it into chunks.
    alias_json: String,
    client_wants_usage: bool,
    reported: Option<Usage>,
    /// Hosted-tool calls seen in `response.output_item.done` events.
    hosted_calls: HostedCalls,
    output: String,
    transcript: Vec<u8>,
    transcript_cap: usize,
    transcript_complete: bool,
    events: u64,
    /// Whether the stream's ending has begun: from then on events are held until settlement.
    /// For chat it begins with the usage chunk, `[DONE]`, or once every one of the `choices`
    /// has its finishing chunk (`finished` counts them).
    ending: bool,
    choices: u64,
    finished: u64,
    held: Vec<Bytes>,
    /// For Anthropic's Messages: the usage seen so far.
    messages: MessagesStream,
}

impl Relay<'_> {
    /// The bytes to send the client now for one upstream event, or `None` when it is dropped or
    /// held until settlement.
    fn event(&mut self, raw: Bytes) -> Option<Bytes> {
        let fast = match self.route {
            CallRoute::ChatCompletions => {
                self.ending |= chat_chunk::is_done(&raw);
                chat_chunk::relay(&raw, &self.alias_json, &mut self.output, &mut self.finished)
            }
            _ => None,
        };
        let out = match fast {
            Some(out) => out,
            None => self.event_as_json(raw)?,
        };
        self.ending |= self.route == CallRoute::ChatCompletions && self.finished >= self.choices;
        if self.transcript.len() + out.len() <= self.transcript_cap {
            self.transcript.extend_from_slice(&out);
        } else {
            self.transcript_complete = false;
        }
        self.events += 1;
        // Comments and keep-alives carry no data: they still flow while the ending is held, so a
        // provider holding the stream open after its last chunk keeps the client's connection
        // (and its stall detection) alive.
        if self.ending && sse::parse(&out).data.is_some() {
            self.held.push(out);
            return None;
        }
        Some(out)
    }

    /// Any event, read as JSON and written again; `None` drops it.
    fn event_as_json(&mut self, raw: Bytes) -> Option<Bytes> {
        let parsed = sse::parse(&raw);
        match parsed.data.as_deref().map(serde_json::from_str::<Value>) {
            Some(Ok(Value::Object(obj))) => {
                let mut value = Value::Object(obj);
                let keep = match self.route {
                    CallRoute::Messages => self.inspect_message(&mut value),
                    _ => self.inspect(&mut value),
                };
                if !keep {
                    return None;
                }
                Some(Bytes::from(sse::format(
                    parsed.event.as_deref(),
                    &value.to_string(),
                )))
            }
            // `[DONE]`, comments, keep-alives and anything else pass through untouched.
            _ => Some(raw),
        }
    }

    /// Captures usage and output text, rewrites the model; false drops the event.
    /// An Anthropic Messages event: the model is inside `message_start`'s message only.
    fn inspect_message(&mut self, value: &mut Value) -> bool {
        let seen = self.messages.inspect(value, self.alias, &mut self.output);
        self.ending |= seen.ending;
        if seen.usage.is_some() {
            self.reported = seen.usage;
        }
        true
    }

    fn inspect(&mut self, value: &mut Value) -> bool {
        match self.route {
            CallRoute::Responses => self.inspect_response_event(value),
            _ => {
                if !self.inspect_chat_chunk(value) {
                    return false;
                }
            }
        }
        rewrite_model(value, self.alias);
        true
    }

    /// A responses event: its ending, hosted-tool calls, output text and usage; the model inside
    /// `response` given back as the alias.
    fn inspect_response_event(&mut self, value: &mut Value) {
        let kind = value
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        self.ending |= matches!(
            kind.as_str(),
            "response.completed" | "response.failed" | "response.incomplete"
        );
        if kind == "response.output_item.done" {
            if let Some(item) = value.get("item") {
                self.hosted_calls.count_item(item);
            }
        }
        if kind == "response.output_text.delta" {
            if let Some(d) = value.get("delta").and_then(Value::as_str) {
                self.output.push_str(d);
            }
        }
        if let Some(response) = value.get_mut("response") {
            if kind.starts_with("response.") && response.get("usage").is_some_and(|u| !u.is_null())
            {
                self.reported = usage::reported(CallRoute::Responses, response);
            }
            rewrite_model(response, self.alias);
        }
    }

    /// A chat (or legacy completion) chunk read as JSON: its output text, finished choices and
    /// usage; false drops it (the usage-only chunk the client did not ask for).
    fn inspect_chat_chunk(&mut self, value: &mut Value) -> bool {
        let choices = value.get("choices").and_then(Value::as_array);
        for choice in choices.into_iter().flatten() {
            // A legacy completion's chunk carries its text directly.
            if let Some(text) = choice.get("text").and_then(Value::as_str) {
                self.output.push_str(text);
            }
            let Some(delta) = choice.get("delta") else {
                continue;
            };
            if let Some(text) = delta.get("content").and_then(Value::as_str) {
                self.output.push_str(text);
            }
            let calls = delta.get("tool_calls").and_then(Value::as_array);
            for call in calls.into_iter().flatten() {
                if let Some(args) = call.pointer("/function/arguments").and_then(Value::as_str) {
                    self.output.push_str(args);
                }
            }
        }
        self.finished += choices.map_or(0, |c| {
            c.iter()
                .filter(|c| c.get("finish_reason").is_some_and(|f| !f.is_null()))
                .count() as u64
        });
        if value.get("usage").is_none_or(Value::is_null) {
            return true;
        }
        self.ending = true;
        self.reported = usage::reported(CallRoute::ChatCompletions, value);
        if self.client_wants_usage {
            return true;
        }
        let usage_only = choices.is_some_and(Vec::is_empty);
        if usage_only {
            return false;
        }
        if let Some(obj) = value.as_object_mut() {
            obj.remove("usage");
        }
        true
    }

    /// The held ending, its last JSON event carrying what settlement charged.
    fn ending_with(&mut self, aex: &Value) -> Vec<Bytes> {
        let mut held = std::mem::take(&mut self.held);
        for event in held.iter_mut().rev() {
            if let Some(carrying) = with_aex(event, aex) {
                *event = carrying;
                break;
            }
        }
        held
    }
}

/// `event` with `"aex"` added to its JSON object; `None` when its data is not a JSON object.
fn with_aex(event: &[u8], aex: &Value) -> Option<Bytes> {
    let parsed = sse::parse(event);
    let Ok(Value::Object(mut obj)) = serde_json::from_str::<Value>(parsed.data.as_deref()?) else {
        return None;
    };
    obj.insert("aex".into(), aex.clone());
    let data = Value::Object(obj).to_string();
    Some(Bytes::from(sse::format(parsed.event.as_deref(), &data)))
}

/// Hands one event to the client, unless the client takes nothing for the stream write timeout
/// or a shutdown's drain timeout passes first: a client that stops reading must not keep its
/// hold and its upstream connection forever.
async fn deliver(
    tx: &mpsc::Sender<Bytes>,
    out: Bytes,
    job: &Dispatch,
    draining: &mut Pin<&mut WaitForCancellationFuture<'_>>,
) -> Result<(), End> {
    let patience = Duration::from_secs(job.gw.settings.server.stream_write_timeout_seconds);
    tokio::select! {
        biased;
        () = draining.as_mut() => Err(End::ServerDraining),
        sent = tokio::time::timeout(patience, tx.send(out)) => match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::ClientGone),
            Err(_) => Err(End::ClientStalled),
        },
    }
}

/// Relays events as they arrive until the stream ends, the client goes or stalls, or a
/// shutdown's drain timeout passes.
async fn pump(
    relay: &mut Relay<'_>,
    chunks: &mut BoxStream<'static, Result<Bytes, ProviderError>>,
    tx: &mpsc::Sender<Bytes>,
    job: &Dispatch,
    execution_id: &str,
) -> End {
    let mut splitter = SseSplitter::default();
    // Made once, not per chunk: each registers a waiter when it is first polled.
    let client_gone = tx.closed();
    let draining = job.gw.books.drain_expired.cancelled();
    tokio::pin!(client_gone, draining);
    loop {
        let next = tokio::select! {
            biased;
            () = &mut client_gone => return End::ClientGone,
            () = &mut draining => return End::ServerDraining,
            next = chunks.next() => next,
        };
        let bytes = match next {
            Some(Ok(bytes)) => bytes,
            Some(Err(e)) => {
                tracing::warn!(execution_id, error = %e, "upstream stream failed mid-way");
                return End::UpstreamFailed;
            }
            None => break,
        };
        splitter.push(&bytes);
        while let Some(event) = splitter.next_event() {
            if let Some(out) = relay.event(event) {
                if let Err(end) = deliver(tx, out, job, &mut draining).await {
                    return end;
                }
            }
        }
    }
    if let Some(out) = splitter.finish().and_then(|rest| relay.event(rest)) {
        if let Err(end) = deliver(tx, out, job, &mut draining).await {
            return end;
        }
    }
    End::Finished
}

impl<'a> Relay<'a> {
    fn new(job: &'a Dispatch, bound: &Bound) -> Self {
        Relay {
            route: job.route,
            alias: job.alias(),
            alias_json: Value::String(job.alias().to_owned()).to_string(),
            client_wants_usage: job.client_wants_usage,
            reported: None,
            hosted_calls: HostedCalls::default(),
            output: String::new(),
            transcript: Vec::new(),
            transcript_cap: job.gw.settings.max_body_bytes.saturating_mul(4),
            transcript_complete: true,
            events: 0,
            ending: false,
            choices: bound.choices.max(1),
            finished: 0,
            held: Vec::new(),
            messages: MessagesStream::default(),
        }
    }

    /// The transcript, when it was kept whole: what the caller got, cached for replay and for
    /// the requests that waited for this attempt.
    fn answer(&mut self) -> Option<Answer> {
        self.transcript_complete
            .then(|| (200, Bytes::from(std::mem::take(&mut self.transcript)), true))
    }
}

/// Relays a successful stream to the client, settles it, then sends its ending.
pub async fn relay(
    job: &Dispatch,
    hold: Hold,
    served: &Candidate,
    mut chunks: BoxStream<'static, Result<Bytes, ProviderError>>,
    started: Instant,
    reply: Reply,
) {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let mut head = CallOutput::full(hold.execution_key(), 200, SSE, Bytes::new());
    head.body = CallBody::Stream(rx);
    head.remaining_micro_usd = Some(job.granted.remaining_after);
    let client_gone = !reply.send(head);

    let mut relay = Relay::new(job, &served.bound);
    let end = match client_gone {
        true => End::ClientGone,
        false => pump(&mut relay, &mut chunks, &tx, job, hold.execution_key()).await,
    };
    // Dropping the upstream stream closes its connection: the provider stops generating.
    drop(chunks);
    let upstream_ended = Instant::now();
    let settled = settle(job, hold, served, &mut relay, end, started).await;
    if matches!(end, End::ClientGone | End::ClientStalled) || relay.held.is_empty() {
        return;
    }
    let aex = match settled {
        SettleResult::Committed {
            actual_micro_usd,
            remaining_micro_usd,
        } => {
            json!({"cost_micro_usd": actual_micro_usd, "budget_remaining_micro_usd": remaining_micro_usd})
        }
        _ => Value::Null,
    };
    let draining = job.gw.books.drain_expired.cancelled();
    tokio::pin!(draining);
    for event in relay.ending_with(&aex) {
        if deliver(&tx, event, job, &mut draining).await.is_err() {
            return;
        }
    }
    crate::metrics::observe_stream_final_wait(upstream_ended.elapsed());
}

/// Settles a relayed stream that ended with `end`: cut by the provider before it reported usage,
/// the hold is charged (it may have generated, and bill, the whole answer); otherwise what was
/// received is committed, at the usage reported or else counted.
async fn settle(
    job: &Dispatch,
    hold: Hold,
    served: &Candidate,
    relay: &mut Relay<'_>,
    end: End,
    started: Instant,
) -> SettleResult {
    let (model, bound) = (&served.model, &served.bound);
    let stream = Some((end.as_str(), relay.events));
    if let (End::UpstreamFailed, None) = (end, relay.reported) {
        let reason = "upstream_stream_failed";
        let answer = relay.answer();
        return job::charge_ambiguous(job, hold, served, reason, started, stream, answer).await;
    }
    let (mut usage, source) = match relay.reported {
        Some(u) => (u, UsageSource::Reported),
        None => (
            job.counted_usage(model, bound, &relay.output),
            UsageSource::Estimated,
        ),
    };
    // The completed response lists its calls when it carries its output; else the items
    // streamed as they finished.
    if usage.hosted_calls.total() == 0 {
        usage.hosted_calls = relay.hosted_calls;
    }
    usage.hosted_calls = job.billed_calls(bound, usage.hosted_calls);
    let outcome = Outcome::Commit(Commit {
        usage,
        source,
        provider: &model.provider.name,
        result: relay.answer(),
        latency_ms: elapsed_ms(started),
        stream,
        completion_cap: job.completion_cap(model, bound),
        prompt_bound: job.estimate.prompt_tokens,
        hosted_calls_bound: bound.tool_calls,
    });
    let pricing = Pricing::served_by(served);
    settlement::finish(&job.gw.books, hold, pricing, &outcome).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_aex_object_goes_on_the_last_json_event_of_the_ending() {
        let aex = json!({"cost_micro_usd": 7, "budget_remaining_micro_usd": 93});
        let carried = with_aex(
            b"event: response.completed\ndata: {\"type\":\"x\"}\n\n",
            &aex,
        );
        let carried = String::from_utf8(carried.unwrap().to_vec()).unwrap();
        assert!(carried.starts_with("event: response.completed\ndata: {"));
        let data: Value =
            serde_json::from_str(sse::parse(carried.as_bytes()).data.as_deref().unwrap()).unwrap();
        assert_eq!(data["aex"], aex);
        assert_eq!(data["type"], "x");
        assert!(with_aex(b"data: [DONE]\n\n", &aex).is_none());
        assert!(with_aex(b": keep-alive\n\n", &aex).is_none());
    }
}
