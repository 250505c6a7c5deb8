//! `process` plugins: an executable from `tools.plugin_dir`, run once per call.
//!
//! Before every run the executable is loaded again ([`super::executable::load`]) and its SHA-256
//! and the hash over it and the manifest's arguments are checked against the ones recorded at
//! install; the verified bytes are copied into a fresh temporary directory and run from there,
//! so the file cannot be swapped between the check and the run. The process gets only the
//! environment set here, that directory as its home and working directory, the arguments as JSON
//! on stdin, rlimits (through `prlimit`), bubblewrap ([`super::sandbox`]) unless isolation was
//! explicitly given up, capped stdout/stderr, and a wall-clock timeout after which its whole
//! process tree is killed ([`super::reap`]).

use std::path::Path;
use std::process::Stdio;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::executable::{self, invocation_sha256};
use super::{manifest_str, reap, result_of, sandbox, Limits, ToolError, ToolOutput, Tools};
use crate::config::ToolsSettings;

const PRLIMIT: &str = "/usr/bin/prlimit";

/// Staged executables are written under a shared guard and processes are started under an
/// exclusive one. A fork made while another run's staged file is still open for writing would
/// carry that descriptor until its exec, and the other run's `execve` of the file would then fail
/// with ETXTBSY ("Text file busy"): a plugin refused at random under concurrency.
static STAGING: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());
const PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Writes the verified bytes to `path` (owner-executable), closing the file before any process
/// starts (see [`STAGING`]).
async fn stage(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let _writing = STAGING.read().await;
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o700)
        .open(path)
        .await?;
    file.write_all(bytes).await?;
    file.flush().await?;
    drop(file);
    Ok(())
}

/// A process manifest's arguments: a list of strings (anything else is refused, never dropped).
pub fn manifest_args(manifest: &Value) -> Result<Vec<String>, String> {
    match manifest.get("args") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|a| {
                a.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| "manifest.args must be a list of strings".to_owned())
            })
            .collect(),
        Some(_) => Err("manifest.args must be a list of strings".into()),
    }
}

/// prlimit's part of the command line.
fn rlimits(settings: &ToolsSettings, limits: Limits) -> Vec<String> {
    let cpu = limits.timeout.as_secs() + 1;
    let memory = settings.memory_limit_mib.saturating_mul(1 << 20);
    vec![
        PRLIMIT.to_owned(),
        format!("--as={memory}"),
        format!("--cpu={cpu}"),
        format!(
            "--fsize={}",
            limits.max_output.saturating_mul(4).max(1 << 20)
        ),
        "--nofile=256".to_owned(),
        "--core=0".to_owned(),
        "--".to_owned(),
    ]
}

/// Reads at most `limit` bytes; `Err` when there was more.
async fn read_limited(
    mut from: impl tokio::io::AsyncRead + Unpin,
    limit: usize,
) -> Result<Vec<u8>, ToolError> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    (&mut from)
        .take(cap)
        .read_to_end(&mut out)
        .await
        .map_err(|e| ToolError::Failed(e.to_string()))?;
    if out.len() > limit {
        return Err(ToolError::OutputTooLarge(limit));
    }
    Ok(out)
}

/// Loads the executable and checks both hashes recorded at install.
async fn verified(
    settings: &ToolsSettings,
    manifest: &Value,
) -> Result<(Vec<u8>, Vec<String>), ToolError> {
    let path = manifest_str(manifest, "path")?;
    let expected = manifest_str(manifest, "sha256")?;
    let expected_invocation = manifest_str(manifest, "invocation_sha256").map_err(|_| {
        ToolError::Manifest(
            "no manifest.invocation_sha256 (installed before arguments were hashed); reinstall it"
                .into(),
        )
    })?;
    let args = manifest_args(manifest).map_err(ToolError::Manifest)?;
    let exe = executable::load(settings, path)
        .await
        .map_err(|e| ToolError::Executable(e.to_string()))?;
    if !exe.sha256.eq_ignore_ascii_case(expected)
        || !invocation_sha256(&exe.sha256, &args).eq_ignore_ascii_case(expected_invocation)
    {
        return Err(ToolError::HashMismatch);
    }
    Ok((exe.bytes, args))
}

pub(super) async fn run(
    tools: &Tools,
    manifest: &Value,
    arguments: &Value,
    limits: Limits,
) -> Result<ToolOutput, ToolError> {
    let settings = tools.settings();
    let (bytes, args) = verified(settings, manifest).await?;
    let isolated = tools.sandbox_works().await;
    if !isolated {
        if settings.require_isolation {
            return Err(ToolError::IsolationUnavailable);
        }
        tracing::warn!(
            "running a process plugin WITHOUT isolation (tools.require_isolation = false)"
        );
    }
    if !Path::new(PRLIMIT).is_file() {
        return Err(ToolError::Failed(format!(
            "{PRLIMIT} is missing; plugins do not run without rlimits"
        )));
    }
    let dir = tempfile::tempdir()
        .map_err(|e| ToolError::Failed(format!("cannot create a working directory: {e}")))?;
    let tool = dir.path().join("tool");
    stage(&tool, &bytes)
        .await
        .map_err(|e| ToolError::Failed(format!("cannot stage the executable: {e}")))?;
    drop(bytes);

    let run_id = uuid::Uuid::new_v4().to_string();
    let home = dir.path().to_string_lossy().into_owned();
    let env = [
        ("PATH", PATH),
        ("HOME", home.as_str()),
        ("TMPDIR", home.as_str()),
        (reap::MARK_VAR, run_id.as_str()),
    ];
    let mut line: Vec<std::ffi::OsString> = Vec::new();
    if isolated {
        line.push(settings.bwrap_path.clone().into_os_string());
        line.extend(sandbox::bwrap_args(
            dir.path(),
            &settings.plugin_dir_path(),
            &env,
        ));
    }
    line.extend(rlimits(settings, limits).into_iter().map(Into::into));
    line.push(tool.into_os_string());
    line.extend(args.into_iter().map(Into::into));
    let Some((program, rest)) = line.split_first() else {
        return Err(ToolError::Manifest("empty command line".into()));
    };
    let mut command = tokio::process::Command::new(program);
    command.args(rest).env_clear();
    if !isolated {
        command.envs(env);
    }
    let starting = STAGING.write().await;
    let spawned = command
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn();
    drop(starting);
    let mut child =
        spawned.map_err(|e| ToolError::Failed(format!("cannot start the plugin: {e}")))?;
    let root = child.id();
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(ToolError::Failed(
            "the process has no standard streams".into(),
        ));
    };
    let input = serde_json::to_vec(arguments).unwrap_or_default();
    let max = limits.max_output;
    let work = async {
        // A tool that does not read its input must not block us: errors writing it are ignored.
        let _ = stdin.write_all(&input).await;
        drop(stdin);
        let (out, err) = tokio::join!(read_limited(stdout, max), read_limited(stderr, max));
        let status = child
            .wait()
            .await
            .map_err(|e| ToolError::Failed(e.to_string()))?;
        Ok::<_, ToolError>((status, out?, err?))
    };
    let outcome = tokio::time::timeout(limits.timeout, work).await;
    // Whatever happened, nothing of the tool may outlive the call.
    if let Some(pgid) = root.and_then(|id| i32::try_from(id).ok()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    // A finished run's root was reaped and its pid may be reused by now: walk the tree from it
    // only when it timed out (unreaped, so its pid is still its own); the mark finds the rest.
    let tree_root = if outcome.is_err() { root } else { None };
    let _ = tokio::task::spawn_blocking(move || reap::kill_tree(tree_root, &run_id)).await;
    let (status, out, err) = match outcome {
        Err(_) => return Err(limits.timeout_error()),
        Ok(r) => r?,
    };
    let stdout = String::from_utf8_lossy(&out).into_owned();
    let stderr = String::from_utf8_lossy(&err).into_owned();
    if !status.success() {
        let tail: String = stderr
            .chars()
            .rev()
            .take(300)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(ToolError::Failed(format!("exited with {status}: {tail}")));
    }
    Ok(ToolOutput {
        result: result_of(&stdout),
        stdout,
        stderr,
    })
}
