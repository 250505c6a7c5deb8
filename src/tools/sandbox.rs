//! The bubblewrap sandbox of a process plugin. Inside it the plugin sees:
//!
//! - `/usr` (and `/bin`, `/sbin`, `/lib*` as they are on the host), read-only, and the few `/etc`
//!   entries programs need to start (`ld.so.*`, `alternatives`, `passwd`, `group`, `localtime`,
//!   `nsswitch.conf`) — not the rest of `/etc`, not `$AEX_HOME`, not the server's files (should
//!   one of the server's directories lie under `/usr`, it is covered by an empty tmpfs);
//! - a fresh `/proc` of its own PID namespace (not the server's processes or their environment),
//!   a minimal `/dev`, an empty `/tmp` and its working directory (the staged executable);
//! - no network (its own empty network namespace), no other namespaces of the host, no
//!   capabilities, uid/gid 65534, a new session (no terminal to inject into), and only the
//!   environment given here (`--clearenv`).
//!
//! bubblewrap runs the plugin under its own init as PID 1; killing bubblewrap (its parent) kills
//! that init (`--die-with-parent`), and the kernel then kills every process in the namespace,
//! including descendants that started their own session.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Host directories that are links into `/usr` on merged-usr systems, or directories.
const SYSTEM_DIRS: &[&str] = &["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];

/// The `/etc` entries a dynamically linked program or a shell script needs.
const ETC_ENTRIES: &[&str] = &[
    "/etc/alternatives",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/group",
];

/// The server's own directories (`$AEX_HOME`, the config file's, the plugin directory): should
/// one lie under a directory the sandbox binds (an install under `/usr/local`), it is covered by
/// an empty tmpfs.
fn server_dirs(plugin_dir: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![crate::config::aex_home(), plugin_dir.to_path_buf()];
    if let Some(config) = std::env::var_os("AEX_CONFIG") {
        dirs.extend(Path::new(&config).parent().map(Path::to_path_buf));
    }
    dirs.retain(|d| d.starts_with("/usr") && d.is_dir());
    dirs
}

/// bubblewrap's arguments up to (not including) the command: `work` is bound read-write at the
/// same path and is the working directory; `env` is the whole environment.
pub(super) fn bwrap_args(work: &Path, plugin_dir: &Path, env: &[(&str, &str)]) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |items: &[&str]| args.extend(items.iter().map(OsString::from));
    push(&[
        "--unshare-all",
        "--unshare-user",
        "--uid",
        "65534",
        "--gid",
        "65534",
        "--cap-drop",
        "ALL",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--ro-bind",
        "/usr",
        "/usr",
    ]);
    for dir in SYSTEM_DIRS {
        match std::fs::read_link(dir) {
            Ok(target) => {
                let target = target.to_string_lossy().into_owned();
                push(&["--symlink", &target, dir]);
            }
            Err(_) => push(&["--ro-bind-try", dir, dir]),
        }
    }
    for entry in ETC_ENTRIES {
        push(&["--ro-bind-try", entry, entry]);
    }
    push(&["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]);
    for (key, value) in env {
        push(&["--setenv", key, value]);
    }
    for dir in server_dirs(plugin_dir) {
        args.push("--tmpfs".into());
        args.push(dir.into());
    }
    args.push("--bind".into());
    args.push(work.into());
    args.push(work.into());
    args.push("--chdir".into());
    args.push(work.into());
    args.push("--".into());
    args
}

/// Whether bubblewrap at `bwrap` can start this sandbox here: the binary may be missing, or user
/// namespaces unavailable to the server's user.
pub(super) async fn probe(bwrap: &Path) -> bool {
    let Ok(work) = tempfile::tempdir() else {
        return false;
    };
    let mut args = bwrap_args(work.path(), work.path(), &[("PATH", "/usr/bin:/bin")]);
    args.push("true".into());
    tokio::process::Command::new(bwrap)
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .is_ok_and(|s| s.success())
}
