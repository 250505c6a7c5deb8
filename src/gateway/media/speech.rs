//! `POST /v1/audio/speech`: held and billed per character of `input` (and of `instructions`, which
//! the model reads too) at `speech_usd_per_million_characters`; the audio is relayed as the
//! provider sends it, in the format asked.

use serde_json::{Map, Value};

use super::plan::{self, json_upstream, one_of, required, string, Meter, Plan};
use crate::config::ModelRoute;
use crate::gateway::GatewayError;

/// OpenAI's longest speech input.
pub const MAX_CHARACTERS: usize = 4096;

const FORMATS: [&str; 6] = ["mp3", "opus", "aac", "flac", "wav", "pcm"];

/// The content type of audio in `format`.
fn audio_type(format: &str) -> &'static str {
    match format {
        "opus" => "audio/ogg",
        "aac" => "audio/aac",
        "flac" => "audio/flac",
        "wav" => "audio/wav",
        "pcm" => "audio/pcm",
        _ => "audio/mpeg",
    }
}

pub fn plan(model: &ModelRoute, body: &Map<String, Value>) -> Result<Plan, GatewayError> {
    let input = required(body, "input")?;
    let characters = input.chars().count();
    if characters > MAX_CHARACTERS {
        return Err(GatewayError::invalid(
            format!("`input` has {characters} characters; at most {MAX_CHARACTERS} are accepted"),
            Some("input"),
        ));
    }
    required(body, "voice")?;
    let format = one_of(body, "response_format", &FORMATS, "mp3")?;
    if string(body, "stream_format")?.is_some_and(|f| f != "audio") {
        return Err(GatewayError::invalid(
            "`stream_format` must be `audio`: speech is relayed as audio bytes",
            Some("stream_format"),
        ));
    }
    let instructions = string(body, "instructions")?.map_or(0, |i| i.chars().count());
    let units = (characters + instructions) as u64;
    let price = model.media.per_million_characters.ok_or_else(|| {
        GatewayError::invalid(
            format!(
                "model `{0}` has no `models.{0}.speech_usd_per_million_characters`",
                model.alias
            ),
            Some("model"),
        )
    })?;
    let cost_bound = price.cost(units);
    Ok(Plan {
        unit: "character",
        units_bound: units,
        cost_bound,
        prompt_tokens: units,
        covers: format!("{units} character(s) of speech"),
        content_type: audio_type(format).to_owned(),
        upstream_content_type: plan::JSON.to_owned(),
        upstream_body: json_upstream(model, body),
        meter: Meter::Speech,
    })
}
