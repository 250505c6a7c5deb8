//! A loopback provider that speaks enough OpenAI for AEX's tests and benchmarks: chat
//! completions (JSON and SSE), responses, embeddings, with usage (cached tokens and hosted-tool
//! calls as [`super::mock_billing`] reports them). Faults can be injected through
//! [`MockControl`] (tests in-process) or fixed at start (the `aex dev mock-upstream` command).
//!
//! Like a provider it generates `n` choices and reads the larger of `max_tokens` and
//! `max_completion_tokens` (the adversarial reading of two caps). With [`MockControl::bill_max`]
//! it bills the most its inputs allow: every choice at the cap (or `uncapped_tokens` without
//! one) plus rejected predicted output, every image part at `image_tokens`, and stored context
//! (`previous_response_id`, `conversation`, file parts, …) filling `context_tokens`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::mock_anthropic;
use super::mock_auth;
pub use super::mock_billing::BillingKnobs;
use super::mock_billing::{cache_details, hosted_call_items};
use super::mock_control::{choices, input_tokens, output_tokens, prelude, text_of, words};
pub use super::mock_control::{MockControl, MOCK_MODELS};
use super::mock_sse::{spread, sse_response};

/// The mock's routes.
pub fn router(control: Arc<MockControl>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/responses", post(responses))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(list_models))
        .route("/v1/messages", post(mock_anthropic::messages))
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
        let details = cache_details(&c.billing, prompt);
        return stream_chat(c, model, (prompt, details), (n, per_choice), usage);
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
        out["usage"] = json!({"prompt_tokens": prompt, "completion_tokens": reported, "total_tokens": prompt.saturating_add(reported),
            "prompt_tokens_details": cache_details(&c.billing, prompt)});
    }
    Json(out).into_response()
}

/// A streamed chat answer: each of `choices.0` choices generates `choices.1` tokens.
fn stream_chat(
    c: Arc<MockControl>,
    model: Value,
    (prompt, details): (u64, Value),
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
            "usage": {"prompt_tokens": prompt, "completion_tokens": reported, "total_tokens": prompt.saturating_add(reported),
                "prompt_tokens_details": details}});
        events.push(format!("data: {v}\n\n"));
    }
    events.push("data: [DONE]\n\n".to_owned());
    sse_response(&c, events, content)
}

fn stream_responses(
    c: Arc<MockControl>,
    model: Value,
    (input, output): (u64, u64),
    calls: Vec<Value>,
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
    for (i, item) in calls.iter().enumerate() {
        events.push(event(
            "response.output_item.done",
            json!({"type": "response.output_item.done", "output_index": i, "item": item}),
        ));
    }
    for n in spread(output, chunks) {
        let text: String = (0..n).map(|_| " w").collect();
        events.push(event("response.output_text.delta", json!({"type": "response.output_text.delta", "item_id": "msg_mock", "output_index": 0, "content_index": 0, "delta": text})));
    }
    let content = events.len();
    let usage = if with_usage {
        json!({"input_tokens": input, "output_tokens": output, "total_tokens": input + output,
            "input_tokens_details": cache_details(&c.billing, input)})
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
    let calls = hosted_call_items(
        &c.billing,
        &body,
        c.bill_max.load(Ordering::SeqCst),
        c.ignore_cap.load(Ordering::SeqCst),
    );
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        let model = body.get("model").cloned().unwrap_or(Value::Null);
        let with_usage = !c.omit_usage.load(Ordering::SeqCst);
        return stream_responses(Arc::clone(&c), model, (input, output), calls, with_usage);
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
    if let Some(items) = out["output"].as_array_mut() {
        items.splice(0..0, calls);
    }
    if !c.omit_usage.load(Ordering::SeqCst) {
        out["usage"] = json!({"input_tokens": input, "output_tokens": output, "total_tokens": input + output,
            "input_tokens_details": cache_details(&c.billing, input)});
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
