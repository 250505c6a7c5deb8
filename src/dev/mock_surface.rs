//! The rest of OpenAI's surface on the mock, billed as OpenAI bills it: legacy completions
//! (every prompt × max(`n`, `best_of`) generated, `n` returned; JSON and SSE with the usage
//! chunk), image generations (the images asked, echoing size and quality), transcriptions and
//! translations (a multipart upload; the duration reported in `usage.seconds` or verbose_json's
//! `duration`), speech (audio bytes) and moderations.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::mock_control::{input_tokens, output_tokens, prelude, text_of, words, MockControl};
use super::mock_sse::sse_response;
use crate::gateway::media::multipart;

/// The mock's routes for the rest of the surface.
pub fn routes() -> Router<Arc<MockControl>> {
    Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/images/generations", post(images))
        .route("/v1/audio/transcriptions", post(transcriptions))
        .route("/v1/audio/translations", post(transcriptions))
        .route("/v1/audio/speech", post(speech))
        .route("/v1/moderations", post(moderations))
}

/// Prompts of a completions request: each string or token-id array of an array is one.
fn prompts(body: &Value) -> u64 {
    match body.get("prompt") {
        Some(Value::Array(items)) if !items.iter().all(Value::is_number) => items.len() as u64,
        _ => 1,
    }
}

async fn completions(
    State(c): State<Arc<MockControl>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Err(r) = prelude(&c, &headers, &body).await {
        return r;
    }
    let model = body.get("model").cloned().unwrap_or(Value::Null);
    let prompts = prompts(&body);
    let counted = |v: Option<&Value>| match v {
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_array().map_or_else(
                    || words(i).max(u64::from(i.is_number())),
                    |a| a.len() as u64,
                )
            })
            .sum(),
        Some(v) => words(v),
        None => 0,
    };
    let prompt = input_tokens(
        &c,
        &body,
        3 + counted(body.get("prompt"))
            + prompts * words(body.get("suffix").unwrap_or(&Value::Null)),
    );
    let n = body.get("n").and_then(Value::as_u64).unwrap_or(1).max(1);
    let generated = n.max(body.get("best_of").and_then(Value::as_u64).unwrap_or(1));
    let per_choice = output_tokens(&c, &body, &["max_tokens"]);
    // Every candidate is generated and billed; `n` per prompt are returned.
    let completion = prompts * generated * per_choice;
    let usage = json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion});
    let with_usage = !c.omit_usage.load(Ordering::SeqCst);
    let choices: Vec<Value> = (0..prompts * n)
        .map(|i| json!({"index": i, "text": text_of(per_choice), "logprobs": null, "finish_reason": "length"}))
        .collect();
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        let chunk = |choices: Value, usage: Option<&Value>| {
            let mut v = json!({"id": "cmpl-mock", "object": "text_completion", "created": 1_700_000_000, "model": model, "choices": choices});
            if let Some(u) = usage {
                v["usage"] = u.clone();
            }
            format!("data: {v}\n\n")
        };
        let mut events: Vec<String> = choices.iter().map(|ch| chunk(json!([ch]), None)).collect();
        let content = events.len();
        let include = body
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true);
        if with_usage && include {
            events.push(chunk(json!([]), Some(&usage)));
        }
        events.push("data: [DONE]\n\n".to_owned());
        return sse_response(&c, events, content);
    }
    let mut out = json!({"id": "cmpl-mock", "object": "text_completion", "created": 1_700_000_000, "model": model, "choices": choices});
    if with_usage {
        out["usage"] = usage;
    }
    Json(out).into_response()
}

async fn images(
    State(c): State<Arc<MockControl>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Err(r) = prelude(&c, &headers, &body).await {
        return r;
    }
    let n = body.get("n").and_then(Value::as_u64).unwrap_or(1);
    let extra = c.billing.extra_images.load(Ordering::SeqCst);
    let data: Vec<Value> = (0..n + extra)
        .map(|i| json!({"b64_json": "iVBORw0KGgo=", "revised_prompt": format!("image {i}")}))
        .collect();
    let mut out = json!({"created": 1_700_000_000, "data": data});
    // As gpt-image-1 does: the answer says what it made.
    for field in ["size", "quality"] {
        if let Some(v) = body.get(field).filter(|v| v.as_str() != Some("auto")) {
            out[field] = v.clone();
        }
    }
    Json(out).into_response()
}

/// The seconds of an upload: the configured duration, else its size at 128 kbps (16,000 bytes a
/// second); under `bill_max`, the most its size allows at 6 kbps.
fn audio_seconds(c: &MockControl, bytes: usize) -> u64 {
    if c.bill_max.load(Ordering::SeqCst) {
        return (bytes as u64 * 8).div_ceil(6_000);
    }
    match c.billing.audio_seconds.load(Ordering::SeqCst) {
        0 => (bytes as u64).div_ceil(16_000).max(1),
        s => s,
    }
}

async fn transcriptions(
    State(c): State<Arc<MockControl>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let boundary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(multipart::boundary);
    let Some((fields, Some(file))) = boundary.and_then(|b| multipart::parse(&b, &body).ok()) else {
        let err = json!({"error": {"message": "expected a multipart form with a file", "type": "invalid_request_error", "param": "file", "code": null}});
        return (axum::http::StatusCode::BAD_REQUEST, Json(err)).into_response();
    };
    let mut seen = Value::Object(fields.clone());
    seen["file_bytes"] = json!(file.bytes.len());
    seen["filename"] = json!(file.filename);
    if let Err(r) = prelude(&c, &headers, &seen).await {
        return r;
    }
    let seconds = audio_seconds(&c, file.bytes.len());
    let text = "The quick brown fox jumped over the lazy dog.";
    match fields.get("response_format").and_then(Value::as_str).unwrap_or("json") {
        "verbose_json" => Json(json!({"task": "transcribe", "language": "english", "duration": seconds as f64 - 0.25, "text": text, "segments": []})).into_response(),
        "json" => Json(json!({"text": text, "usage": {"type": "duration", "seconds": seconds}})).into_response(),
        _ => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response(),
    }
}

async fn speech(
    State(c): State<Arc<MockControl>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Err(r) = prelude(&c, &headers, &body).await {
        return r;
    }
    let chars = body
        .get("input")
        .and_then(Value::as_str)
        .map_or(0, |s| s.chars().count());
    let content_type = match body.get("response_format").and_then(Value::as_str) {
        Some("wav") => "audio/wav",
        Some("opus") => "audio/ogg",
        Some("flac") => "audio/flac",
        Some("aac") => "audio/aac",
        Some("pcm") => "audio/pcm",
        _ => "audio/mpeg",
    };
    // Some bytes per character, starting as an MP3 frame does.
    let mut audio = vec![0xFF, 0xFB, 0x90, 0x64];
    audio.extend((0..chars * 16).map(|i| (i % 251) as u8));
    ([(header::CONTENT_TYPE, content_type)], audio).into_response()
}

async fn moderations(
    State(c): State<Arc<MockControl>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Err(r) = prelude(&c, &headers, &body).await {
        return r;
    }
    let inputs = match body.get("input") {
        Some(Value::Array(items)) => items.len(),
        _ => 1,
    };
    let result = json!({"flagged": false, "categories": {"violence": false}, "category_scores": {"violence": 0.001}});
    Json(json!({"id": "modr-mock", "model": body.get("model").cloned().unwrap_or(json!("omni-moderation-latest")),
        "results": vec![result; inputs]})).into_response()
}
