//! Streaming chat and responses: relay, usage, disconnects, failures, replay.

use std::sync::atomic::Ordering;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{execution_id, hello, mini_cost, poll, spawn_app, PATIENCE};

fn streamed(mut body: Value) -> Value {
    body["stream"] = json!(true);
    body
}

/// The `data:` payloads of an SSE body, in order.
fn data_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_stream_is_relayed_in_order_with_the_alias_and_billed_from_provider_usage() {
    let app = spawn_app().await;
    let agent = app.create_agent("streamer", "1.00", json!({})).await;
    app.mock.chunks.store(6, Ordering::SeqCst);
    let resp = app.chat(&agent.token, streamed(hello())).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let id = execution_id(&resp);
    let text = resp.text().await.unwrap();
    let data = data_lines(&text);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(
        chunks.len(),
        1 + 6 + 1,
        "role chunk, six content chunks, finish chunk; the usage chunk is stripped"
    );
    assert!(
        chunks.iter().all(|c| c["model"] == "gpt-4o-mini"),
        "every chunk carries the alias"
    );
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        content,
        " w".repeat(20),
        "the content arrives whole and in order"
    );
    assert_eq!(
        app.mock.last_request().unwrap()["stream_options"]["include_usage"],
        true,
        "usage is always asked for"
    );

    app.await_execution_states(agent.id, &["COMMITTED"]).await;
    let commit = app.ledger_event(&id, "usage.commit").await;
    assert_eq!(commit["usage"], "reported");
    assert_eq!(commit["stream_end"], "finished");
    let usage = json!({"prompt_tokens": commit["prompt_tokens"], "completion_tokens": commit["completion_tokens"]});
    assert_eq!(commit["completion_tokens"], 20);
    let (spent, reserved, _) = app.books(agent.id).await;
    assert_eq!((spent, reserved), (mini_cost(&usage), 0));
    app.assert_books_audit().await;
}

#[tokio::test]
async fn the_usage_chunk_reaches_a_client_that_asked_for_it() {
    let app = spawn_app().await;
    let agent = app.create_agent("usage-reader", "1.00", json!({})).await;
    let mut body = streamed(hello());
    body["stream_options"] = json!({"include_usage": true});
    let text = app.chat(&agent.token, body).await.text().await.unwrap();
    let data = data_lines(&text);
    let usage_chunk: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 20);
    assert_eq!(usage_chunk["model"], "gpt-4o-mini");
}

#[tokio::test]
async fn without_provider_usage_the_streamed_output_is_counted_and_marked_estimated() {
    let app = spawn_app().await;
    let agent = app.create_agent("uncounted", "1.00", json!({})).await;
    app.mock.omit_usage.store(true, Ordering::SeqCst);
    let resp = app.chat(&agent.token, streamed(hello())).await;
    let id = execution_id(&resp);
    resp.text().await.unwrap();
    app.await_execution_states(agent.id, &["COMMITTED"]).await;
    let commit = app.ledger_event(&id, "usage.commit").await;
    assert_eq!(commit["usage"], "estimated");
    // " w" × 20 is 20 bytes: the byte bound of the mock's (non-OpenAI) tokenizer.
    assert_eq!(commit["completion_tokens"], 40);
    assert!(commit["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(app.books(agent.id).await.0 > 0);
    app.assert_books_audit().await;
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_is_billed_for_what_was_received_and_the_upstream_stops(
) {
    let app = spawn_app().await;
    let agent = app.create_agent("quitter", "1.00", json!({})).await;
    // 100 content chunks 100 ms apart (103 events with the role, usage and [DONE]): ten
    // seconds, far longer than the server takes to see the client go even on a loaded machine.
    app.mock.chunks.store(100, Ordering::SeqCst);
    app.mock.chunk_delay_ms.store(100, Ordering::SeqCst);
    let resp = app.chat(&agent.token, streamed(hello())).await;
    let id = execution_id(&resp);
    let mut body = resp.bytes_stream();
    let mut seen = 0;
    while let Some(chunk) = body.next().await {
        seen += String::from_utf8_lossy(&chunk.unwrap())
            .matches("data: ")
            .count();
        if seen >= 3 {
            break;
        }
    }
    drop(body); // the client goes away

    app.await_execution_states(agent.id, &["COMMITTED"]).await;
    let commit = app.ledger_event(&id, "usage.commit").await;
    assert_eq!(commit["stream_end"], "client_disconnected");
    assert_eq!(commit["usage"], "estimated");
    assert!(commit["prompt_tokens"].as_u64().unwrap() > 0, "never zero");
    let (spent, reserved, _) = app.books(agent.id).await;
    assert!(spent > 0);
    assert_eq!(reserved, 0, "committed, not released");
    // The upstream call was stopped: the mock saw its stream dropped before the end, so it
    // can send nothing more.
    poll("the upstream stream to be dropped", PATIENCE, || async {
        (app.mock.streams_dropped.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    let sent = app.mock.chunks_sent.load(Ordering::SeqCst);
    assert!(
        sent < 103,
        "the stream did not run to its end: {sent} chunks sent"
    );
    println!("disconnect: client read {seen} events, upstream sent {sent} of 103, billed {spent} micro-USD ({} completion tokens counted)", commit["completion_tokens"]);
    app.assert_books_audit().await;
}

#[tokio::test]
async fn a_stream_cut_by_the_provider_ends_failed_and_charges_the_hold_as_ambiguous() {
    let app = spawn_app().await;
    let agent = app.create_agent("cut", "1.00", json!({})).await;
    app.mock.chunks.store(10, Ordering::SeqCst);
    app.mock.cut_after_chunks.store(4, Ordering::SeqCst);
    // A delay between chunks so the first ones are on the wire before the cut.
    app.mock.chunk_delay_ms.store(30, Ordering::SeqCst);
    let resp = app.chat(&agent.token, streamed(hello())).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let id = execution_id(&resp);
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    while let Some(Ok(chunk)) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(!text.contains("[DONE]"), "the stream ends without [DONE]");
    // The client holds the last byte: the books are written.
    assert_eq!(app.execution_states(agent.id).await, vec!["FAILED"]);
    let commit = app.ledger_event(&id, "usage.commit").await;
    assert_eq!(commit["stream_end"], "upstream_failed");
    assert_eq!(
        commit["usage"], "ambiguous",
        "the provider may have generated, and will bill, the whole answer"
    );
    assert_eq!(commit["actual_micro_usd"], commit["estimate_micro_usd"]);
    let (spent, reserved, _) = app.books(agent.id).await;
    assert_eq!(
        (spent, reserved),
        (commit["actual_micro_usd"].as_i64().unwrap(), 0)
    );
    app.assert_books_audit().await;
}

#[tokio::test]
async fn an_upstream_error_before_the_first_byte_releases_and_answers_in_the_openai_shape() {
    let app = spawn_app().await;
    let agent = app.create_agent("early-fail", "1.00", json!({})).await;
    app.mock.status.store(503, Ordering::SeqCst);
    let resp = app.chat(&agent.token, streamed(hello())).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_error");
    assert_eq!(app.execution_states(agent.id).await, vec!["RELEASED"]);
    assert_eq!(app.books(agent.id).await.0, 0);
    app.assert_books_audit().await;
}

#[tokio::test]
async fn a_streamed_result_replays_as_the_same_stream() {
    let app = spawn_app().await;
    let agent = app.create_agent("replayer", "1.00", json!({})).await;
    let key = [("Idempotency-Key", "stream-1")];
    let first = app
        .post(
            "/v1/chat/completions",
            &agent.token,
            streamed(hello()),
            &key,
        )
        .await;
    let first_text = first.text().await.unwrap();
    app.await_execution_states(agent.id, &["COMMITTED"]).await;
    let spent = app.books(agent.id).await.0;

    let again = app
        .post(
            "/v1/chat/completions",
            &agent.token,
            streamed(hello()),
            &key,
        )
        .await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert!(again.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    // The stored transcript, without the `aex` object the first answer's final event carried
    // (its cost and budget were known only once that transcript was settled).
    let aex = regex_lite_strip_aex(&first_text);
    assert_ne!(aex, first_text, "the first answer carried its cost");
    assert_eq!(again.text().await.unwrap(), aex);
    assert_eq!(app.mock.calls(), 1);
    assert_eq!(app.books(agent.id).await.0, spent);
}

#[tokio::test]
async fn responses_stream_and_not_with_usage_from_input_and_output_tokens() {
    let app = spawn_app().await;
    let agent = app.create_agent("responder", "1.00", json!({})).await;
    let body = json!({"model": "gpt-4o-mini", "input": "Write one line", "max_output_tokens": 12});
    let resp = app
        .post("/v1/responses", &agent.token, body.clone(), &[])
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let cost: i64 = resp.headers()["x-aex-cost-micro-usd"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["model"], "gpt-4o-mini");
    assert_eq!(
        v["usage"]["output_tokens"], 12,
        "the requested cap reached the provider"
    );
    let usage = json!({"prompt_tokens": v["usage"]["input_tokens"], "completion_tokens": v["usage"]["output_tokens"]});
    assert_eq!(cost, mini_cost(&usage));

    let resp = app
        .post("/openai/v1/responses", &agent.token, streamed(body), &[])
        .await;
    let text = resp.text().await.unwrap();
    assert!(text.contains("event: response.completed"));
    let completed: Value = serde_json::from_str(data_lines(&text).last().unwrap()).unwrap();
    assert_eq!(completed["response"]["model"], "gpt-4o-mini");
    app.await_execution_states(agent.id, &["COMMITTED", "COMMITTED"])
        .await;
    let (spent, reserved, _) = app.books(agent.id).await;
    assert_eq!(
        spent,
        2 * cost,
        "the streamed response is billed from its reported usage too"
    );
    assert_eq!(reserved, 0);
    app.assert_books_audit().await;
}

/// `text` without its `"aex":{...},` object (an object of plain numbers).
fn regex_lite_strip_aex(text: &str) -> String {
    let Some(start) = text.find("\"aex\":{") else {
        return text.to_owned();
    };
    let end = start + text[start..].find('}').unwrap() + 1;
    let end = if text[end..].starts_with(',') {
        end + 1
    } else {
        end
    };
    format!("{}{}", &text[..start], &text[end..])
}
