//! The `aex` binary: parse the command line and run one command.

use std::process::ExitCode;
use std::sync::Arc;

use aex::cli::{self, Cli, Command, DevAction, LedgerAction};
use aex::config::{LogFormat, Settings};
use clap::Parser;

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
    // Logs go to stderr, in the format the settings name (`log_format`, `AEX_LOG_FORMAT`); when
    // the settings do not load (the command reports why), `AEX_LOG_FORMAT` alone decides.
    let format = Settings::load(&Settings::config_path(cli.config.as_deref()))
        .map(|s| s.log_format)
        .unwrap_or_else(|_| match std::env::var("AEX_LOG_FORMAT").as_deref() {
            Ok("json") => LogFormat::Json,
            _ => LogFormat::Pretty,
        });
    aex::telemetry::init(format);
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
