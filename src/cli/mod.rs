//! The command line: one file per command group. Every command exits non-zero on failure and,
//! with `--json`, prints exactly one JSON object on stdout.

pub mod agent;
pub mod client;
pub mod daemon;
pub mod db_checks;
pub mod dev;
pub mod embedded;
pub mod init;

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
    /// Ledger verification.
    Ledger {
        #[command(subcommand)]
        action: LedgerAction,
    },
    /// Verify the chains and rebuild every agent's books from the ledger.
    Replay {
        /// Show one execution's event timeline instead.
        #[arg(long = "execution")]
        execution: Option<String>,
    },
    /// Check the invariants of the books (SPEC §15).
    Audit,
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
pub enum LedgerAction {
    /// Walk every chain, recompute every hash, check the latest checkpoint, name the first bad event.
    Verify,
    /// Write a signed checkpoint of every chain's head now.
    Checkpoint,
    /// Write every event as JSON lines (re-verifiable with deploy/verify-ledger-export.py).
    Export {
        /// File to write (default: standard output).
        #[arg(long, short)]
        output: Option<std::path::PathBuf>,
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

/// Prints a value as the single JSON object of `--json`, or a human line.
pub fn emit(json: bool, value: &serde_json::Value, human: impl FnOnce() -> String) {
    if json {
        println!("{value}");
    } else {
        println!("{}", human());
    }
}
