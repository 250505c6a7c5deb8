//! `process` plugins: a local executable, run once per call.
//!
//! Before every run the executable's SHA-256 is checked against the one recorded at install,
//! and the verified bytes are copied into a fresh temporary directory and run from there, so the
//! file cannot be swapped between the check and the run. The process gets a cleared environment,
//! that directory as its home and working directory, the arguments as JSON on stdin, rlimits
//! (through `prlimit`), a wall-clock timeout that kills its whole process group, and bubblewrap
//! (no network, read-only system, private /tmp) when it is available. When isolation is required
//! and bubblewrap is not available, the plugin is refused, never run unsandboxed.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, OnceLock};

use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{manifest_str, result_of, Limits, ToolError, ToolOutput};
use crate::config::ToolsSettings;

/// Whether bubblewrap at `path` can start a sandbox here (checked once per path: user namespaces
/// may be unavailable even where the binary exists).
fn bwrap_works(path: &Path) -> bool {
    static CHECKED: OnceLock<Mutex<HashMap<PathBuf, bool>>> = OnceLock::new();
    let checked = CHECKED.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(known) = checked.lock().ok().and_then(|c| c.get(path).copied()) {
        return known;
    }
    let works = path.is_file()
        && std::process::Command::new(path)
            .args([
                "--ro-bind",
                "/",
                "/",
                "--unshare-all",
                "--die-with-parent",
                "true",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if let Ok(mut c) = checked.lock() {
        c.insert(path.to_path_buf(), works);
    }
    works
}

const PRLIMIT: &str = "/usr/bin/prlimit";

/// The command line: the tool, wrapped in prlimit and, when available, bubblewrap.
fn command_line(
    settings: &ToolsSettings,
    dir: &Path,
    tool: &Path,
    args: &[String],
    limits: Limits,
) -> Result<Vec<String>, ToolError> {
    let isolated = bwrap_works(&settings.bwrap_path);
    if settings.require_isolation && !isolated {
        return Err(ToolError::IsolationUnavailable);
    }
    let mut line = Vec::new();
    if isolated {
        let dir = dir.to_string_lossy().into_owned();
        line.extend(
            [
                settings.bwrap_path.to_string_lossy().as_ref(),
                "--ro-bind",
                "/",
                "/",
                "--dev",
                "/dev",
                "--proc",
                "/proc",
                "--tmpfs",
                "/tmp",
                "--bind",
                &dir,
                &dir,
                "--chdir",
                &dir,
                "--unshare-all",
                "--die-with-parent",
                "--new-session",
                "--",
            ]
            .map(str::to_owned),
        );
    }
    if Path::new(PRLIMIT).is_file() {
        let cpu = limits.timeout.as_secs() + 1;
        let memory = settings.memory_limit_mib.saturating_mul(1 << 20);
        line.extend([
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
        ]);
    } else if settings.require_isolation {
        return Err(ToolError::IsolationUnavailable);
    }
    line.push(tool.to_string_lossy().into_owned());
    line.extend(args.iter().cloned());
    Ok(line)
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

pub(super) async fn run(
    settings: &ToolsSettings,
    manifest: &Value,
    arguments: &Value,
    limits: Limits,
) -> Result<ToolOutput, ToolError> {
    let path = manifest_str(manifest, "path")?;
    let expected = manifest_str(manifest, "sha256")?;
    let args: Vec<String> = manifest
        .get("args")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| ToolError::Failed(format!("cannot read {path}: {e}")))?;
    if !hex::encode(Sha256::digest(&bytes)).eq_ignore_ascii_case(expected) {
        return Err(ToolError::HashMismatch);
    }
    let dir = tempfile::tempdir()
        .map_err(|e| ToolError::Failed(format!("cannot create a working directory: {e}")))?;
    let tool = dir.path().join("tool");
    std::fs::write(&tool, &bytes)
        .and_then(|()| std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| ToolError::Failed(format!("cannot stage the executable: {e}")))?;
    let line = command_line(settings, dir.path(), &tool, &args, limits)?;
    let Some((program, rest)) = line.split_first() else {
        return Err(ToolError::Manifest("empty command line".into()));
    };
    let mut child = tokio::process::Command::new(program)
        .args(rest)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", dir.path())
        .env("TMPDIR", dir.path())
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| ToolError::Failed(format!("cannot start {path}: {e}")))?;
    let pgid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(nix::unistd::Pid::from_raw);
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
    if let Some(pgid) = pgid {
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    }
    let (status, out, err) = match outcome {
        Err(_) => {
            return Err(ToolError::Timeout(
                u64::try_from(limits.timeout.as_millis()).unwrap_or(u64::MAX),
            ))
        }
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
