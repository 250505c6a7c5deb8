//! The `aex` binary: parse the command line and run one command.

use std::process::ExitCode;
use std::sync::Arc;

use aex::cli::{self, Cli, Command, DevAction, LedgerAction};
use aex::config::LogFormat;
use clap::Parser;

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Pretty => builder.init(),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Init(args) => cli::init::run(&cli, args).await,
        Command::Serve => cli::daemon::serve(&cli).await,
        Command::Daemon { action } => cli::daemon::run(&cli, action).await,
        Command::Migrate => cli::db_checks::migrate(&cli).await,
        Command::Agent { action } => cli::agent::run(&cli, action).await,
        Command::Ledger {
            action: LedgerAction::Verify,
        } => cli::db_checks::ledger_verify(&cli).await,
        Command::Ledger {
            action: LedgerAction::Checkpoint,
        } => cli::db_checks::ledger_checkpoint(&cli).await,
        Command::Ledger {
            action: LedgerAction::Export { output },
        } => cli::db_checks::ledger_export(&cli, output.as_deref()).await,
        Command::Replay { execution } => cli::db_checks::replay(&cli, execution.as_deref()).await,
        Command::Audit => cli::db_checks::audit(&cli).await,
        Command::Openapi => {
            println!("{}", aex::http::router::openapi_json());
            Ok(())
        }
        Command::Version => {
            cli::emit(
                cli.json,
                &serde_json::json!({"version": aex::VERSION}),
                || format!("aex {}", aex::VERSION),
            );
            Ok(())
        }
        Command::Dev {
            action:
                DevAction::MockUpstream {
                    listen,
                    delay_ms,
                    chunks,
                    chunk_delay_ms,
                },
        } => {
            let control = Arc::new(aex::dev::mock_upstream::MockControl::default());
            control
                .record
                .store(false, std::sync::atomic::Ordering::SeqCst);
            control
                .delay_ms
                .store(*delay_ms, std::sync::atomic::Ordering::SeqCst);
            control
                .chunks
                .store(*chunks, std::sync::atomic::Ordering::SeqCst);
            control
                .chunk_delay_ms
                .store(*chunk_delay_ms, std::sync::atomic::Ordering::SeqCst);
            let addr = aex::dev::mock_upstream::spawn(*listen, control).await?;
            println!("{addr}");
            tokio::signal::ctrl_c().await?;
            Ok(())
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs go to stderr; the log format comes from settings when they load, else the default.
    let format = std::env::var("AEX_LOG_FORMAT")
        .ok()
        .and_then(|f| {
            if f == "json" {
                Some(LogFormat::Json)
            } else {
                None
            }
        })
        .unwrap_or(LogFormat::Pretty);
    init_tracing(format);
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
