//! A loopback provider that speaks enough OpenAI for AEX's tests and benchmarks: chat
//! completions (JSON and SSE), responses, embeddings, with usage. Faults can be injected through
//! [`MockControl`] (tests in-process) or fixed at start (the `aex dev mock-upstream` command).
//!
//! Like a provider it generates `n` choices and reads the larger of `max_tokens` and
//! `max_completion_tokens` (the adversarial reading of two caps). With [`MockControl::bill_max`]
//! it bills the most its inputs allow: every choice at the cap (or `uncapped_tokens` without
//! one) plus rejected predicted output, every image part at `image_tokens`, and stored context
//! (`previous_response_id`, `conversation`, file parts, …) filling `context_tokens`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::mock_auth::{self, AuthGate};

/// Knobs and counters shared with the test that runs the mock.
#[derive(Debug)]
pub struct MockControl {
    /// Answer every call with this status (0: normal).
    pub status: AtomicU16,
    /// Delay before answering, in milliseconds.
    pub delay_ms: AtomicU64,
    /// Omit `usage` from responses and streams.
    pub omit_usage: AtomicBool,
    /// Answer 200 with a body that is not JSON.
    pub malformed: AtomicBool,
    /// Completion tokens to generate (bounded by the request's cap).
    pub completion_tokens: AtomicU64,
    /// Chunks in a streamed answer, and the delay between them.
    pub chunks: AtomicU64,
    pub chunk_delay_ms: AtomicU64,
    /// Cut the connection after this many streamed chunks (0: never), as a failing provider does.
    pub cut_after_chunks: AtomicU64,
    /// Streamed chunks actually sent (a dropped client stops the count).
    pub chunks_sent: Arc<AtomicU64>,
    /// After the content of a streamed answer, send keep-alive comments forever instead of
    /// finishing, as a provider holding a stream open does.
    pub hang_after_content: AtomicBool,
    /// Streamed answers whose connection was closed before their last event was sent.
    pub streams_dropped: Arc<AtomicU64>,
    /// Calls received, and their bodies.
    pub calls: AtomicU64,
    pub requests: Mutex<Vec<Value>>,
    /// Authorization headers received.
    pub auth_headers: Mutex<Vec<String>>,
    /// Misbehaviours of a provider: generate `completion_tokens` whatever cap was sent; report
    /// this many completion tokens in `usage` (0: what was generated); answer a stream request
    /// with JSON and a plain one with server-sent events (chat completions).
    pub ignore_cap: AtomicBool,
    pub reported_completion_tokens: AtomicU64,
    pub swap_content_type: AtomicBool,
    /// Keep bodies and headers for a test to inspect. Off for a standalone mock: nothing can
    /// read them there, and under a benchmark they would grow without bound.
    pub record: AtomicBool,
    /// Calls being answered now (received, not yet answered or given up by the caller), and the
    /// most there ever were at once.
    pub in_flight: AtomicU64,
    pub peak_in_flight: AtomicU64,
    /// Hold every call before answering until [`MockControl::open_gate`].
    pub gate_closed: AtomicBool,
    gate: tokio::sync::Notify,
    /// Bill the maximum the request allows, as a provider that takes everything it may.
    pub bill_max: AtomicBool,
    /// Under `bill_max`: tokens billed per image part, for stored context, per choice without a cap.
    pub image_tokens: AtomicU64,
    pub context_tokens: AtomicU64,
    pub uncapped_tokens: AtomicU64,
    /// The model ids `GET /v1/models` lists (the mock answers any model; `aex doctor` checks the
    /// routing table's upstream models against this list).
    pub models: Mutex<Vec<String>>,
    /// The auth every call must carry (none: any), and the calls refused for it.
    pub auth: Arc<AuthGate>,
}

/// What the mock lists by default: the upstream models of the tests' routing table and of the
/// starter `models.toml` that `aex init` writes.
pub const MOCK_MODELS: [&str; 7] = [
    "mock-gpt-4o-mini",
    "mock-pricey",
    "mock-slow",
    "mock-embedding",
    "gpt-4o-mini",
    "gpt-4o",
    "text-embedding-3-small",
];

impl Default for MockControl {
    fn default() -> Self {
        MockControl {
            status: AtomicU16::new(0),
            delay_ms: AtomicU64::new(0),
            omit_usage: AtomicBool::new(false),
            malformed: AtomicBool::new(false),
            completion_tokens: AtomicU64::new(20),
            chunks: AtomicU64::new(5),
            chunk_delay_ms: AtomicU64::new(0),
            cut_after_chunks: AtomicU64::new(0),
            chunks_sent: Arc::new(AtomicU64::new(0)),
            hang_after_content: AtomicBool::new(false),
            streams_dropped: Arc::new(AtomicU64::new(0)),
            calls: AtomicU64::new(0),
            requests: Mutex::new(Vec::new()),
            auth_headers: Mutex::new(Vec::new()),
            record: AtomicBool::new(true),
            ignore_cap: AtomicBool::new(false),
            reported_completion_tokens: AtomicU64::new(0),
            swap_content_type: AtomicBool::new(false),
            in_flight: AtomicU64::new(0),
            peak_in_flight: AtomicU64::new(0),
            gate_closed: AtomicBool::new(false),
            gate: tokio::sync::Notify::new(),
            bill_max: AtomicBool::new(false),
            // gpt-4o-mini's largest high-detail image, and its context window.
            image_tokens: AtomicU64::new(48_169),
            context_tokens: AtomicU64::new(128_000),
            uncapped_tokens: AtomicU64::new(100_000),
            models: Mutex::new(MOCK_MODELS.map(str::to_owned).to_vec()),
            auth: Arc::default(),
        }
    }
}

/// Counts a call in flight until it is answered or dropped.
struct InFlight<'a>(&'a MockControl);

impl<'a> InFlight<'a> {
    fn enter(c: &'a MockControl) -> Self {
        let now = c.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        c.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(c)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl MockControl {
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn last_request(&self) -> Option<Value> {
        self.requests.lock().ok().and_then(|r| r.last().cloned())
    }

    /// Lets every held call (and every later one) go on.
    pub fn open_gate(&self) {
        self.gate_closed.store(false, Ordering::SeqCst);
        self.gate.notify_waiters();
    }

    /// Waits while the gate is closed.
    async fn pass_gate(&self) {
        loop {
            let opened = self.gate.notified();
            tokio::pin!(opened);
            // Registered before the flag is read, so an opening in between is not missed.
            opened.as_mut().enable();
            if !self.gate_closed.load(Ordering::SeqCst) {
                return;
            }
            opened.await;
        }
    }
}

/// The mock's routes.
pub fn router(control: Arc<MockControl>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/responses", post(responses))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(list_models))
        // Azure OpenAI's layout: the deployment in the path, `api-version` in the query.
        .route(
            "/openai/deployments/{deployment}/chat/completions",
            post(chat),
        )
        .route(
            "/openai/deployments/{deployment}/embeddings",
            post(embeddings),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&control.auth),
            mock_auth::check,
        ))
        .route("/health", get(|| async { "ok" }))
        .with_state(control)
}

/// Serves the mock on `addr` (port 0 for any free port) in the background.
pub async fn spawn(addr: SocketAddr, control: Arc<MockControl>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    // Like a provider's edge: each SSE chunk goes out as it is written (no Nagle delay).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, router(control)).await;
    });
    Ok(bound)
}

/// Tokens of a text for the mock's usage: one per whitespace-separated word, plus framing.
/// Deterministic, so tests can predict the bill from the response's own usage.
fn words(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.split_whitespace().count() as u64,
        Value::Array(a) => a.iter().map(words).sum(),
        Value::Object(o) => o.values().map(words).sum(),
        _ => 0,
    }
}

/// Common prelude: count, record, delay, and injected faults. `Err` is the response to send.
async fn prelude(
    c: &MockControl,
    headers: &axum::http::HeaderMap,
    body: &Value,
) -> Result<(), Response> {
    c.calls.fetch_add(1, Ordering::SeqCst);
    if c.record.load(Ordering::Relaxed) {
        if let Ok(mut r) = c.requests.lock() {
            r.push(body.clone());
        }
        if let Some(a) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        {
            if let Ok(mut h) = c.auth_headers.lock() {
                h.push(a.to_owned());
            }
        }
    }
    let _in_flight = InFlight::enter(c);
    c.pass_gate().await;
    let delay = c.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let status = c.status.load(Ordering::SeqCst);
    if status != 0 {
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let err = json!({"error": {"message": format!("mock failure {status}"), "type": "mock_error", "param": null, "code": "mock"}});
        return Err((code, Json(err)).into_response());
    }
    if c.malformed.load(Ordering::SeqCst) {
        return Err((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "{not json",
        )
            .into_response());
    }
    Ok(())
}

/// Output tokens per choice: the larger cap field read, as the most a provider may generate.
fn output_tokens(c: &MockControl, body: &Value, cap_fields: &[&str]) -> u64 {
    let cap = cap_fields
        .iter()
        .filter_map(|f| body.get(*f).and_then(Value::as_u64))
        .max();
    if c.bill_max.load(Ordering::SeqCst) {
        let predicted = body.pointer("/prediction/content").map_or(0, words);
        return cap.unwrap_or_else(|| c.uncapped_tokens.load(Ordering::SeqCst)) + predicted;
    }
    let wanted = c.completion_tokens.load(Ordering::SeqCst);
    if c.ignore_cap.load(Ordering::SeqCst) {
        return wanted;
    }
    cap.map_or(wanted, |cap| wanted.min(cap))
}

fn choices(body: &Value) -> u64 {
    body.get("n").and_then(Value::as_u64).unwrap_or(1).max(1)
}

/// Input tokens billed: the words of `input`, plus (under `bill_max`) each image part at its
/// worst and stored context filling the window.
fn input_tokens(c: &MockControl, body: &Value, input: u64) -> u64 {
    if !c.bill_max.load(Ordering::SeqCst) {
        return input;
    }
    let text = serde_json::to_string(body).unwrap_or_default();
    let images = ["\"image_url\"", "\"input_image\""]
        .iter()
        .map(|t| text.matches(&format!("\"type\":{t}")).count() as u64)
        .sum::<u64>();
    let input = input + images * c.image_tokens.load(Ordering::SeqCst);
    let stored = ["previous_response_id", "conversation", "prompt"]
        .iter()
        .any(|f| body.get(*f).is_some_and(|v| !v.is_null()))
        || ["\"file\"", "\"input_file\"", "\"item_reference\""]
            .iter()
            .any(|t| text.contains(&format!("\"type\":{t}")));
    if stored {
        input.max(c.context_tokens.load(Ordering::SeqCst))
    } else {
        input
    }
}

fn text_of(n: u64) -> String {
    (0..n)
        .map(|i| {
            if i == 0 {
                "Hello".to_owned()
            } else {
                format!(" w{i}")
            }
        })
        .collect()
}

async fn chat(
    State(c): State<Arc<MockControl>>,
    headers: axum::http::HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Err(r) = prelude(&c, &headers, &body).await {
        return r;
    }
    let model = body.get("model").cloned().unwrap_or(Value::Null);
    let prompt = input_tokens(
        &c,
        &body,
        3 + words(body.get("messages").unwrap_or(&Value::Null)),
    );
    let n = choices(&body);
    let per_choice = output_tokens(&c, &body, &["max_completion_tokens", "max_tokens"]);
    let completion = n * per_choice;
    let reported = match c.reported_completion_tokens.load(Ordering::SeqCst) {
        0 => completion,
        lie => lie,
    };
    let with_usage = !c.omit_usage.load(Ordering::SeqCst);
    let asked_stream = body.get("stream").and_then(Value::as_bool) == Some(true);
    let swapped = c.swap_content_type.load(Ordering::SeqCst);
    if asked_stream != swapped {
        let include_usage = body
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true);
        let usage = (with_usage && (include_usage || swapped)).then_some(reported);
        return stream_chat(c, model, prompt, (n, per_choice), usage);
    }
    let tool_call = body
        .get("tools")
        .and_then(Value::as_array)
        .and_then(|t| t.first())
        .and_then(|t| t.pointer("/function/name"))
        .cloned();
    let wants_tool = tool_call.is_some()
        && body.get("tool_choice").and_then(Value::as_str) != Some("none")
        && !body
            .get("messages")
            .and_then(Value::as_array)
            .is_some_and(|m| {
                m.iter()
                    .any(|x| x.get("role").and_then(Value::as_str) == Some("tool"))
            });
    let message = if wants_tool {
        json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_mock_1", "type": "function", "function": {"name": tool_call, "arguments": "{\"city\":\"Paris\"}"}}]})
    } else if body
        .pointer("/response_format/type")
        .and_then(Value::as_str)
        .is_some_and(|t| t.starts_with("json"))
    {
        json!({"role": "assistant", "content": "{\"answer\":\"mock\"}"})
    } else {
        json!({"role": "assistant", "content": text_of(per_choice)})
    };
    let finish = if wants_tool { "tool_calls" } else { "stop" };
    let choices: Vec<Value> = (0..n)
        .map(|i| json!({"index": i, "message": message, "finish_reason": finish}))
        .collect();
    let mut out = json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": choices,
    });
    if with_usage {
        out["usage"] = json!({"prompt_tokens": prompt, "completion_tokens": reported, "total_tokens": prompt.saturating_add(reported)});
    }
    Json(out).into_response()
}

/// A streamed chat answer: each of `choices.0` choices generates `choices.1` tokens.
fn stream_chat(
    c: Arc<MockControl>,
    model: Value,
    prompt: u64,
    (n, per_choice): (u64, u64),
    reported_usage: Option<u64>,
) -> Response {
    let chunks = c.chunks.load(Ordering::SeqCst).max(1);
    let chunk = |index: u64, delta: Value, finish: Value| {
        let v = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
            "choices": [{"index": index, "delta": delta, "finish_reason": finish}]});
        format!("data: {v}\n\n")
    };
    let mut events = Vec::new();
    for index in 0..n {
        events.push(chunk(
            index,
            json!({"role": "assistant", "content": ""}),
            Value::Null,
        ));
        for k in spread(per_choice, chunks) {
            let text: String = (0..k).map(|_| " w").collect();
            events.push(chunk(index, json!({"content": text}), Value::Null));
        }
        events.push(chunk(index, json!({}), json!("stop")));
    }
    // A hanging stream stops here: its choices finished, no usage, no `[DONE]`.
    let content = events.len();
    if let Some(reported) = reported_usage {
        let v = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model, "choices": [],
            "usage": {"prompt_tokens": prompt, "completion_tokens": reported, "total_tokens": prompt.saturating_add(reported)}});
        events.push(format!("data: {v}\n\n"));
    }
    events.push("data: [DONE]\n\n".to_owned());
    sse_response(&c, events, content)
}

/// `total` tokens spread over `chunks` chunks, as evenly as whole words allow.
fn spread(total: u64, chunks: u64) -> Vec<u64> {
    let per = total.div_ceil(chunks);
    let mut left = total;
    (0..chunks)
        .map(|_| {
            let n = per.min(left);
            left -= n;
            n
        })
        .collect()
}

/// Counts a streamed answer whose body was dropped before its end: the connection was closed.
struct DropWatch {
    dropped: Arc<AtomicU64>,
    ended: bool,
}

impl DropWatch {
    fn ended(&mut self) {
        self.ended = true;
    }
}

impl Drop for DropWatch {
    fn drop(&mut self) {
        if !self.ended {
            self.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Streams `events` (the first `content` of them the answer's content) with the configured
/// delay between them; counts what was sent; cuts the connection mid-way when told to; after
/// the content, sends keep-alive comments forever when told to hang.
fn sse_response(c: &MockControl, mut events: Vec<String>, content: usize) -> Response {
    let delay = Duration::from_millis(c.chunk_delay_ms.load(Ordering::SeqCst));
    let cut = c.cut_after_chunks.load(Ordering::SeqCst);
    let sent = Arc::clone(&c.chunks_sent);
    let events: Box<dyn Iterator<Item = String> + Send> =
        if c.hang_after_content.load(Ordering::SeqCst) {
            events.truncate(content);
            let keep_alive = format!(": {}\n\n", "x".repeat(16 * 1024));
            Box::new(events.into_iter().chain(std::iter::repeat(keep_alive)))
        } else {
            Box::new(events.into_iter())
        };
    let watch = DropWatch {
        dropped: Arc::clone(&c.streams_dropped),
        ended: false,
    };
    let stream = futures::stream::unfold((events, 0u64, watch), move |(mut it, n, mut watch)| {
        let sent = Arc::clone(&sent);
        async move {
            if cut > 0 && n >= cut {
                watch.ended();
                return Some((
                    Err(std::io::Error::other("mock cut the stream")),
                    (it, n + 1, watch),
                ))
                .filter(|_| n == cut);
            }
            let Some(next) = it.next() else {
                watch.ended();
                return None;
            };
            if n > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            sent.fetch_add(1, Ordering::SeqCst);
            Some((Ok(bytes::Bytes::from(next)), (it, n + 1, watch)))
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn stream_responses(
    c: Arc<MockControl>,
    model: Value,
    input: u64,
    output: u64,
    with_usage: bool,
) -> Response {
    let chunks = c.chunks.load(Ordering::SeqCst).max(1);
    let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let response = |status: &str, usage: Value| {
        json!({"id": "resp_mock", "object": "response", "created_at": 1_700_000_000,
        "status": status, "model": model, "output": [], "usage": usage})
    };
    let mut events = vec![event(
        "response.created",
        json!({"type": "response.created", "response": response("in_progress", Value::Null)}),
    )];
    for n in spread(output, chunks) {
        let text: String = (0..n).map(|_| " w").collect();
        events.push(event("response.output_text.delta", json!({"type": "response.output_text.delta", "item_id": "msg_mock", "output_index": 0, "content_index": 0, "delta": text})));
    }
    let content = events.len();
    let usage = if with_usage {
        json!({"input_tokens": input, "output_tokens": output, "total_tokens": input + output})
    } else {
        Value::Null
    };
    events.push(event(
        "response.completed",
        json!({"type": "response.completed", "response": response("completed", usage)}),
    ));
    sse_response(&c, events, content)
}

async fn responses(
    State(c): State<Arc<MockControl>>,
    headers: axum::http::HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Err(r) = prelude(&c, &headers, &body).await {
        return r;
    }
    let input = input_tokens(
        &c,
        &body,
        3 + words(body.get("input").unwrap_or(&Value::Null))
            + words(body.get("instructions").unwrap_or(&Value::Null)),
    );
    let output = choices(&body) * output_tokens(&c, &body, &["max_output_tokens"]);
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        let model = body.get("model").cloned().unwrap_or(Value::Null);
        let with_usage = !c.omit_usage.load(Ordering::SeqCst);
        return stream_responses(Arc::clone(&c), model, input, output, with_usage);
    }
    let mut out = json!({
        "id": "resp_mock",
        "object": "response",
        "created_at": 1_700_000_000,
        "status": "completed",
        "model": body.get("model").cloned().unwrap_or(Value::Null),
        "output": [{"type": "message", "id": "msg_mock", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": text_of(output), "annotations": []}]}],
    });
    if !c.omit_usage.load(Ordering::SeqCst) {
        out["usage"] =
            json!({"input_tokens": input, "output_tokens": output, "total_tokens": input + output});
    }
    Json(out).into_response()
}

/// OpenAI's model list.
async fn list_models(State(c): State<Arc<MockControl>>) -> Response {
    let ids = c.models.lock().map(|m| m.clone()).unwrap_or_default();
    let data: Vec<Value> = ids
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "mock"}))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

async fn embeddings(
    State(c): State<Arc<MockControl>>,
    headers: axum::http::HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Err(r) = prelude(&c, &headers, &body).await {
        return r;
    }
    let inputs: Vec<Value> = match body.get("input") {
        Some(Value::Array(a)) => a.clone(),
        Some(v) => vec![v.clone()],
        None => vec![],
    };
    // Token ids bill one each; text by its words.
    let tokens: u64 = inputs
        .iter()
        .map(|i| match i {
            Value::Array(ids) => ids.len() as u64,
            Value::Number(_) => 1,
            other => words(other).max(1),
        })
        .sum();
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, _)| json!({"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3, 0.4]}))
        .collect();
    let mut out = json!({"object": "list", "data": data, "model": body.get("model").cloned().unwrap_or(Value::Null)});
    if !c.omit_usage.load(Ordering::SeqCst) {
        out["usage"] = json!({"prompt_tokens": tokens, "total_tokens": tokens});
    }
    Json(out).into_response()
}
