//! `POST /v1/audio/transcriptions` and `/v1/audio/translations`: a multipart upload of at most
//! `gateway.max_audio_upload_bytes`, priced per minute of audio (`audio_usd_per_minute`, billed by
//! the second). The hold bounds the duration from the file's size: no audio the provider accepts
//! is slower than the model's `audio_min_bitrate_bps` (default 6 kbps, Opus's lowest), so a file of
//! `b` bytes lasts at most `b × 8 / bitrate` seconds (and at most `max_audio_seconds` when set).
//! A duration bound rather than a token price bounded from size, because the providers bill these
//! routes by duration (whisper) and report it (`usage.seconds`, verbose_json's `duration`), and a
//! byte count bounds a duration with one stated assumption. The bill is the reported duration;
//! an answer that reports none (`text`, `srt`, `vtt`) is charged the bound.

use serde_json::{Map, Value};

use super::multipart;
use super::plan::{one_of, string, Bill, Meter, Plan};
use super::UploadFile;
use crate::config::ModelRoute;
use crate::gateway::estimate::count_text;
use crate::gateway::settlement::UsageSource;
use crate::gateway::GatewayError;

/// The formats OpenAI decodes, by file extension.
pub const AUDIO_EXTENSIONS: [&str; 9] = [
    "flac", "mp3", "mp4", "mpeg", "mpga", "m4a", "ogg", "wav", "webm",
];

const FORMATS: [&str; 5] = ["json", "text", "srt", "verbose_json", "vtt"];

fn invalid(message: impl Into<String>, field: &str) -> GatewayError {
    GatewayError::invalid(message, Some(field))
}

/// The uploaded file, which must be audio the provider decodes (by its extension, as OpenAI
/// reads it) and not empty.
fn audio_file(file: Option<&UploadFile>) -> Result<&UploadFile, GatewayError> {
    let file = file.ok_or_else(|| invalid("a `file` part with the audio is required", "file"))?;
    let extension = file
        .filename
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    if !AUDIO_EXTENSIONS.contains(&extension.as_str()) {
        return Err(invalid(
            format!(
                "`file` must be audio named with one of the extensions {}; got {:?}",
                AUDIO_EXTENSIONS.join(", "),
                file.filename
            ),
            "file",
        ));
    }
    if file.bytes.is_empty() {
        return Err(invalid("`file` is empty", "file"));
    }
    Ok(file)
}

pub fn plan(
    model: &ModelRoute,
    body: &Map<String, Value>,
    file: Option<&UploadFile>,
) -> Result<Plan, GatewayError> {
    let file = audio_file(file)?;
    let format = one_of(body, "response_format", &FORMATS, "json")?;
    if matches!(body.get("stream"), Some(Value::String(s)) if s == "true")
        || body.get("stream") == Some(&Value::Bool(true))
    {
        return Err(invalid(
            "streamed transcriptions are not supported: send `stream` false",
            "stream",
        ));
    }
    let seconds = model.media.audio_seconds_bound(file.bytes.len() as u64);
    let cost_bound = model.media.audio_cost(seconds);
    let content_type = if format.ends_with("json") {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    let (upstream_content_type, upstream_body) =
        multipart::encode(body, &model.upstream_model, file);
    Ok(Plan {
        unit: "audio_second",
        units_bound: seconds,
        cost_bound,
        prompt_tokens: string(body, "prompt")?.map_or(0, |p| count_text(model.tokenizer, p)),
        covers: format!(
            "{seconds} second(s) of audio (the most {} bytes last at {} bits per second)",
            file.bytes.len(),
            model.media.audio_min_bitrate_bps
        ),
        content_type: content_type.to_owned(),
        upstream_content_type,
        upstream_body,
        meter: Meter::Audio,
    })
}

/// The duration the answer reports (`usage.seconds` of a `duration` usage, or verbose_json's
/// `duration`, rounded up to the second), else the bound.
pub fn bill(model: &ModelRoute, plan: &Plan, content_type: Option<&str>, body: &[u8]) -> Bill {
    let json = content_type.is_some_and(|t| t.contains("json"));
    let answer: Option<Value> = json.then(|| serde_json::from_slice(body).ok()).flatten();
    let reported = answer.as_ref().and_then(|a| {
        let usage = a.get("usage");
        let seconds = usage
            .filter(|u| u.get("type").and_then(Value::as_str) == Some("duration"))
            .and_then(|u| u.get("seconds"))
            .and_then(Value::as_f64)
            .or_else(|| a.get("duration").and_then(Value::as_f64))?;
        (seconds.is_finite() && seconds >= 0.0).then(|| seconds.ceil() as u64)
    });
    match reported {
        Some(seconds) => Bill {
            units: seconds,
            cost: model.media.audio_cost(seconds),
            source: UsageSource::Reported,
            price: None,
        },
        None => Bill {
            units: plan.units_bound,
            cost: plan.cost_bound,
            source: UsageSource::Estimated,
            price: None,
        },
    }
}
