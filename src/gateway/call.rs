//! One governed, non-streaming call from request body to settled result: validate, admit
//! (waiting out a duplicate in flight), mark DISPATCHED, call the provider and settle on a tracked
//! task that outlives the client's connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Map, Value};
use tokio::sync::oneshot;

use super::admission::{self, Admission, Reservation, Ticket};
use super::error::openai_error_body;
use super::estimate::{self, Estimate};
use super::idempotency;
use super::settlement::{self, Outcome, SettleResult, UsageSource};
use super::{Gateway, GatewayError};
use crate::config::{Capability, ModelRoute, Secret, TokenizerKind};
use crate::domain::{AgentId, CallRoute, ExecutionState, TenantId};
use crate::providers::{usage, ProviderError, UpstreamRequest, Usage};
use crate::store::executions;

/// A northbound call as the HTTP layer hands it over.
pub struct CallInput {
    pub tenant_id: TenantId,
    pub agent_id: AgentId,
    pub route: CallRoute,
    pub body: Map<String, Value>,
    pub idempotency_key: Option<String>,
    pub passthrough_key: Option<Secret>,
}

/// What to send back: a body with its status, and the AEX headers.
#[derive(Debug, Clone)]
pub struct CallOutput {
    pub status: u16,
    pub body: Bytes,
    pub content_type: String,
    pub execution_id: String,
    pub cost_micro_usd: Option<i64>,
    pub remaining_micro_usd: Option<i64>,
    pub replayed: bool,
}

const JSON: &str = "application/json";

impl CallOutput {
    fn error(execution_id: &str, status: u16, kind: &str, code: &str, message: &str) -> Self {
        CallOutput {
            status,
            body: Bytes::from(openai_error_body(message, kind, code, None)),
            content_type: JSON.to_owned(),
            execution_id: execution_id.to_owned(),
            cost_micro_usd: None,
            remaining_micro_usd: None,
            replayed: false,
        }
    }
}

/// The request, checked and priced, ready for admission.
struct Prepared {
    key: String,
    keyed: bool,
    fingerprint: String,
    model: Arc<ModelRoute>,
    prompt_tokens: u64,
    requested_cap: Option<u64>,
    default_cap: Option<u64>,
    /// The body field that carries the output cap, when the route has one.
    cap_field: Option<&'static str>,
    stream: bool,
}

fn capability_of(route: CallRoute) -> Capability {
    match route {
        CallRoute::Responses => Capability::Responses,
        CallRoute::Embeddings => Capability::Embeddings,
        _ => Capability::Chat,
    }
}

/// Reads a positive integer field; `Err` names the field.
fn positive_int(body: &Map<String, Value>, field: &str) -> Result<Option<u64>, GatewayError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n > 0 => Ok(Some(n)),
            _ => Err(GatewayError::invalid(
                format!("`{field}` must be a positive integer"),
                Some(field),
            )),
        },
    }
}

fn prepare(gw: &Gateway, input: &CallInput) -> Result<Prepared, GatewayError> {
    let (key, keyed) = idempotency::execution_key(input.idempotency_key.as_deref())?;
    let body = &input.body;
    let alias = match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.as_str(),
        _ => {
            return Err(GatewayError::invalid(
                "you must provide a `model` string",
                Some("model"),
            ))
        }
    };
    let model = gw
        .routing()
        .model(alias)
        .cloned()
        .ok_or_else(|| GatewayError::ModelNotFound(alias.to_owned()))?;
    if !model.has(capability_of(input.route)) {
        return Err(GatewayError::invalid(
            format!("model `{alias}` does not support {}", input.route.as_str()),
            Some("model"),
        ));
    }
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(GatewayError::invalid(
                "`stream` must be a boolean",
                Some("stream"),
            ))
        }
    };
    if stream {
        return Err(GatewayError::invalid(
            "streaming (`stream: true`) is not supported on this route yet",
            Some("stream"),
        ));
    }
    let (input_field, cap_field) = match input.route {
        CallRoute::ChatCompletions => {
            let cap_field = if body.contains_key("max_completion_tokens") {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            ("messages", Some(cap_field))
        }
        CallRoute::Responses => ("input", Some("max_output_tokens")),
        _ => ("input", None),
    };
    let input_ok = match (input.route, body.get(input_field)) {
        (CallRoute::ChatCompletions, Some(Value::Array(m))) => {
            !m.is_empty() && m.iter().all(Value::is_object)
        }
        (_, Some(Value::String(_) | Value::Array(_))) => true,
        _ => false,
    };
    if !input_ok {
        return Err(GatewayError::invalid(
            format!(
                "`{input_field}` is required and must be a non-empty array{}",
                if input_field == "input" {
                    " or a string"
                } else {
                    " of message objects"
                }
            ),
            Some(input_field),
        ));
    }
    let requested_cap = match cap_field {
        Some(field) => positive_int(body, field)?,
        None => None,
    };
    let model_max = model.max_output_tokens.map(u64::from);
    if let (Some(asked), Some(max), Some(field)) = (requested_cap, model_max, cap_field) {
        if asked > max {
            return Err(GatewayError::invalid(
                format!("`{field}` is too large: {asked}. This model supports at most {max} output tokens"),
                Some(field),
            ));
        }
    }
    let default_cap = cap_field
        .map(|_| model_max.unwrap_or(u64::from(gw.settings.gateway.default_max_output_tokens)));
    let prompt_tokens = estimate::prompt_tokens(input.route, model.tokenizer, body);
    Ok(Prepared {
        fingerprint: idempotency::fingerprint(input.route, body),
        key,
        keyed,
        model,
        prompt_tokens,
        requested_cap,
        default_cap,
        cap_field,
        stream,
    })
}

/// Runs one governed call to its settled result, recording its facts on the request span.
pub async fn execute(gw: Arc<Gateway>, input: CallInput) -> Result<CallOutput, GatewayError> {
    let span = tracing::Span::current();
    span.record("tenant", tracing::field::display(input.tenant_id));
    span.record("agent", tracing::field::display(input.agent_id));
    let p = prepare(&gw, &input)?;
    span.record("execution_id", p.key.as_str());
    span.record("model", p.model.alias.as_str());
    let ticket = Ticket {
        tenant_id: input.tenant_id,
        agent_id: input.agent_id,
        route: input.route,
        key: &p.key,
        keyed: p.keyed,
        fingerprint: &p.fingerprint,
        model: &p.model,
        body: &input.body,
        prompt_tokens: p.prompt_tokens,
        requested_cap: p.requested_cap,
        default_cap: p.default_cap,
        stream: p.stream,
        passthrough: input.passthrough_key.is_some(),
    };
    let wait = Duration::from_secs(gw.settings.gateway.idempotency_wait_seconds);
    let deadline = tokio::time::Instant::now() + wait;
    let admission_started = Instant::now();
    let reservation = loop {
        let admitted = admission::admit(&gw, &ticket).await?;
        crate::telemetry::record_ms("admission_ms", admission_started);
        match admitted {
            Admission::Reserved(r) => break r,
            Admission::Refused(f) => {
                span.record("outcome", f.code);
                return Ok(CallOutput {
                    status: f.status,
                    body: Bytes::from(f.body),
                    content_type: JSON.to_owned(),
                    execution_id: f.execution_key,
                    cost_micro_usd: None,
                    remaining_micro_usd: Some(f.remaining),
                    replayed: false,
                });
            }
            Admission::Replay(s) => {
                span.record("outcome", "replayed");
                return Ok(CallOutput {
                    status: s.status,
                    body: Bytes::from(s.body),
                    content_type: if s.is_stream {
                        "text/event-stream"
                    } else {
                        JSON
                    }
                    .to_owned(),
                    execution_id: s.execution_key,
                    cost_micro_usd: Some(0),
                    remaining_micro_usd: Some(s.remaining),
                    replayed: true,
                });
            }
            Admission::InFlight => {
                wait_for_terminal(&gw, &ticket, deadline).await?;
            }
        }
    };

    let body = upstream_body(&input.body, &p, &reservation.estimate);
    if let Err(e) = settlement::mark_dispatched(&gw, &reservation, &p.model).await {
        // Nothing was sent: give the hold back before reporting the failure.
        let release = Outcome::Release {
            reason: "dispatch_not_recorded".into(),
            state: ExecutionState::Released,
            upstream_status: None,
        };
        let _ = settlement::settle(&gw, &reservation, &p.model, &release).await;
        return Err(e.into());
    }

    // The provider call and settlement run on a tracked task: if the client goes away, the
    // call still completes and is booked, and shutdown waits for it.
    let (tx, rx) = oneshot::channel();
    let task_gw = Arc::clone(&gw);
    let route = input.route;
    let passthrough = input.passthrough_key.clone();
    let model = Arc::clone(&p.model);
    let task = async move {
        let out =
            dispatch_and_settle(&task_gw, route, &reservation, &model, body, passthrough).await;
        let _ = tx.send(out);
    };
    gw.tasks
        .spawn(tracing::Instrument::instrument(task, span.clone()));
    let out = rx.await.map_err(|_| {
        GatewayError::Internal(anyhow::anyhow!("settlement task ended without a result"))
    })?;
    Ok(out)
}

/// Polls (without locks) until the execution under this key is terminal or the deadline passes.
async fn wait_for_terminal(
    gw: &Gateway,
    t: &Ticket<'_>,
    deadline: tokio::time::Instant,
) -> Result<(), GatewayError> {
    let mut delay = Duration::from_millis(20);
    loop {
        if tokio::time::Instant::now() >= deadline {
            return Err(GatewayError::InProgress);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(250));
        let mut conn = gw.pool.acquire().await?;
        let row = executions::find_by_key(&mut conn, t.tenant_id, t.agent_id, t.key).await?;
        let terminal = row
            .and_then(|r| r.state.parse::<ExecutionState>().ok())
            .is_none_or(ExecutionState::is_terminal);
        if terminal {
            return Ok(());
        }
    }
}

/// The body sent upstream: the caller's fields untouched except the model name and the output
/// cap, which is always sent so the provider cannot exceed what was reserved.
fn upstream_body(body: &Map<String, Value>, p: &Prepared, estimate: &Estimate) -> Bytes {
    let mut out = body.clone();
    out.insert(
        "model".into(),
        Value::String(p.model.upstream_model.clone()),
    );
    if let (Some(field), Some(cap)) = (p.cap_field, estimate.output_cap) {
        let field = if p.requested_cap.is_none()
            && field == "max_tokens"
            && p.model.tokenizer != TokenizerKind::Bytes
        {
            // OpenAI's reasoning models accept only the newer name; other OpenAI-compatible
            // servers (vLLM, llama.cpp, Ollama) know `max_tokens`.
            "max_completion_tokens"
        } else {
            field
        };
        out.insert(field.into(), Value::from(cap));
    }
    Bytes::from(serde_json::to_vec(&out).unwrap_or_default())
}

/// Rewrites the upstream model name back to the alias the agent used.
fn rewrite_model(value: &mut Value, alias: &str) {
    if let Some(obj) = value.as_object_mut() {
        if obj.contains_key("model") {
            obj.insert("model".into(), Value::String(alias.to_owned()));
        }
    }
}

async fn dispatch_and_settle(
    gw: &Gateway,
    route: CallRoute,
    r: &Reservation,
    model: &ModelRoute,
    body: Bytes,
    passthrough: Option<Secret>,
) -> CallOutput {
    let started = Instant::now();
    let sent = gw
        .upstream
        .send(UpstreamRequest {
            provider: &model.provider,
            route,
            body,
            passthrough_key: passthrough.as_ref().map(Secret::expose),
        })
        .await;
    let latency_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    crate::telemetry::record_ms("upstream_ms", started);
    crate::metrics::observe_upstream(
        &model.provider.name,
        started.elapsed(),
        sent.as_ref().map(|r| r.status),
    );
    let id = r.execution_key.as_str();
    let response = match sent {
        Ok(resp) => resp,
        Err(e) => {
            let (status, code, reason) = match e {
                ProviderError::Timeout { .. } => (504, "upstream_timeout", "upstream_timeout"),
                _ => (502, "upstream_error", "upstream_unreachable"),
            };
            tracing::warn!(execution_id = id, error = %e, "upstream call failed");
            release(gw, r, model, reason, None).await;
            return CallOutput::error(id, status, "server_error", code, &e.to_string());
        }
    };
    if !(200..300).contains(&response.status) {
        let reason = format!("upstream_status_{}", response.status);
        release(gw, r, model, &reason, Some(response.status)).await;
        if (400..500).contains(&response.status) && response.status != 429 {
            // The provider's own client error goes back as it is.
            return CallOutput {
                status: response.status,
                body: response.body,
                content_type: response.content_type.unwrap_or_else(|| JSON.to_owned()),
                execution_id: id.to_owned(),
                cost_micro_usd: None,
                remaining_micro_usd: None,
                replayed: false,
            };
        }
        let message = format!(
            "provider {} returned status {}",
            model.provider.name, response.status
        );
        return CallOutput::error(id, 502, "server_error", "upstream_error", &message);
    }

    let parsed: Option<Value> = serde_json::from_slice(&response.body)
        .ok()
        .filter(Value::is_object);
    let (usage, source, status, out_body) = match parsed {
        Some(mut value) => {
            let (usage, source) = match usage::reported(route, &value) {
                Some(u) => (u, UsageSource::Reported),
                None => (
                    Usage {
                        prompt_tokens: r.estimate.prompt_tokens,
                        completion_tokens: estimate::count_text(
                            model.tokenizer,
                            &usage::output_text(route, &value),
                        ),
                    },
                    UsageSource::Estimated,
                ),
            };
            rewrite_model(&mut value, &r.model_alias);
            (
                usage,
                source,
                response.status,
                serde_json::to_vec(&value).unwrap_or_default(),
            )
        }
        None => {
            // The provider answered 2xx but not with JSON: it may have done the work, so the
            // prompt is charged; the client learns the response was unusable.
            let usage = Usage {
                prompt_tokens: r.estimate.prompt_tokens,
                completion_tokens: 0,
            };
            let message = format!(
                "provider {} returned a malformed response",
                model.provider.name
            );
            (
                usage,
                UsageSource::Estimated,
                502,
                openai_error_body(&message, "server_error", "upstream_error", None),
            )
        }
    };
    let outcome = Outcome::Commit {
        usage,
        source,
        provider: model.provider.name.clone(),
        result: Some((status, out_body.clone(), false)),
        latency_ms,
    };
    let settle_started = Instant::now();
    let settled = settlement::settle(gw, r, model, &outcome).await;
    crate::telemetry::record_ms("settlement_ms", settle_started);
    crate::telemetry::record_outcome("committed");
    let (cost, remaining) = match settled {
        Ok(SettleResult::Committed {
            actual_micro_usd,
            remaining_micro_usd,
        }) => (Some(actual_micro_usd), Some(remaining_micro_usd)),
        Ok(_) => (None, None),
        Err(e) => {
            // The provider succeeded: the client gets its answer; the unsettled reservation is
            // left for recovery and the failure is logged once here.
            tracing::error!(execution_id = id, error = %e, "settlement failed after retries");
            (None, None)
        }
    };
    CallOutput {
        status,
        body: Bytes::from(out_body),
        content_type: JSON.to_owned(),
        execution_id: id.to_owned(),
        cost_micro_usd: cost,
        remaining_micro_usd: remaining,
        replayed: false,
    }
}

async fn release(
    gw: &Gateway,
    r: &Reservation,
    model: &ModelRoute,
    reason: &str,
    status: Option<u16>,
) {
    let outcome = Outcome::Release {
        reason: reason.to_owned(),
        state: ExecutionState::Released,
        upstream_status: status,
    };
    let settle_started = Instant::now();
    let settled = settlement::settle(gw, r, model, &outcome).await;
    crate::telemetry::record_ms("settlement_ms", settle_started);
    crate::telemetry::record_outcome(reason);
    if let Err(e) = settled {
        tracing::error!(execution_id = %r.execution_key, error = %e, "release failed after retries");
    }
}
