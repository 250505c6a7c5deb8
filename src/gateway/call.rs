//! One governed call from request body to settled result: prepare, admit (a duplicate of an
//! attempt in flight waits for it and answers with its outcome; an admitted call is committed
//! DISPATCHED), then hand the provider call and its settlement to a tracked task that outlives
//! the client's connection.

use std::sync::Arc;

use serde_json::json;
use tokio::sync::oneshot;

use super::admit::admit_until_decided;
use super::call_types::{CallInput, CallOutput, Reservation};
use super::dispatch;
use super::job::Dispatch;
use super::outgoing::Outgoing;
use super::prepare;
use super::pricing::Pricing;
use super::ticket::{Target, Ticket};
use super::{Gateway, GatewayError};

/// Runs one governed model call to its (possibly streaming) result, recording its facts on the
/// request span.
pub async fn execute(gw: Arc<Gateway>, input: CallInput) -> Result<CallOutput, GatewayError> {
    let span = input.record_on_span();
    let p = prepare::prepare(&gw, &input)?;
    span.record("execution_id", p.key.as_str());
    let model = p.model();
    span.record("model", model.alias.as_str());
    let ticket = Ticket {
        tenant_id: input.tenant_id,
        agent_id: input.agent_id,
        route: input.route,
        key: &p.key,
        keyed: p.keyed,
        fingerprint: &p.fingerprint,
        pricing: Pricing::Tokens {
            candidates: &p.candidates,
        },
        body: &input.body,
        prompt_tokens: p.prompt_tokens,
        choices: p.shape.choices,
        requested_cap: p.requested_cap,
        default_cap: p.default_cap,
        stream: p.stream,
        passthrough: input.passthrough_key.is_some(),
        target: Target {
            provider: &model.provider.name,
            details: json!({"model": model.alias, "upstream_model": model.upstream_model}),
        },
    };
    let Reservation {
        hold,
        estimate,
        granted,
    } = match admit_until_decided(&gw, &ticket).await? {
        Ok(r) => r,
        Err(answer) => return Ok(answer),
    };

    // The provider call and settlement run on a tracked task: if the client goes away, the call
    // still completes (or, for a stream, stops) and is booked, and shutdown waits for it.
    let (tx, rx) = oneshot::channel();
    let outgoing = Outgoing::new(input.body, p.route, &p.shape, p.stream, estimate.output_cap);
    let job = Dispatch {
        gw: Arc::clone(&gw),
        route: input.route,
        candidates: p.candidates,
        outgoing,
        estimate,
        granted,
        passthrough: input.passthrough_key,
        stream: p.stream,
        client_wants_usage: p.client_wants_usage,
    };
    // The task carries the request span, so its upstream and settlement facts land there.
    gw.tasks.spawn(tracing::Instrument::instrument(
        dispatch::run(job, hold, tx),
        span.clone(),
    ));
    let out = rx.await.map_err(|_| {
        GatewayError::Internal(anyhow::anyhow!("dispatch task ended without a result"))
    })?;
    Ok(out)
}
