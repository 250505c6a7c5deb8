//! `aex serve` and `aex daemon start|stop|status`: the server in the foreground or the
//! background (pid and log in `$AEX_HOME`), with the embedded Postgres cluster when there is one.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Subcommand;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;

use super::embedded::EmbeddedPg;
use super::{emit, Cli};
use crate::config::{aex_home, Settings};

#[derive(Debug, Subcommand)]
pub enum DaemonAction {
    /// Start the server in the background (or, with --foreground, in this process).
    Start {
        #[arg(long)]
        foreground: bool,
    },
    /// Stop the background server (and the embedded database).
    Stop,
    /// Is the background server running?
    Status,
}

fn pid_file() -> PathBuf {
    aex_home().join("aex.pid")
}

fn running_pid() -> Option<Pid> {
    let text = std::fs::read_to_string(pid_file()).ok()?;
    let pid = Pid::from_raw(text.trim().parse().ok()?);
    kill(pid, None).is_ok().then_some(pid)
}

/// Starts the embedded cluster when this home has one.
fn start_embedded() -> anyhow::Result<()> {
    if let Ok(pg) = EmbeddedPg::for_home(&aex_home()) {
        if pg.exists() {
            pg.start()?;
        }
    }
    Ok(())
}

/// Runs the server until SIGTERM/SIGINT.
pub async fn serve(cli: &Cli) -> anyhow::Result<()> {
    let settings = super::settings(cli)?;
    start_embedded()?;
    let handle = crate::server::start(settings).await?;
    handle.wait().await
}

fn health_url(settings: &Settings) -> String {
    let mut addr = settings.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("http://{addr}/ready")
}

pub async fn run(cli: &Cli, action: &DaemonAction) -> anyhow::Result<()> {
    match action {
        DaemonAction::Start { foreground: true } => serve(cli).await,
        DaemonAction::Start { foreground: false } => start(cli).await,
        DaemonAction::Stop => stop(cli).await,
        DaemonAction::Status => status(cli).await,
    }
}

async fn start(cli: &Cli) -> anyhow::Result<()> {
    let settings = super::settings(cli)?;
    if let Some(pid) = running_pid() {
        bail!("already running (pid {pid})");
    }
    let home = aex_home();
    std::fs::create_dir_all(&home)?;
    let log_path = home.join("aex.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    let mut cmd = Command::new(std::env::current_exe()?);
    if let Some(config) = &cli.config {
        cmd.arg("--config").arg(config);
    }
    let child = cmd
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting the server")?;
    std::fs::write(pid_file(), child.id().to_string())?;

    let url = health_url(&settings);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if client
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        if running_pid().is_none() {
            bail!(
                "the server exited during startup; see {}",
                log_path.display()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the server did not become ready within 60 s; see {}",
                log_path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    emit(
        cli.json,
        &json!({"pid": child.id(), "listen": settings.listen.to_string(), "log": log_path}),
        || {
            format!(
                "aex running on http://{} (pid {}, log {})",
                settings.listen,
                child.id(),
                log_path.display()
            )
        },
    );
    Ok(())
}

async fn stop(cli: &Cli) -> anyhow::Result<()> {
    let settings = super::settings(cli)?;
    let stopped = match running_pid() {
        Some(pid) => {
            kill(pid, Signal::SIGTERM)?;
            let deadline =
                Instant::now() + Duration::from_secs(settings.cluster.drain_timeout_seconds + 10);
            while kill(pid, None).is_ok() {
                if Instant::now() > deadline {
                    bail!("the server (pid {pid}) did not stop within the drain timeout");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Some(pid.as_raw())
        }
        None => None,
    };
    let _ = std::fs::remove_file(pid_file());
    if let Ok(pg) = EmbeddedPg::for_home(&aex_home()) {
        if pg.exists() {
            pg.stop()?;
        }
    }
    emit(
        cli.json,
        &json!({"stopped": stopped.is_some(), "pid": stopped}),
        || match stopped {
            Some(pid) => format!("aex stopped (pid {pid})"),
            None => "aex was not running".to_owned(),
        },
    );
    Ok(())
}

async fn status(cli: &Cli) -> anyhow::Result<()> {
    let settings = super::settings(cli)?;
    let pid = running_pid();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let ready = client
        .get(health_url(&settings))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success());
    emit(
        cli.json,
        &json!({"running": pid.is_some(), "pid": pid.map(Pid::as_raw), "ready": ready}),
        || match pid {
            Some(p) => format!("aex running (pid {p}), ready: {ready}"),
            None => "aex is not running".to_owned(),
        },
    );
    if pid.is_none() {
        bail!("not running");
    }
    Ok(())
}
