//! `POST /v1/tools/execute` (SPEC §8): a registered tool plugin run through the same admission,
//! reservation (at the plugin's declared cost), idempotency and settlement as a model call. A run
//! that produced its result commits the declared cost. A run that started and then timed out or
//! overflowed its output limit may have done its work: it is charged the declared cost too
//! (`usage: ambiguous`, execution FAILED). Any other failure (refused before it ran, or the tool's
//! own error) releases the hold with its reason.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;

use super::admit::admit_until_decided;
use super::call_types::{CallInput, CallOutput, Hold, JSON};
use super::error::openai_error_body;
use super::pricing::Pricing;
use super::settlement::{self, elapsed_ms, Ambiguous, Commit, Outcome, Release, UsageSource};
use super::ticket::{Target, Ticket};
use super::{idempotency, Gateway, GatewayError};
use crate::domain::{CallRoute, ExecutionState};
use crate::money::MicroUsd;
use crate::providers::Usage;
use crate::store::plugins::{self, PluginRow};
use crate::tools::{PluginRun, ToolError, ToolOutput};

fn tool_name(body: &Map<String, Value>) -> Result<&str, GatewayError> {
    match body.get("tool_name") {
        Some(Value::String(name)) if !name.is_empty() => Ok(name),
        _ => Err(GatewayError::invalid(
            "`tool_name` is required and must be a non-empty string",
            Some("tool_name"),
        )),
    }
}

async fn find_plugin(
    gw: &Gateway,
    input: &CallInput,
    name: &str,
) -> Result<PluginRow, GatewayError> {
    let mut conn = gw.pool.acquire().await?;
    match plugins::get_plugin(&mut conn, input.tenant_id, name).await? {
        Some(p) if p.enabled => Ok(p),
        Some(_) => Err(GatewayError::ToolNotFound(format!(
            "tool `{name}` is disabled"
        ))),
        None => Err(GatewayError::ToolNotFound(format!(
            "tool `{name}` does not exist or you do not have access to it"
        ))),
    }
}

/// What the runner needs of a registered plugin.
fn runnable(p: &PluginRow) -> PluginRun<'_> {
    PluginRun {
        name: &p.name,
        kind: &p.kind,
        timeout_ms: p.timeout_ms,
        max_output_bytes: p.max_output_bytes,
        manifest: &p.manifest.0,
    }
}

/// Runs one governed tool call.
pub async fn execute(gw: Arc<Gateway>, input: CallInput) -> Result<CallOutput, GatewayError> {
    let span = input.record_on_span();
    let (key, keyed) = idempotency::execution_key(input.idempotency_key.as_deref())?;
    let name = tool_name(&input.body)?.to_owned();
    span.record("execution_id", key.as_str());
    span.record("model", name.as_str());
    let plugin = find_plugin(&gw, &input, &name).await?;
    let fingerprint = idempotency::fingerprint(CallRoute::ToolsExecute, &input.body);
    let cost = MicroUsd(plugin.cost_micro_usd);
    let provider = format!("tool:{}", plugin.kind);
    let ticket = Ticket {
        tenant_id: input.tenant_id,
        agent_id: input.agent_id,
        route: CallRoute::ToolsExecute,
        key: &key,
        keyed,
        fingerprint: &fingerprint,
        pricing: Pricing::Fixed { tool: &name, cost },
        body: &input.body,
        prompt_tokens: 0,
        choices: 1,
        requested_cap: None,
        default_cap: None,
        stream: false,
        passthrough: false,
        target: Target {
            provider: &provider,
            details: json!({"tool": name, "kind": plugin.kind, "version": plugin.version}),
        },
    };
    let hold = match admit_until_decided(&gw, &ticket).await? {
        Ok(r) => r.hold,
        Err(answer) => return Ok(answer),
    };

    let arguments = input
        .body
        .get("arguments")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let (tx, rx) = oneshot::channel();
    let task_gw = Arc::clone(&gw);
    let task = async move {
        let out = run_and_settle(&task_gw, hold, &plugin, provider, &arguments).await;
        let _ = tx.send(out);
    };
    gw.tasks
        .spawn(tracing::Instrument::instrument(task, span.clone()));
    rx.await
        .map_err(|_| GatewayError::Internal(anyhow::anyhow!("tool task ended without a result")))
}

/// Runs the tool and settles its hold with the outcome: the answer to give, with its charge.
async fn run_and_settle(
    gw: &Gateway,
    hold: Hold,
    plugin: &PluginRow,
    provider: String,
    arguments: &Value,
) -> CallOutput {
    let id = hold.execution_key();
    let priced = Pricing::Fixed {
        tool: &plugin.name,
        cost: MicroUsd(plugin.cost_micro_usd),
    };
    let started = Instant::now();
    let ran = gw.tools.run(runnable(plugin), id, arguments).await;
    crate::telemetry::record_ms("upstream_ms", started);
    let (out, outcome) = match ran {
        Ok(output) => answered(id, plugin, output, &provider, started),
        Err(e) => failed(id, plugin, &e, &provider, started),
    };
    settlement::finish(&gw.books, hold, priced, &outcome)
        .await
        .charged(out)
}

/// A run that produced its result: the answer, committed at the declared cost.
fn answered<'p>(
    id: &str,
    plugin: &PluginRow,
    output: ToolOutput,
    provider: &'p str,
    started: Instant,
) -> (CallOutput, Outcome<'p>) {
    let body = json!({
        "execution_id": id,
        "tool_name": plugin.name,
        "result": output.result,
        "stdout": output.stdout,
        "stderr": output.stderr,
    });
    let body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    let out = CallOutput::full(id, 200, JSON, body.clone());
    let outcome = Outcome::Commit(Commit {
        usage: Usage::default(),
        source: UsageSource::Reported,
        provider,
        result: Some((200, body, false)),
        latency_ms: elapsed_ms(started),
        stream: None,
        completion_cap: None,
        prompt_bound: 0,
        hosted_calls_bound: None,
    });
    (out, outcome)
}

/// A run that failed: charged the declared cost when it had started and was cut (it may have
/// done its work), released otherwise.
fn failed<'p>(
    id: &str,
    plugin: &PluginRow,
    e: &ToolError,
    provider: &'p str,
    started: Instant,
) -> (CallOutput, Outcome<'p>) {
    tracing::warn!(execution_id = id, tool = %plugin.name, error = %e, "tool run failed");
    let (status, code) = match e {
        ToolError::Timeout(_) => (504, "upstream_timeout"),
        _ => (502, "upstream_error"),
    };
    // A run that started and was cut may have done its work: its declared cost is charged, and
    // the answer says so.
    let started_and_cut = matches!(e, ToolError::Timeout(_) | ToolError::OutputTooLarge(_));
    let message = if started_and_cut {
        format!(
            "{e}; the tool had started, so its declared cost of {} micro-USD was charged",
            plugin.cost_micro_usd
        )
    } else {
        e.to_string()
    };
    let body = Bytes::from(openai_error_body(&message, "server_error", code, None));
    let out = CallOutput::full(id, status, JSON, body.clone());
    let answer = Some((status, body, false));
    let outcome = if started_and_cut {
        Outcome::Ambiguous(Ambiguous {
            reason: e.reason(),
            provider,
            latency_ms: elapsed_ms(started),
            stream: None,
            result: answer,
        })
    } else {
        Outcome::Release(Release {
            reason: e.reason(),
            state: ExecutionState::Released,
            upstream_status: None,
            result: answer,
        })
    };
    (out, outcome)
}
