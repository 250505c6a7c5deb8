//! The rest of OpenAI's surface (issue 18, item 2): legacy completions, images, transcriptions
//! and translations, speech and moderations, each through the governed pipeline and billed as
//! the mock provider bills them, books exact to the micro-dollar; and the attacks on each
//! (n/best_of/size/quality past the hold, a price missing, huge or mistyped uploads).

use std::sync::atomic::Ordering;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_on, TestApp, TestDb};

pub const MODELS: &str = r#"
[models."legacy"]
provider = "mock"
upstream_model = "mock-instruct"
input_usd_per_million = "1.50"
output_usd_per_million = "2"
max_output_tokens = 100
capabilities = ["completions", "streaming"]

[models."painter"]
provider = "mock"
upstream_model = "mock-image"
input_usd_per_million = "0"
capabilities = ["images"]
image_usd_per_image = { "1024x1024/standard" = "0.04", "1024x1024/hd" = "0.08", "1792x1024/hd" = "0.12" }

[models."scribe"]
provider = "mock"
upstream_model = "mock-whisper"
input_usd_per_million = "0"
capabilities = ["transcriptions"]
audio_usd_per_minute = "0.006"

[models."voice"]
provider = "mock"
upstream_model = "mock-tts"
input_usd_per_million = "0"
capabilities = ["speech"]
speech_usd_per_million_characters = "15"

[models."moderator"]
provider = "mock"
upstream_model = "mock-moderation"
input_usd_per_million = "0"
capabilities = ["moderations"]
"#;

pub async fn media_app() -> TestApp {
    spawn_app_on(TestDb::create().await, MODELS, |s| {
        s.gateway.max_audio_upload_bytes = 200_000;
    })
    .await
}

fn cost(resp: &reqwest::Response) -> i64 {
    resp.headers()["x-aex-cost-micro-usd"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn held(app: &TestApp) -> impl std::future::Future<Output = i64> + '_ {
    app.count("SELECT estimate_micro_usd FROM reservations ORDER BY created_at DESC LIMIT 1")
}

#[tokio::test]
async fn completions_hold_every_prompt_times_best_of_and_bill_the_reported_usage() {
    let app = media_app().await;
    let agent = app.create_agent("legacy", "1.00", json!({})).await;
    // Two prompts, best_of 3: six candidates of 5 tokens generated and billed, two returned.
    let body = json!({"model": "legacy", "prompt": ["one two three", "four five"], "best_of": 3, "max_tokens": 5});
    let resp = app.post("/v1/completions", &agent.token, body, &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let charged = cost(&resp);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["model"], "legacy");
    assert_eq!(v["choices"].as_array().unwrap().len(), 2);
    let prompt = v["usage"]["prompt_tokens"].as_i64().unwrap();
    assert_eq!(v["usage"]["completion_tokens"], 30);
    assert_eq!(charged, (prompt * 1_500_000 + 999_999) / 1_000_000 + 60);
    // The hold covered all 30 output tokens.
    assert!(held(&app).await >= charged);
    let commit = app.last_commit().await;
    assert_eq!(commit["completion_cap"], 30);
    let mut spent = charged;

    // No cap: OpenAI's default of 16 is sent and held; streamed with the usage chunk.
    let body = json!({"model": "legacy", "prompt": "hello there", "stream": true,
        "stream_options": {"include_usage": true}});
    let resp = app.post("/v1/completions", &agent.token, body, &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    assert_eq!(app.mock.last_request().unwrap()["max_tokens"], 16);
    let usage: Value = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|v| v["usage"].is_object())
        .map(|v| v["usage"].clone())
        .expect("usage chunk");
    let expected = (usage["prompt_tokens"].as_i64().unwrap() * 1_500_000 + 999_999) / 1_000_000
        + usage["completion_tokens"].as_i64().unwrap() * 2;
    assert_eq!(
        app.last_commit().await["actual_micro_usd"],
        expected,
        "{text}"
    );
    assert!(text.contains("text_completion") && text.trim_end().ends_with("data: [DONE]"));
    spent += expected;

    // n above best_of, best_of past OpenAI's 20, an empty prompt: 400 by field, nothing held.
    for (body, field) in [
        (
            json!({"model": "legacy", "prompt": "x", "n": 4, "best_of": 2}),
            "best_of",
        ),
        (
            json!({"model": "legacy", "prompt": "x", "best_of": 21}),
            "best_of",
        ),
        (json!({"model": "legacy", "prompt": ""}), "prompt"),
        (
            json!({"model": "legacy", "prompt": "x", "max_tokens": 101}),
            "max_tokens",
        ),
    ] {
        let (status, answer) = app.send_json("/v1/completions", &agent.token, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"]["param"], field, "{answer}");
    }
    assert_eq!(app.books(agent.id).await, (spent, 0, 1_000_000));
    app.assert_books_audit().await;
}

#[tokio::test]
async fn images_are_held_at_n_times_the_dearest_price_and_billed_per_image_made() {
    let app = media_app().await;
    let agent = app.create_agent("painter", "1.00", json!({})).await;
    let draw = |extra: Value| {
        let mut body = json!({"model": "painter", "prompt": "a lighthouse at dusk"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let resp = app
        .post(
            "/v1/images/generations",
            &agent.token,
            draw(json!({"n": 2, "size": "1024x1024", "quality": "hd"})),
            &[],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK, "{:?}", resp.headers());
    assert_eq!(cost(&resp), 160_000);
    assert_eq!(held(&app).await, 160_000);
    let commit = app.last_commit().await;
    assert_eq!(
        (commit["unit"].clone(), commit["billed_units"].clone()),
        (json!("image"), json!(2))
    );
    assert_eq!(commit["unit_price"], "1024x1024/hd");
    // No quality: held at the dearest that can apply (hd), billed at what the answer says (the
    // mock echoes only what was asked, so the dearest too).
    let resp = app
        .post(
            "/v1/images/generations",
            &agent.token,
            draw(json!({"size": "1024x1024"})),
            &[],
        )
        .await;
    assert_eq!(cost(&resp), 80_000);
    let resp = app
        .post(
            "/v1/images/generations",
            &agent.token,
            draw(json!({"size": "1024x1024", "quality": "standard"})),
            &[],
        )
        .await;
    assert_eq!(cost(&resp), 40_000);
    let mut spent = 280_000;

    // A size with no price, n past OpenAI's 10, no prompt: 400 naming the setting or field.
    let (status, answer) = app
        .send_json(
            "/v1/images/generations",
            &agent.token,
            draw(json!({"size": "512x512"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("models.painter.image_usd_per_image.\"512x512\""),
        "{message}"
    );
    for (body, field) in [
        (draw(json!({"n": 11})), "n"),
        (draw(json!({"quality": "ultra"})), "quality"),
        (json!({"model": "painter"}), "prompt"),
    ] {
        let (status, answer) = app
            .send_json("/v1/images/generations", &agent.token, body)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"]["param"], field, "{answer}");
    }
    // A provider that makes one image more than asked: billed as made, flagged as its overrun.
    app.mock.billing.extra_images.store(1, Ordering::SeqCst);
    let resp = app
        .post(
            "/v1/images/generations",
            &agent.token,
            draw(json!({"size": "1792x1024", "quality": "hd"})),
            &[],
        )
        .await;
    assert_eq!(cost(&resp), 240_000);
    let commit = app.last_commit().await;
    assert_eq!(commit["overrun"], "provider");
    spent += 240_000;
    assert_eq!(app.books(agent.id).await, (spent, 0, 1_000_000));
    app.assert_books_audit().await;
}

fn audio_form(
    model: &str,
    filename: &str,
    bytes: usize,
    format: Option<&str>,
) -> reqwest::multipart::Form {
    let file = reqwest::multipart::Part::bytes(vec![7u8; bytes])
        .file_name(filename.to_owned())
        .mime_str("audio/mpeg")
        .unwrap();
    let mut form = reqwest::multipart::Form::new()
        .text("model", model.to_owned())
        .part("file", file);
    if let Some(f) = format {
        form = form.text("response_format", f.to_owned());
    }
    form
}

async fn upload(
    app: &TestApp,
    path: &str,
    token: &str,
    form: reqwest::multipart::Form,
) -> reqwest::Response {
    app.http
        .post(format!("{}{path}", app.base))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn audio_is_held_at_the_longest_duration_its_size_allows_and_billed_by_the_reported_one() {
    let app = media_app().await;
    let agent = app.create_agent("scribe", "1.00", json!({})).await;
    // 32,000 bytes: the mock says 2 s (at 128 kbps); at 6 kbps they could last 43 s.
    let resp = upload(
        &app,
        "/v1/audio/transcriptions",
        &agent.token,
        audio_form("scribe", "memo.mp3", 32_000, None),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(cost(&resp), 200, "2 s at 0.006 USD a minute");
    assert_eq!(held(&app).await, 4_300);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["usage"]["seconds"], 2);
    let commit = app.last_commit().await;
    assert_eq!(
        (
            commit["billed_units"].clone(),
            commit["units_bound"].clone()
        ),
        (json!(2), json!(43))
    );
    let sent = app.mock.last_request().unwrap();
    assert_eq!(
        (sent["model"].clone(), sent["file_bytes"].clone()),
        (json!("mock-whisper"), json!(32_000))
    );
    // Translations, verbose_json: `duration` 1.75 rounds up to 2 s.
    let resp = upload(
        &app,
        "/v1/audio/translations",
        &agent.token,
        audio_form("scribe", "memo.wav", 32_000, Some("verbose_json")),
    )
    .await;
    assert_eq!((resp.status(), cost(&resp)), (StatusCode::OK, 200));
    // Text says no duration: charged the bound.
    let resp = upload(
        &app,
        "/v1/audio/transcriptions",
        &agent.token,
        audio_form("scribe", "memo.ogg", 32_000, Some("text")),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(cost(&resp), 4_300);
    let spent = 200 + 200 + 4_300;

    // Too large (the test caps uploads at 200,000 bytes), not audio, not multipart, no file.
    let resp = upload(
        &app,
        "/v1/audio/transcriptions",
        &agent.token,
        audio_form("scribe", "big.mp3", 300_000, None),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let resp = upload(
        &app,
        "/v1/audio/transcriptions",
        &agent.token,
        audio_form("scribe", "notes.txt", 100, None),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["error"]["param"], "file", "{answer}");
    let (status, answer) = app
        .send_json(
            "/v1/audio/transcriptions",
            &agent.token,
            json!({"model": "scribe"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("multipart/form-data"));
    let form = reqwest::multipart::Form::new().text("model", "scribe");
    let resp = upload(&app, "/v1/audio/transcriptions", &agent.token, form).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // A model without a per-minute price cannot transcribe.
    let resp = upload(
        &app,
        "/v1/audio/transcriptions",
        &agent.token,
        audio_form("voice", "a.mp3", 100, None),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    assert_eq!(app.mock.calls(), 3);
    assert_eq!(app.books(agent.id).await, (spent, 0, 1_000_000));
    app.assert_books_audit().await;
}

#[tokio::test]
async fn speech_is_billed_per_character_its_audio_relayed_and_replayed_as_audio() {
    let app = media_app().await;
    let agent = app.create_agent("voice", "1.00", json!({})).await;
    let body = json!({"model": "voice", "input": "hello world", "voice": "alloy"});
    let key = [("Idempotency-Key", "speech-1")];
    let resp = app
        .post("/v1/audio/speech", &agent.token, body.clone(), &key)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "audio/mpeg");
    assert_eq!(cost(&resp), 165, "11 characters at 15 USD a million");
    let audio = resp.bytes().await.unwrap();
    assert_eq!(&audio[..2], &[0xFF, 0xFB]);
    let replay = app.post("/v1/audio/speech", &agent.token, body, &key).await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.headers()["content-type"], "audio/mpeg");
    assert_eq!(replay.bytes().await.unwrap(), audio);
    assert_eq!(app.mock.calls(), 1);
    let long = "x".repeat(4097);
    for (body, field) in [
        (
            json!({"model": "voice", "input": long, "voice": "alloy"}),
            "input",
        ),
        (json!({"model": "voice", "input": "hi"}), "voice"),
        (
            json!({"model": "voice", "input": "hi", "voice": "alloy", "stream_format": "sse"}),
            "stream_format",
        ),
        (
            json!({"model": "voice", "input": "hi", "voice": "alloy", "response_format": "midi"}),
            "response_format",
        ),
    ] {
        let (status, answer) = app.send_json("/v1/audio/speech", &agent.token, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"]["param"], field, "{answer}");
    }
    assert_eq!(app.books(agent.id).await, (165, 0, 1_000_000));
    app.assert_books_audit().await;
}

#[tokio::test]
async fn moderations_are_free_but_authenticated_rate_limited_and_ledgered() {
    let app = media_app().await;
    let agent = app.create_agent("mod", "1.00", json!({"rpm": 2})).await;
    let body = json!({"input": ["is this fine?", "and this?"]});
    let resp = app
        .post("/v1/moderations", "not-a-token", body.clone(), &[])
        .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = app
        .post("/v1/moderations", &agent.token, body.clone(), &[])
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(cost(&resp), 0);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        v["model"], "moderator",
        "the only model that moderates serves a request without one"
    );
    assert_eq!(v["results"].as_array().unwrap().len(), 2);
    let commit = app.last_commit().await;
    assert_eq!(
        (commit["actual_micro_usd"].clone(), commit["unit"].clone()),
        (json!(0), json!("request"))
    );
    let (status, _) = app
        .send_json("/v1/moderations", &agent.token, body.clone())
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.send_json("/v1/moderations", &agent.token, body).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(app.mock.calls(), 2);
    assert_eq!(app.books(agent.id).await, (0, 0, 1_000_000));
    app.assert_books_audit().await;
}
