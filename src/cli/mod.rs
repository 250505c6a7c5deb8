//! The command line: one file per command group. Every command exits non-zero on failure and,
//! with `--json`, prints exactly one JSON object on stdout.

pub mod agent;
pub mod alerts;
pub mod client;
pub mod daemon;
pub mod db_checks;
pub mod dev;
pub mod doctor;
pub mod embedded;
pub mod init;
pub mod ledger;
pub mod models;
pub mod plugin;
pub mod roles;
pub mod tenant;
pub mod token;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Settings;

#[derive(Debug, Parser)]
#[command(
    name = "aex",
    version,
    about = "AEX: a governance gateway between AI agents and LLM providers"
)]
pub struct Cli {
    /// Config file (default: $AEX_CONFIG, else $AEX_HOME/aex.toml).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Print exactly one JSON object on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create $AEX_HOME with aex.toml (fresh secrets), a starter models file and the database
    /// (an embedded Postgres cluster unless a URL is given); print an operator token.
    Init(init::InitArgs),
    /// Run the server in the foreground.
    Serve,
    /// Start, stop or inspect the background server.
    Daemon {
        #[command(subcommand)]
        action: daemon::DaemonAction,
    },
    /// Apply database migrations.
    Migrate,
    /// Manage agents through the admin API.
    Agent {
        #[command(subcommand)]
        action: agent::AgentAction,
    },
    /// Manage tenants through the admin API (operator).
    Tenant {
        #[command(subcommand)]
        action: tenant::TenantAction,
    },
    /// Issue, list, revoke and rotate tokens through the admin API.
    Token {
        #[command(subcommand)]
        action: token::TokenAction,
    },
    /// The routing table: reload it on every replica, or show the active version.
    Models {
        #[command(subcommand)]
        action: models::ModelsAction,
    },
    /// A tenant's tool plugin registry.
    Plugin {
        #[command(subcommand)]
        action: plugin::PluginAction,
    },
    /// A tenant's alerts (budget thresholds, refusals, lifecycle, overruns, …).
    Alerts {
        #[command(subcommand)]
        action: alerts::AlertsAction,
    },
    /// The endpoints alerts are delivered to (signed per Standard Webhooks).
    Webhook {
        #[command(subcommand)]
        action: alerts::WebhookAction,
    },
    /// The ledger: verify the chains, list events.
    Ledger {
        #[command(subcommand)]
        action: ledger::LedgerAction,
    },
    /// Verify the chains and rebuild every agent's books from the ledger.
    Replay {
        /// Show one execution's event timeline instead.
        #[arg(long = "execution")]
        execution: Option<String>,
    },
    /// Check the invariants of the books (SPEC §15).
    Audit,
    /// Check this installation (config, database, migrations, ledger, every provider) and say
    /// what is wrong and how to fix it; `--compat --token T` checks a running server instead.
    Doctor(doctor::DoctorArgs),
    /// Print the OpenAPI document.
    Openapi,
    /// Print the version.
    Version,
    /// Development tools.
    Dev {
        #[command(subcommand)]
        action: DevAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum DevAction {
    /// Serve a mock OpenAI-compatible upstream (prints its address on the first line).
    MockUpstream {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Delay before each answer, in milliseconds.
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        /// Chunks per streamed answer.
        #[arg(long, default_value_t = 5)]
        chunks: u64,
        /// Delay between streamed chunks, in milliseconds.
        #[arg(long, default_value_t = 0)]
        chunk_delay_ms: u64,
        /// Bill like a provider that takes everything it is allowed to: every choice at the
        /// cap, images and stored context at their worst (see `MockControl::bill_max`).
        #[arg(long)]
        bill_max: bool,
    },
    /// Append EVENTS valid hash-chained events over CHAINS new agent chains, fast, to measure
    /// verification at scale (a scratch database: the events belong to no agent).
    #[command(hide = true)]
    SeedLedger {
        #[arg(long)]
        events: u64,
        #[arg(long, default_value_t = 1_000)]
        chains: u64,
    },
    /// Measure append throughput through the real append path: APPENDERS concurrent tasks
    /// writing EVENTS events to CHAINS new chains (a scratch database).
    #[command(hide = true)]
    BenchAppend {
        #[arg(long, default_value_t = 8)]
        appenders: usize,
        #[arg(long, default_value_t = 1)]
        chains: usize,
        #[arg(long, default_value_t = 20_000)]
        events: u64,
    },
}

/// Loads settings for a command.
pub fn settings(cli: &Cli) -> anyhow::Result<Settings> {
    let path = Settings::config_path(cli.config.as_deref());
    Ok(Settings::load(&path)?)
}

/// Whether a command printed its result (a failing check prints its report, then fails).
static EMITTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether [`emit`] has printed a result in this process.
pub fn emitted() -> bool {
    EMITTED.load(std::sync::atomic::Ordering::SeqCst)
}

/// Prints a value as the single JSON object of `--json`, or a human line.
pub fn emit(json: bool, value: &serde_json::Value, human: impl FnOnce() -> String) {
    EMITTED.store(true, std::sync::atomic::Ordering::SeqCst);
    if json {
        println!("{value}");
    } else {
        println!("{}", human());
    }
}

/// A field of a JSON object as text, for human output (`-` when absent or null).
pub fn text(v: &serde_json::Value, key: &str) -> String {
    match v.get(key) {
        None | Some(serde_json::Value::Null) => "-".to_owned(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// A micro-USD field as decimal USD, for human output.
pub fn usd(v: &serde_json::Value, key: &str) -> String {
    match v.get(key).and_then(serde_json::Value::as_i64) {
        Some(n) => crate::money::MicroUsd(n).to_string(),
        None => "-".to_owned(),
    }
}

/// Prints a list: as `{"<key>": [...]}` with `--json`, else a header and one line per item.
pub fn emit_list(
    json: bool,
    key: &str,
    list: &serde_json::Value,
    header: &str,
    line: impl Fn(&serde_json::Value) -> String,
) {
    emit(json, &serde_json::json!({ key: list }), || {
        let items = list.as_array().map(Vec::as_slice).unwrap_or_default();
        std::iter::once(header.to_owned())
            .chain(items.iter().map(line))
            .collect::<Vec<_>>()
            .join("\n")
    });
}

/// Prints an object: itself with `--json`, else pretty JSON.
pub fn emit_object(json: bool, value: &serde_json::Value) {
    emit(json, value, || {
        serde_json::to_string_pretty(value).unwrap_or_default()
    });
}
