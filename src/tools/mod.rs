//! Running tool plugins (SPEC §8): `http` plugins (an HMAC-signed POST through the egress guard,
//! [`crate::net_guard`]) and `process` plugins (an executable from `tools.plugin_dir`, hash-checked
//! with its arguments before every run, in bubblewrap unless isolation was explicitly given up,
//! with rlimits and a wall-clock timeout that kills its whole process tree). Billing, policy and
//! idempotency are the gateway's: this module only runs the plugin.

pub mod executable;
mod http;
mod process;
mod reap;
mod sandbox;

pub use http::signature;
pub use process::manifest_args as process_args;

use std::time::Duration;

use serde_json::Value;
use tokio::sync::OnceCell;

use crate::config::ToolsSettings;
use crate::net_guard::{EgressPolicy, GuardedClient};

/// What a run needs of a registered plugin.
#[derive(Debug, Clone, Copy)]
pub struct PluginRun<'a> {
    pub name: &'a str,
    /// `http` or `process`.
    pub kind: &'a str,
    pub timeout_ms: i32,
    pub max_output_bytes: i32,
    pub manifest: &'a Value,
}

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
        "the tool's executable or arguments do not match the SHA-256 recorded at install; \
         refusing to run it"
    )]
    HashMismatch,
    #[error("isolation is required (tools.require_isolation) but bubblewrap is not available; refusing to run")]
    IsolationUnavailable,
    #[error("the tool's manifest is invalid: {0}")]
    Manifest(String),
    #[error("the tool's executable is refused: {0}")]
    Executable(String),
    #[error("the tool's URL is refused: {0}")]
    Egress(String),
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
            ToolError::Executable(_) => "tool_executable_refused",
            ToolError::Egress(_) => "tool_egress_refused",
            ToolError::Failed(_) => "tool_failed",
        }
    }
}

/// The plugin runners of one server: its settings, the guarded HTTP client and whether
/// bubblewrap works here (probed once).
pub struct Tools {
    settings: ToolsSettings,
    http: GuardedClient,
    sandbox: OnceCell<bool>,
}

impl Tools {
    pub fn new(
        settings: &ToolsSettings,
        connect_timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        Ok(Tools {
            http: GuardedClient::new(
                EgressPolicy::new(&settings.allowed_http_hosts),
                connect_timeout,
            )?,
            settings: settings.clone(),
            sandbox: OnceCell::new(),
        })
    }

    pub fn settings(&self) -> &ToolsSettings {
        &self.settings
    }

    /// The rules `http` plugin URLs are checked against.
    pub fn egress(&self) -> &EgressPolicy {
        self.http.policy()
    }

    /// Whether process plugins run in bubblewrap here.
    pub async fn sandbox_works(&self) -> bool {
        *self
            .sandbox
            .get_or_init(|| sandbox::probe(&self.settings.bwrap_path))
            .await
    }

    /// Says at startup how process plugins will run; giving up isolation is always logged.
    pub async fn announce(&self) {
        let works = self.sandbox_works().await;
        let bwrap = self.settings.bwrap_path.display();
        if works {
            tracing::info!(%bwrap, "process plugins run in bubblewrap");
        } else if self.settings.require_isolation {
            tracing::warn!(
                %bwrap,
                "bubblewrap does not work here and tools.require_isolation is true: process plugins will be refused"
            );
        }
        if !self.settings.require_isolation {
            tracing::warn!(
                sandbox_works = works,
                "tools.require_isolation = false: process plugins run WITHOUT isolation, as the server's user and seeing the host, whenever bubblewrap does not work"
            );
        }
    }

    /// Runs a plugin on `arguments`.
    pub async fn run(
        &self,
        plugin: PluginRun<'_>,
        execution_id: &str,
        arguments: &Value,
    ) -> Result<ToolOutput, ToolError> {
        let limits = Limits {
            timeout: Duration::from_millis(u64::try_from(plugin.timeout_ms).unwrap_or(1)),
            max_output: usize::try_from(plugin.max_output_bytes).unwrap_or(0),
        };
        let manifest = plugin.manifest;
        match plugin.kind {
            "http" => {
                http::run(
                    &self.http,
                    manifest,
                    plugin.name,
                    execution_id,
                    arguments,
                    limits,
                )
                .await
            }
            "process" => process::run(self, manifest, arguments, limits).await,
            other => Err(ToolError::Manifest(format!(
                "unknown plugin kind {other:?}"
            ))),
        }
    }
}

/// The limits of one run.
#[derive(Debug, Clone, Copy)]
struct Limits {
    timeout: Duration,
    max_output: usize,
}

impl Limits {
    fn timeout_error(&self) -> ToolError {
        ToolError::Timeout(u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX))
    }
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
