//! Prices as invoiced (issue 18, item 4): cached input and cache writes at their own prices,
//! hosted-tool fees per call the provider reports, the units billed in the ledger, and the hold
//! still an upper bound. The mock reports cached tokens and call items, so every charge is
//! checked to the micro-dollar against what it reported.

use std::sync::atomic::Ordering;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with_models, TestApp};

const MODELS: &str = r#"
[models."cachey"]
provider = "mock"
upstream_model = "mock-cachey"
input_usd_per_million = "2.50"
cached_input_usd_per_million = "1.25"
cache_write_usd_per_million = "3.75"
output_usd_per_million = "10"
max_output_tokens = 100
context_window = 4000
hosted_tool_usd_per_call = { web_search = "0.01" }
max_hosted_tool_calls = 3
capabilities = ["chat", "streaming", "responses"]
"#;

/// `ceil(tokens × price / 10^6)` summed before rounding, as the provider invoices one line.
fn input_cost(prompt: i64, cached: i64, written: i64) -> i64 {
    let micro = (prompt - cached - written) * 2_500_000 + cached * 1_250_000 + written * 3_750_000;
    (micro + 999_999) / 1_000_000
}

fn output_cost(tokens: i64) -> i64 {
    (tokens * 10_000_000 + 999_999) / 1_000_000
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn cost_header(resp: &reqwest::Response) -> i64 {
    resp.headers()["x-aex-cost-micro-usd"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn app() -> TestApp {
    let app = spawn_app_with_models(MODELS).await;
    app.mock.billing.cached_tokens.store(6, Ordering::SeqCst);
    app.mock
        .billing
        .cache_write_tokens
        .store(2, Ordering::SeqCst);
    app
}

/// The last `usage.commit` event's payload.
#[tokio::test]
async fn cached_and_cache_write_tokens_are_billed_at_their_prices_never_twice() {
    let app = app().await;
    let agent = app.create_agent("cacher", "1.00", json!({})).await;
    let long = "one two three four five six seven eight nine ten eleven twelve";
    let chat = json!({"model": "cachey", "max_tokens": 7,
        "messages": [{"role": "user", "content": long}]});
    let resp = app.chat(&agent.token, chat).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let cost = cost_header(&resp);
    let v: Value = resp.json().await.unwrap();
    let usage = &v["usage"];
    let prompt = int(&usage["prompt_tokens"]);
    assert_eq!(int(&usage["prompt_tokens_details"]["cached_tokens"]), 6);
    let expected = input_cost(prompt, 6, 2) + output_cost(int(&usage["completion_tokens"]));
    assert_eq!(cost, expected, "{usage}");
    // Not the full input price for every token.
    assert!(cost < (prompt * 2_500_000 + 999_999) / 1_000_000 + output_cost(7));
    let commit = app.last_commit().await;
    assert_eq!(commit["actual_micro_usd"], expected);
    assert_eq!(commit["cached_tokens"], 6);
    assert_eq!(commit["cache_write_tokens"], 2);
    assert_eq!(commit["billed_input_tokens"], prompt - 8);
    assert_eq!(commit["billed_cached_input_tokens"], 6);
    assert_eq!(commit["billed_cache_write_tokens"], 2);
    assert_eq!(commit["billed_output_tokens"], usage["completion_tokens"]);
    assert!(commit["overrun"].is_null(), "{commit}");

    // Responses, non-streamed and streamed: `input_tokens_details`.
    let mut spent = expected;
    for stream in [false, true] {
        let body =
            json!({"model": "cachey", "input": long, "max_output_tokens": 9, "stream": stream});
        let resp = app.post("/v1/responses", &agent.token, body, &[]).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let text = resp.text().await.unwrap();
        let commit = app.last_commit().await;
        let prompt = int(&commit["prompt_tokens"]);
        let charged = input_cost(prompt, 6, 2) + output_cost(int(&commit["completion_tokens"]));
        assert_eq!(
            commit["actual_micro_usd"], charged,
            "stream {stream}: {text}"
        );
        assert_eq!(commit["billed_cached_input_tokens"], 6);
        spent += charged;
    }
    // A streamed chat reads the details from its usage chunk.
    let body = json!({"model": "cachey", "max_tokens": 5, "stream": true,
        "messages": [{"role": "user", "content": long}]});
    let resp = app.chat(&agent.token, body).await;
    assert_eq!(resp.status(), StatusCode::OK);
    resp.text().await.unwrap();
    let commit = app.last_commit().await;
    let charged = input_cost(int(&commit["prompt_tokens"]), 6, 2)
        + output_cost(int(&commit["completion_tokens"]));
    assert_eq!(commit["actual_micro_usd"], charged);
    spent += charged;

    assert_eq!(app.books(agent.id).await, (spent, 0, 1_000_000));
    // Every hold priced each input token at the dearest input price (the cache write's), so no
    // cost passed its hold.
    crate::hold_bound::assert_no_cost_above_its_hold(&app).await;
    app.assert_books_audit().await;
}

#[tokio::test]
async fn hosted_tool_calls_are_charged_per_call_the_provider_reports() {
    let app = app().await;
    app.mock.billing.cached_tokens.store(0, Ordering::SeqCst);
    app.mock
        .billing
        .cache_write_tokens
        .store(0, Ordering::SeqCst);
    app.mock
        .billing
        .hosted_tool_calls
        .store(2, Ordering::SeqCst);
    let agent = app.create_agent("searcher", "1.00", json!({})).await;
    let mut spent = 0;
    for stream in [false, true] {
        let body = json!({"model": "cachey", "input": "news?", "max_output_tokens": 5,
            "stream": stream, "tools": [{"type": "web_search"}]});
        let resp = app.post("/v1/responses", &agent.token, body, &[]).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let text = resp.text().await.unwrap();
        let commit = app.last_commit().await;
        let tokens = input_cost(int(&commit["prompt_tokens"]), 0, 0)
            + output_cost(int(&commit["completion_tokens"]));
        // Two calls at 0.01 USD each, on top of the tokens.
        assert_eq!(commit["actual_micro_usd"], tokens + 20_000, "{text}");
        assert_eq!(commit["billed_web_search_calls"], 2);
        assert_eq!(commit["hosted_tool_calls"], 2);
        assert_eq!(commit["hosted_tool_calls_bound"], 3);
        spent += tokens + 20_000;
    }
    // Chat answers report no calls: a search request is one call.
    let body = json!({"model": "cachey", "max_tokens": 5, "web_search_options": {},
        "messages": [{"role": "user", "content": "news?"}]});
    let resp = app.chat(&agent.token, body).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let cost = cost_header(&resp);
    let v: Value = resp.json().await.unwrap();
    let tokens = input_cost(int(&v["usage"]["prompt_tokens"]), 0, 0)
        + output_cost(int(&v["usage"]["completion_tokens"]));
    assert_eq!(cost, tokens + 10_000);
    spent += cost;

    // A provider that calls past the `max_tool_calls` sent: billed as reported, its overrun.
    app.mock
        .billing
        .hosted_tool_calls
        .store(40, Ordering::SeqCst);
    app.mock.ignore_cap.store(true, Ordering::SeqCst);
    let body = json!({"model": "cachey", "input": "news?", "max_output_tokens": 5,
        "tools": [{"type": "web_search"}]});
    let resp = app.post("/v1/responses", &agent.token, body, &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let cost = cost_header(&resp);
    let commit = app.last_commit().await;
    assert_eq!(commit["hosted_tool_calls"], 40);
    assert_eq!(commit["overrun"], "provider", "{commit}");
    assert!(cost >= 400_000);
    spent += cost;

    assert_eq!(app.books(agent.id).await, (spent, 0, 1_000_000));
    app.assert_books_audit().await;
}
