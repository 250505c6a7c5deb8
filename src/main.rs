//! The `aex` binary: parse the command line and run one command.

use std::process::ExitCode;

use aex::cli::{self, Cli, Command};
use aex::config::{LogFormat, Settings};
use clap::Parser;

async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Init(args) => cli::init::run(&cli, args).await,
        Command::Serve => cli::daemon::serve(&cli).await,
        Command::Daemon { action } => cli::daemon::run(&cli, action).await,
        Command::Migrate => cli::db_checks::migrate(&cli).await,
        Command::Agent { action } => cli::agent::run(&cli, action).await,
        Command::Tenant { action } => cli::tenant::run(&cli, action).await,
        Command::Token { action } => cli::token::run(&cli, action).await,
        Command::Models { action } => cli::models::run(&cli, action).await,
        Command::Plugin { action } => cli::plugin::run(&cli, action).await,
        Command::Alerts { action } => cli::alerts::run_alerts(&cli, action).await,
        Command::Webhook { action } => cli::alerts::run_webhook(&cli, action).await,
        Command::Ledger { action } => cli::ledger::run(&cli, action).await,
        Command::Replay { execution } => cli::db_checks::replay(&cli, execution.as_deref()).await,
        Command::Audit => cli::db_checks::audit(&cli).await,
        Command::Doctor(args) => cli::doctor::run(&cli, args).await,
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
        Command::Dev { action } => cli::dev::run(&cli, action).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = Settings::load(&Settings::config_path(cli.config.as_deref()));
    // Logs go to stderr, in the format the settings name (`log_format`, `AEX_LOG_FORMAT`); when
    // the settings do not load (the command reports why), `AEX_LOG_FORMAT` alone decides.
    let format = settings.as_ref().map(|s| s.log_format).unwrap_or_else(|_| {
        match std::env::var("AEX_LOG_FORMAT").as_deref() {
            Ok("json") => LogFormat::Json,
            _ => LogFormat::Pretty,
        }
    });
    aex::telemetry::init(format);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Ok(settings) = &settings {
        runtime.worker_threads(aex::server::worker_threads(settings));
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = cli.json;
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // With --json, a failure is still exactly one JSON object on stdout (a failed check
            // has printed its report already).
            if json && !cli::emitted() {
                println!(
                    "{}",
                    serde_json::json!({"error": {"message": format!("{e:#}")}})
                );
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
