//! Running tool plugins (SPEC §8): `http` plugins (an HMAC-signed POST) and `process` plugins
//! (a local executable, hash-checked before every run, with a cleared environment, a temporary
//! working directory, rlimits, a wall-clock timeout and bubblewrap when available). Billing,
//! policy and idempotency are the gateway's: this module only runs the plugin.

mod http;

pub use http::signature;
mod process;

use serde_json::Value;

use crate::config::ToolsSettings;
use crate::store::plugins::PluginRow;

/// What a run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutput {
    pub result: Value,
    pub stdout: String,
    pub stderr: String,
}

/// Why a run produced nothing billable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    #[error("the tool did not finish within {0} ms")]
    Timeout(u64),
    #[error("the tool's output exceeded the limit of {0} bytes")]
    OutputTooLarge(usize),
    #[error(
        "the tool's executable does not match the SHA-256 recorded at install; refusing to run it"
    )]
    HashMismatch,
    #[error("isolation is required (tools.require_isolation) but bubblewrap is not available; refusing to run")]
    IsolationUnavailable,
    #[error("the tool's manifest is invalid: {0}")]
    Manifest(String),
    #[error("the tool failed: {0}")]
    Failed(String),
}

impl ToolError {
    /// A short fixed reason for the ledger and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ToolError::Timeout(_) => "tool_timeout",
            ToolError::OutputTooLarge(_) => "tool_output_too_large",
            ToolError::HashMismatch => "tool_hash_mismatch",
            ToolError::IsolationUnavailable => "tool_isolation_unavailable",
            ToolError::Manifest(_) => "tool_manifest_invalid",
            ToolError::Failed(_) => "tool_failed",
        }
    }
}

/// Runs a plugin on `arguments`.
pub async fn run(
    client: &reqwest::Client,
    settings: &ToolsSettings,
    plugin: &PluginRow,
    execution_id: &str,
    arguments: &Value,
) -> Result<ToolOutput, ToolError> {
    let limits = Limits {
        timeout: std::time::Duration::from_millis(u64::try_from(plugin.timeout_ms).unwrap_or(1)),
        max_output: usize::try_from(plugin.max_output_bytes).unwrap_or(0),
    };
    let manifest = &plugin.manifest.0;
    match plugin.kind.as_str() {
        "http" => {
            http::run(
                client,
                manifest,
                &plugin.name,
                execution_id,
                arguments,
                limits,
            )
            .await
        }
        "process" => process::run(settings, manifest, arguments, limits).await,
        other => Err(ToolError::Manifest(format!(
            "unknown plugin kind {other:?}"
        ))),
    }
}

/// The limits of one run.
#[derive(Debug, Clone, Copy)]
struct Limits {
    timeout: std::time::Duration,
    max_output: usize,
}

/// A string field of a manifest.
fn manifest_str<'a>(manifest: &'a Value, key: &str) -> Result<&'a str, ToolError> {
    manifest
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| ToolError::Manifest(format!("manifest.{key} must be a string")))
}

/// A tool's stdout becomes its result: JSON when it is JSON, else the text.
fn result_of(stdout: &str) -> Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| Value::String(stdout.to_owned()))
}
