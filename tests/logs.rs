//! Logs: one JSON line per request whose span carries the governed call's facts, and never a
//! prompt or a token. A test binary of its own, so that the log capture can be the process-wide
//! subscriber, as in production.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)]
#[path = "api/helpers/mod.rs"]
mod helpers;

use std::io::Write;
use std::sync::{Arc, Mutex};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::helpers::{poll, spawn_app, KEY, PATIENCE};

/// A log sink the test can read back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn a_governed_request_logs_one_json_line_with_its_facts_and_no_secrets() {
    let logs = Captured::default();
    tracing::subscriber::set_global_default(aex::telemetry::json_subscriber(
        logs.clone(),
        EnvFilter::new("info"),
    ))
    .unwrap();
    let app = spawn_app().await;
    let agent = app.create_agent("logged", "1.00", json!({})).await;
    let prompt = "the secret plan is 7f3a-unlikely-phrase";
    let resp = app
        .chat(
            &agent.token,
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let execution_id = resp.headers()["x-aex-execution-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = resp.text().await.unwrap();

    // A line is written when its request's span closes, which may be just after the client has
    // read the body: wait for both.
    let finished_on = |route: &'static str| {
        move |l: &Value| l["message"] == "request finished" && l["span"]["route"] == route
    };
    let (is_chat, is_admin) = (
        finished_on("/v1/chat/completions"),
        finished_on("/admin/agents"),
    );
    let (text, lines) = poll("the requests' log lines", PATIENCE, || async {
        let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        let both = lines.iter().any(is_chat) && lines.iter().any(is_admin);
        both.then_some((text, lines))
    })
    .await;
    let finished: Vec<&Value> = lines.iter().filter(|l| is_chat(l)).collect();
    assert_eq!(finished.len(), 1, "one line per request:\n{text}");
    let span = &finished[0]["span"];
    assert_eq!(span["name"], "request");
    assert_eq!(span["method"], "POST");
    assert_eq!(span["status"], 200);
    assert_eq!(span["execution_id"], execution_id.as_str());
    assert_eq!(span["tenant"], "00000000-0000-0000-0000-000000000001");
    assert_eq!(span["agent"], agent.id.to_string());
    assert_eq!(span["model"], "gpt-4o-mini");
    assert_eq!(span["outcome"], "committed");
    for timing in ["latency_ms", "admission_ms", "upstream_ms", "settlement_ms"] {
        assert!(span[timing].is_u64(), "{timing} missing: {span}");
    }

    let admin = lines.iter().find(|l| is_admin(l)).unwrap();
    assert_eq!(admin["span"]["status"], 201);

    for secret in [prompt, &agent.token, &app.operator_token, KEY] {
        assert!(
            !text.contains(secret),
            "a secret or prompt reached the logs"
        );
    }
    let answer: Value = serde_json::from_str(&body).unwrap();
    let completion = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        !text.contains(completion),
        "the completion reached the logs"
    );
}
