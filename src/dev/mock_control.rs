//! The mock provider's knobs and counters ([`MockControl`]), shared with the test that runs it, and
//! what every mock route does first ([`prelude`]: count, record, delay, injected faults) and the
//! mock's billing arithmetic (words as tokens, caps, choices, worst-case inputs).

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::mock_auth::AuthGate;
use super::mock_billing::BillingKnobs;

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
    /// Cached and cache-write tokens and hosted-tool calls to report.
    pub billing: BillingKnobs,
    /// The model ids `GET /v1/models` lists (the mock answers any model; `aex doctor` checks the
    /// routing table's upstream models against this list).
    pub models: Mutex<Vec<String>>,
    /// The auth every call must carry (none: any), and the calls refused for it.
    pub auth: Arc<AuthGate>,
    /// Prompt-cache prefixes written by Anthropic Messages calls (see `mock_anthropic`).
    pub anthropic_cache: Mutex<std::collections::HashSet<u64>>,
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
            billing: BillingKnobs::default(),
            models: Mutex::new(MOCK_MODELS.map(str::to_owned).to_vec()),
            auth: Arc::default(),
            anthropic_cache: Mutex::default(),
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

/// Tokens of a text for the mock's usage: one per whitespace-separated word, plus framing.
/// Deterministic, so tests can predict the bill from the response's own usage.
pub fn words(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.split_whitespace().count() as u64,
        Value::Array(a) => a.iter().map(words).sum(),
        Value::Object(o) => o.values().map(words).sum(),
        _ => 0,
    }
}

/// Common prelude: count, record, delay, and injected faults. `Err` is the response to send.
pub async fn prelude(
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
pub fn output_tokens(c: &MockControl, body: &Value, cap_fields: &[&str]) -> u64 {
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

pub fn choices(body: &Value) -> u64 {
    body.get("n").and_then(Value::as_u64).unwrap_or(1).max(1)
}

/// Input tokens billed: the words of `input`, plus (under `bill_max`) each image part at its
/// worst and stored context filling the window.
pub fn input_tokens(c: &MockControl, body: &Value, input: u64) -> u64 {
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

pub fn text_of(n: u64) -> String {
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
