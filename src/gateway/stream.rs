//! Relaying a provider's server-sent events to the client, event by event as they arrive: the
//! model rewritten to the alias in every chunk, the usage-only chunk stripped unless the client
//! asked for it, usage captured (or the output counted when the provider reports none), and the
//! transcript kept for replay. The usual chat chunk takes [`super::chat_chunk`]'s fast path
//! (its bytes kept, only the model value replaced); every other event is read as JSON. However
//! the stream ends — finished, cut by the provider, abandoned by the client (which stops the
//! upstream call), cut because the client stopped reading for `server.stream_write_timeout_seconds`
//! or cut by a shutdown past its drain timeout — what was received is committed:
//! never zero, never a release.

use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::WaitForCancellationFuture;

use super::call::{CallBody, CallOutput, SSE};
use super::chat_chunk;
use super::dispatch::{rewrite_model, Dispatch};
use super::estimate;
use super::settlement::{self, Outcome, Priced, UsageSource};
use crate::config::{ModelRoute, TokenizerKind};
use crate::domain::CallRoute;
use crate::providers::sse::{self, SseSplitter};
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
    tokenizer: TokenizerKind,
    reported: Option<Usage>,
    output: String,
    transcript: Vec<u8>,
    transcript_cap: usize,
    transcript_complete: bool,
    events: u64,
}

impl Relay<'_> {
    /// The bytes to send the client for one upstream event, or `None` to drop it.
    fn event(&mut self, raw: Bytes) -> Option<Bytes> {
        let fast = match self.route {
            CallRoute::ChatCompletions => {
                chat_chunk::relay(&raw, &self.alias_json, &mut self.output)
            }
            _ => None,
        };
        let out = match fast {
            Some(out) => out,
            None => self.event_as_json(raw)?,
        };
        if self.transcript.len() + out.len() <= self.transcript_cap {
            self.transcript.extend_from_slice(&out);
        } else {
            self.transcript_complete = false;
        }
        self.events += 1;
        Some(out)
    }

    /// Any event, read as JSON and written again; `None` drops it.
    fn event_as_json(&mut self, raw: Bytes) -> Option<Bytes> {
        let parsed = sse::parse(&raw);
        match parsed.data.as_deref().map(serde_json::from_str::<Value>) {
            Some(Ok(Value::Object(obj))) => {
                let mut value = Value::Object(obj);
                if !self.inspect(&mut value) {
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
    fn inspect(&mut self, value: &mut Value) -> bool {
        match self.route {
            CallRoute::Responses => {
                let kind = value
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                if kind == "response.output_text.delta" {
                    if let Some(d) = value.get("delta").and_then(Value::as_str) {
                        self.output.push_str(d);
                    }
                }
                if let Some(response) = value.get_mut("response") {
                    if kind.starts_with("response.")
                        && response.get("usage").is_some_and(|u| !u.is_null())
                    {
                        self.reported = usage::reported(CallRoute::Responses, response);
                    }
                    rewrite_model(response, self.alias);
                }
            }
            _ => {
                for choice in value
                    .get("choices")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(delta) = choice.get("delta") {
                        if let Some(text) = delta.get("content").and_then(Value::as_str) {
                            self.output.push_str(text);
                        }
                        for call in delta
                            .get("tool_calls")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                        {
                            if let Some(args) =
                                call.pointer("/function/arguments").and_then(Value::as_str)
                            {
                                self.output.push_str(args);
                            }
                        }
                    }
                }
                if value.get("usage").is_some_and(|u| !u.is_null()) {
                    self.reported = usage::reported(CallRoute::ChatCompletions, value);
                    if !self.client_wants_usage {
                        let usage_only = value
                            .get("choices")
                            .and_then(Value::as_array)
                            .is_some_and(Vec::is_empty);
                        if usage_only {
                            return false;
                        }
                        if let Some(obj) = value.as_object_mut() {
                            obj.remove("usage");
                        }
                    }
                }
            }
        }
        rewrite_model(value, self.alias);
        true
    }

    fn usage(&self, prompt_estimate: u64) -> (Usage, UsageSource) {
        match self.reported {
            Some(u) => (u, UsageSource::Reported),
            None => (
                Usage {
                    prompt_tokens: prompt_estimate,
                    completion_tokens: estimate::count_text(self.tokenizer, &self.output),
                },
                UsageSource::Estimated,
            ),
        }
    }
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
) -> End {
    let mut splitter = SseSplitter::default();
    // Made once, not per chunk: each registers a waiter when it is first polled.
    let client_gone = tx.closed();
    let draining = job.gw.drain_expired.cancelled();
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
                tracing::warn!(execution_id = %job.reservation.execution_key, error = %e, "upstream stream failed mid-way");
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

/// Relays a successful stream to the client and commits what it delivered.
pub async fn relay(
    job: &Dispatch,
    model: &ModelRoute,
    mut chunks: BoxStream<'static, Result<Bytes, ProviderError>>,
    started: Instant,
    reply: oneshot::Sender<CallOutput>,
) {
    let r = &job.reservation;
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let mut head = CallOutput::full(&r.execution_key, 200, SSE, Bytes::new());
    head.body = CallBody::Stream(rx);
    head.remaining_micro_usd = Some(r.remaining_after);
    let end = reply.send(head).is_err().then_some(End::ClientGone);

    let mut relay = Relay {
        route: job.route,
        alias: &r.model_alias,
        alias_json: Value::String(r.model_alias.clone()).to_string(),
        client_wants_usage: job.client_wants_usage,
        tokenizer: model.tokenizer,
        reported: None,
        output: String::new(),
        transcript: Vec::new(),
        transcript_cap: job.gw.settings.max_body_bytes.saturating_mul(4),
        transcript_complete: true,
        events: 0,
    };
    let end = match end {
        Some(end) => end,
        None => pump(&mut relay, &mut chunks, &tx, job).await,
    };
    // Dropping the upstream stream closes its connection: the provider stops generating.
    drop(chunks);
    drop(tx);

    let (usage, source) = relay.usage(r.estimate.prompt_tokens);
    let result = relay
        .transcript_complete
        .then(|| (200, std::mem::take(&mut relay.transcript), true));
    let outcome = Outcome::Commit {
        usage,
        source,
        provider: model.provider.name.clone(),
        result,
        latency_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
        stream: Some((end.as_str(), relay.events)),
    };
    if let Err(e) = settlement::settle(&job.gw, r, Priced::Tokens(model), &outcome).await {
        tracing::error!(execution_id = %r.execution_key, error = %e, "settlement of a stream failed after retries");
    }
}
