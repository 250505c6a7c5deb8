//! What a media request is held at, and how its answer is billed: one [`Plan`] per request,
//! made by the route's module before admission; [`Plan::bill`] reads the provider's answer.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::{audio, images, moderations, speech, UploadFile};
use crate::config::ModelRoute;
use crate::domain::CallRoute;
use crate::gateway::pricing::Metered;
use crate::gateway::settlement::UsageSource;
use crate::gateway::GatewayError;
use crate::money::MicroUsd;

pub const JSON: &str = "application/json";

/// How the route bills, with what it needs to read the answer.
#[derive(Debug, Clone)]
pub enum Meter {
    /// Per image returned, at the price of the size and quality the answer reports (else asked).
    Images {
        size: Option<String>,
        quality: Option<String>,
        /// The dearest price that can apply: what each image is held at.
        held_per_image: MicroUsd,
    },
    /// Per second of audio the provider reports; the bound when it reports none.
    Audio,
    /// Per character of input, counted by AEX (the provider bills the same count).
    Speech,
    /// Free: one request.
    Moderation,
}

/// A media request, checked and priced.
#[derive(Debug, Clone)]
pub struct Plan {
    /// What is billed: `image`, `audio_second`, `character` or `request`.
    pub unit: &'static str,
    pub units_bound: u64,
    /// The hold: the most the units bound can cost.
    pub cost_bound: MicroUsd,
    /// Text tokens of the request (for policy's `max_input_tokens` and the TPM window).
    pub prompt_tokens: u64,
    /// What the hold covers, for a 402.
    pub covers: String,
    /// The content type of a successful answer, for replays of it.
    pub content_type: String,
    /// The body sent upstream, and its content type.
    pub upstream_content_type: String,
    pub upstream_body: Bytes,
    pub meter: Meter,
}

/// What an answer is billed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bill {
    pub units: u64,
    pub cost: MicroUsd,
    pub source: UsageSource,
    /// The price entry applied, when the unit has several (`1024x1024/hd`).
    pub price: Option<String>,
}

/// Checks and prices a request for `route` on `model`.
pub fn plan(
    route: CallRoute,
    model: &ModelRoute,
    body: &Map<String, Value>,
    file: Option<&UploadFile>,
) -> Result<Plan, GatewayError> {
    match route {
        CallRoute::ImagesGenerations => images::plan(model, body),
        CallRoute::AudioTranscriptions | CallRoute::AudioTranslations => {
            audio::plan(model, body, file)
        }
        CallRoute::AudioSpeech => speech::plan(model, body),
        _ => moderations::plan(model, body),
    }
}

impl Plan {
    /// What the call is priced by while it is held: its units bound at their dearest.
    pub fn held<'a>(&'a self, model: &'a ModelRoute) -> Metered<'a> {
        Metered {
            alias: &model.alias,
            unit: self.unit,
            units: self.units_bound,
            units_bound: self.units_bound,
            price: None,
            cost: self.cost_bound,
            prompt_tokens: self.prompt_tokens,
            covers: &self.covers,
        }
    }

    /// The bill of a successful answer (`body` of `content_type`); `None` when the answer does
    /// not say what was done (an image answer without `data`): the provider may have done the
    /// work, so the caller charges the hold.
    pub fn bill(
        &self,
        model: &ModelRoute,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Option<Bill> {
        match &self.meter {
            Meter::Images {
                size,
                quality,
                held_per_image,
            } => images::bill(
                model,
                (size.as_deref(), quality.as_deref()),
                *held_per_image,
                body,
            ),
            Meter::Audio => Some(audio::bill(model, self, content_type, body)),
            Meter::Speech | Meter::Moderation => Some(Bill {
                units: self.units_bound,
                cost: self.cost_bound,
                source: UsageSource::Estimated,
                price: None,
            }),
        }
    }
}

/// The JSON body sent upstream: the caller's fields with the upstream model name.
pub fn json_upstream(model: &ModelRoute, body: &Map<String, Value>) -> Bytes {
    let mut out = body.clone();
    out.insert("model".into(), Value::String(model.upstream_model.clone()));
    Bytes::from(serde_json::to_vec(&out).unwrap_or_default())
}

fn invalid(message: impl Into<String>, field: &str) -> GatewayError {
    GatewayError::invalid(message, Some(field))
}

/// A string field, when present (null: absent).
pub fn string<'a>(
    body: &'a Map<String, Value>,
    field: &str,
) -> Result<Option<&'a str>, GatewayError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(format!("`{field}` must be a string"), field)),
    }
}

/// A required non-empty string field.
pub fn required<'a>(body: &'a Map<String, Value>, field: &str) -> Result<&'a str, GatewayError> {
    match string(body, field)? {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(invalid(
            format!("`{field}` is required and must be a non-empty string"),
            field,
        )),
    }
}

/// One of `allowed` (default `default`).
pub fn one_of<'a>(
    body: &'a Map<String, Value>,
    field: &str,
    allowed: &[&'a str],
    default: &'a str,
) -> Result<&'a str, GatewayError> {
    match string(body, field)? {
        None => Ok(default),
        Some(v) if allowed.contains(&v) => Ok(v),
        Some(v) => Err(invalid(
            format!("`{field}` must be one of {}, got {v:?}", allowed.join(", ")),
            field,
        )),
    }
}

/// A positive integer of at most `max` (a multipart field arrives as its decimal text).
pub fn count(
    body: &Map<String, Value>,
    field: &str,
    max: u64,
) -> Result<Option<u64>, GatewayError> {
    let n = match body.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        Some(v) => v.as_u64(),
    };
    match n {
        Some(n) if (1..=max).contains(&n) => Ok(Some(n)),
        _ => Err(invalid(
            format!("`{field}` must be a positive integer of at most {max}"),
            field,
        )),
    }
}
