//! The media routes (issue 18): images, audio transcription and translation, speech and
//! moderations, through the same governed pipeline as a model call — auth, idempotency, policy
//! (`allowed_models`, `max_input_tokens`), rate limits, a hold, exactly-once settlement and its
//! ledger event — but priced per unit from the routing table instead of per token: per image by
//! size and quality, per second of audio, per character of speech, nothing for a moderation.
//!
//! [`plan`] checks a request and prices its hold (a 400 naming the field, or the missing price
//! setting, before anything is held); [`run`] calls the provider and settles what it reports.
//! Fallbacks are not tried on these routes: the hold covers the model asked for.

mod audio;
mod images;
mod moderations;
pub mod multipart;
pub mod plan;
mod run;
mod speech;

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use super::admit::admit_until_decided;
use super::call_types::{CallInput, CallOutput};
use super::pricing::Pricing;
use super::ticket::{Target, Ticket};
use super::{idempotency, Gateway, GatewayError};
use crate::config::{Capability, ModelRoute};
use crate::domain::CallRoute;

/// The file part of a multipart upload.
pub struct UploadFile {
    pub filename: String,
    pub content_type: String,
    pub bytes: Bytes,
}

/// A media call as the HTTP layer hands it over: the JSON body (for an upload, its text fields)
/// and the uploaded file.
pub struct MediaCall {
    pub input: CallInput,
    pub file: Option<UploadFile>,
}

/// Whether `route` is served here.
pub fn serves(route: CallRoute) -> bool {
    capability_of(route).is_some()
}

fn capability_of(route: CallRoute) -> Option<Capability> {
    match route {
        CallRoute::ImagesGenerations => Some(Capability::Images),
        CallRoute::AudioTranscriptions | CallRoute::AudioTranslations => {
            Some(Capability::Transcriptions)
        }
        CallRoute::AudioSpeech => Some(Capability::Speech),
        CallRoute::Moderations => Some(Capability::Moderations),
        _ => None,
    }
}

/// The model the request names; without one (OpenAI defaults `model` on images and
/// moderations), the first alias by name that serves the route.
fn model_for(
    gw: &Gateway,
    route: CallRoute,
    body: &Map<String, Value>,
) -> Result<Arc<ModelRoute>, GatewayError> {
    let capability = capability_of(route).ok_or_else(|| {
        GatewayError::Internal(anyhow::anyhow!("{} is not a media route", route.as_str()))
    })?;
    let routing = gw.routing();
    let model = match body.get("model") {
        Some(Value::String(alias)) if !alias.is_empty() => routing
            .model(alias)
            .cloned()
            .ok_or_else(|| GatewayError::ModelNotFound(alias.clone()))?,
        None | Some(Value::Null) => routing
            .aliases()
            .into_iter()
            .filter_map(|a| routing.model(a))
            .find(|m| m.has(capability))
            .cloned()
            .ok_or_else(|| {
                GatewayError::invalid(
                    format!(
                        "you must provide a `model`: no model serves {}",
                        route.as_str()
                    ),
                    Some("model"),
                )
            })?,
        Some(_) => {
            return Err(GatewayError::invalid(
                "`model` must be a string",
                Some("model"),
            ))
        }
    };
    if !model.has(capability) {
        return Err(GatewayError::invalid(
            format!(
                "model `{}` does not support {}",
                model.alias,
                route.as_str()
            ),
            Some("model"),
        ));
    }
    Ok(model)
}

/// The request's fingerprint: its fields and, for an upload, the file's name, size and SHA-256,
/// so the same key with another file is a conflict, not a replay.
fn fingerprint(input: &CallInput, file: Option<&UploadFile>) -> String {
    let mut body = input.body.clone();
    if let Some(f) = file {
        let digest = hex::encode(Sha256::digest(&f.bytes));
        body.insert(
            "\u{0}file".into(),
            json!({"filename": f.filename, "bytes": f.bytes.len(), "sha256": digest}),
        );
    }
    idempotency::fingerprint(input.route, &body)
}

/// Runs one governed media call.
pub async fn execute(gw: Arc<Gateway>, call: MediaCall) -> Result<CallOutput, GatewayError> {
    let input = &call.input;
    let span = input.record_on_span();
    let (key, keyed) = idempotency::execution_key(input.idempotency_key.as_deref())?;
    span.record("execution_id", key.as_str());
    let model = model_for(&gw, input.route, &input.body)?;
    span.record("model", model.alias.as_str());
    let plan = plan::plan(input.route, &model, &input.body, call.file.as_ref())?;
    let fingerprint = fingerprint(input, call.file.as_ref());
    let ticket = Ticket {
        tenant_id: input.tenant_id,
        agent_id: input.agent_id,
        route: input.route,
        key: &key,
        keyed,
        fingerprint: &fingerprint,
        pricing: Pricing::Metered(plan.held(&model)),
        body: &input.body,
        prompt_tokens: plan.prompt_tokens,
        choices: 1,
        requested_cap: None,
        default_cap: None,
        stream: false,
        passthrough: input.passthrough_key.is_some(),
        target: Target {
            provider: &model.provider.name,
            details: json!({"model": model.alias, "upstream_model": model.upstream_model,
                "unit": plan.unit, "units_bound": plan.units_bound}),
        },
    };
    let hold = match admit_until_decided(&gw, &ticket).await? {
        Ok(r) => r.hold,
        Err(mut answer) => {
            // A replayed or awaited success is the stored answer: its type follows the request.
            if (200..300).contains(&answer.status) {
                answer.content_type = plan.content_type.clone();
            }
            return Ok(answer);
        }
    };
    let (tx, rx) = oneshot::channel();
    let passthrough = input.passthrough_key.clone();
    let task_gw = Arc::clone(&gw);
    let route = input.route;
    let task = async move {
        let job = run::Job {
            gw: &task_gw,
            route,
            model: &model,
            plan,
            passthrough,
        };
        let _ = tx.send(run::run(job, hold).await);
    };
    gw.tasks
        .spawn(tracing::Instrument::instrument(task, span.clone()));
    rx.await
        .map_err(|_| GatewayError::Internal(anyhow::anyhow!("media task ended without a result")))
}
