//! A process plugin's executable: found under `tools.plugin_dir` only, a regular file no larger
//! than `tools.max_executable_bytes`, read without blocking the runtime, and hashed together with
//! the arguments it is run with. Install and every run go through [`load`], so a file swapped,
//! grown, replaced by a symlink or a device, or arguments changed after install are refused.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::config::ToolsSettings;

/// Why an executable may not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecutableError {
    #[error("manifest.path must be an absolute path")]
    NotAbsolute,
    #[error("tools.plugin_dir {dir} is not usable: {reason}")]
    NoPluginDir { dir: String, reason: String },
    #[error("cannot read {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error(
        "{path} is not inside tools.plugin_dir ({dir}); only operators' plugins from there are run"
    )]
    OutsidePluginDir { path: String, dir: String },
    #[error("{path} is not a regular file")]
    NotRegular { path: String },
    #[error("{path} is not executable")]
    NotExecutable { path: String },
    #[error("{path} is larger than tools.max_executable_bytes ({limit})")]
    TooLarge { path: String, limit: u64 },
}

/// An executable read and hashed.
#[derive(Debug)]
pub struct Executable {
    /// The canonical path (no symlinks), under the canonical plugin directory.
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    /// SHA-256 of the file, as `sha256sum` prints it.
    pub sha256: String,
}

/// Finds, checks and reads the executable at `path`.
pub async fn load(settings: &ToolsSettings, path: &str) -> Result<Executable, ExecutableError> {
    let requested = Path::new(path);
    if !requested.is_absolute() {
        return Err(ExecutableError::NotAbsolute);
    }
    let dir = settings.plugin_dir_path();
    let dir = tokio::fs::canonicalize(&dir)
        .await
        .map_err(|e| ExecutableError::NoPluginDir {
            dir: dir.display().to_string(),
            reason: e.to_string(),
        })?;
    let unreadable = |e: std::io::Error| ExecutableError::Unreadable {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    // Symlinks are resolved first, so a link inside the directory to a file outside is outside.
    let canonical = tokio::fs::canonicalize(requested)
        .await
        .map_err(unreadable)?;
    if !canonical.starts_with(&dir) || canonical == dir {
        return Err(ExecutableError::OutsidePluginDir {
            path: path.to_owned(),
            dir: dir.display().to_string(),
        });
    }
    // O_NOFOLLOW: a symlink swapped in after canonicalisation is not followed. O_NONBLOCK: a FIFO
    // swapped in does not hang the open; the type is checked on the open file below.
    let mut file = tokio::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
        .open(&canonical)
        .await
        .map_err(unreadable)?;
    let meta = file.metadata().await.map_err(unreadable)?;
    let shown = canonical.display().to_string();
    if !meta.is_file() {
        return Err(ExecutableError::NotRegular { path: shown });
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(ExecutableError::NotExecutable { path: shown });
    }
    let limit = settings.max_executable_bytes;
    if meta.len() > limit {
        return Err(ExecutableError::TooLarge { path: shown, limit });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // The file may grow after the size check; never read past the limit.
    (&mut file)
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .await
        .map_err(unreadable)?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > limit {
        return Err(ExecutableError::TooLarge { path: shown, limit });
    }
    let sha256 = hex::encode(Sha256::digest(&bytes));
    Ok(Executable {
        path: canonical,
        bytes,
        sha256,
    })
}

/// The hash a run is checked against: the executable's SHA-256 and the exact argument list, so
/// neither can change after install (`/bin/sh` is harmless; `/bin/sh -c '…'` is the script).
pub fn invocation_sha256(executable_sha256: &str, args: &[String]) -> String {
    let mut h = Sha256::new();
    h.update(b"aex-process-plugin-v1\0");
    h.update(executable_sha256.to_ascii_lowercase().as_bytes());
    h.update(b"\0");
    // A JSON array of strings has one spelling for one list, so the encoding is unambiguous.
    h.update(serde_json::to_vec(args).unwrap_or_default());
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_invocation_hash_covers_every_argument() {
        let exe = "ab".repeat(32);
        let base = invocation_sha256(&exe, &["-c".into(), "echo hi".into()]);
        assert_ne!(
            base,
            invocation_sha256(&exe, &["-c".into(), "echo hj".into()])
        );
        assert_ne!(
            base,
            invocation_sha256(&exe, &["-c echo".into(), "hi".into()])
        );
        assert_ne!(base, invocation_sha256(&exe, &["-c".into()]));
        assert_ne!(
            base,
            invocation_sha256(&"cd".repeat(32), &["-c".into(), "echo hi".into()])
        );
        assert_eq!(
            base,
            invocation_sha256(&exe.to_uppercase(), &["-c".into(), "echo hi".into()])
        );
    }

    #[tokio::test]
    async fn only_regular_executables_inside_the_plugin_dir_are_loaded() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("plugins");
        std::fs::create_dir(&dir).unwrap();
        let settings = ToolsSettings {
            plugin_dir: Some(dir.clone()),
            max_executable_bytes: 64,
            ..ToolsSettings::default()
        };
        let tool = dir.join("ok");
        std::fs::write(&tool, "#!/bin/sh\necho hi\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let loaded = load(&settings, tool.to_str().unwrap()).await.unwrap();
        assert_eq!(loaded.bytes, b"#!/bin/sh\necho hi\n");

        let outside = root.path().join("outside");
        std::fs::write(&outside, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.join("zero")).unwrap();
        let escape = format!("{}/../outside", dir.display());
        for path in [
            outside.to_str().unwrap(),
            dir.join("link").to_str().unwrap(),
            dir.join("zero").to_str().unwrap(),
            &escape,
            "/dev/zero",
            "/bin/sh",
        ] {
            assert!(
                matches!(
                    load(&settings, path).await,
                    Err(ExecutableError::OutsidePluginDir { .. })
                ),
                "{path}"
            );
        }
        nix::unistd::mkfifo(&dir.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(matches!(
            load(&settings, dir.join("fifo").to_str().unwrap()).await,
            Err(ExecutableError::NotRegular { .. })
        ));
        std::fs::write(dir.join("big"), [b'x'; 65]).unwrap();
        std::fs::set_permissions(dir.join("big"), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(
            load(&settings, dir.join("big").to_str().unwrap()).await,
            Err(ExecutableError::TooLarge { .. })
        ));
        std::fs::write(dir.join("plain"), "x").unwrap();
        std::fs::set_permissions(dir.join("plain"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        assert!(matches!(
            load(&settings, dir.join("plain").to_str().unwrap()).await,
            Err(ExecutableError::NotExecutable { .. })
        ));
        assert_eq!(
            load(&settings, "relative/tool").await.unwrap_err(),
            ExecutableError::NotAbsolute
        );
    }
}
