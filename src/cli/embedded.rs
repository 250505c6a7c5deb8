//! The embedded local default: a private Postgres cluster under `$AEX_HOME/pg`, created and run
//! with the machine's own Postgres binaries.
//!
//! Postgres refuses to run as root, so when AEX runs as root the cluster is owned by the
//! `postgres` user, and lives where that user can reach it (`/var/lib/aex/<home-id>`, linked
//! from `$AEX_HOME/pg`), since a root home directory is usually closed to other users.

use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

const INSTALL_HINT: &str = "no Postgres server binaries (initdb, pg_ctl) found on PATH or in the usual \
places. Install PostgreSQL (Debian/Ubuntu: `apt-get install postgresql`; macOS: `brew install postgresql`) \
or point AEX at an existing server with --database-url / AEX_DATABASE_URL";

/// The embedded cluster of one `$AEX_HOME`.
pub struct EmbeddedPg {
    pub link: PathBuf,
    pub root: PathBuf,
    bin: PathBuf,
    owner: Option<nix::unistd::User>,
}

/// Where `initdb` and `pg_ctl` live: PATH first, then the usual install directories (newest
/// version first).
pub fn find_bin_dir() -> Option<PathBuf> {
    let has_both = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(d) = std::env::split_paths(&path).find(|d| has_both(d)) {
            return Some(d);
        }
    }
    let mut versioned: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|d| has_both(d))
        .collect();
    versioned.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    if let Some(d) = versioned.pop() {
        return Some(d);
    }
    [
        "/usr/local/pgsql/bin",
        "/opt/homebrew/bin",
        "/usr/local/bin",
        "/usr/pgsql/bin",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|d| has_both(d))
}

impl EmbeddedPg {
    pub fn for_home(home: &Path) -> anyhow::Result<Self> {
        let bin = find_bin_dir().context(INSTALL_HINT)?;
        let link = home.join("pg");
        let owner = if nix::unistd::geteuid().is_root() {
            Some(nix::unistd::User::from_name("postgres")?.context(
                "running as root: a `postgres` user is needed to own the embedded cluster (Postgres refuses to run as root)",
            )?)
        } else {
            None
        };
        let root = if owner.is_some() {
            let id = hex::encode(&Sha256::digest(home.to_string_lossy().as_bytes())[..6]);
            PathBuf::from("/var/lib/aex").join(id)
        } else {
            link.clone()
        };
        Ok(EmbeddedPg {
            link,
            root,
            bin,
            owner,
        })
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    pub fn exists(&self) -> bool {
        self.data().join("PG_VERSION").is_file()
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        if let Some(user) = &self.owner {
            cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        // Work from a directory the cluster owner can read, not the caller's.
        cmd.current_dir(&self.root);
        cmd
    }

    fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let out = self
            .command(program)
            .args(args)
            .output()
            .with_context(|| format!("running {program}"))?;
        if !out.status.success() {
            bail!(
                "{program} failed: {}{}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Ok(())
    }

    /// Creates the cluster on a free loopback port; returns the database URL.
    pub fn create(&self) -> anyhow::Result<String> {
        std::fs::create_dir_all(&self.root)?;
        if let Some(user) = &self.owner {
            nix::unistd::chown(&self.root, Some(user.uid), Some(user.gid))?;
            if !self.link.exists() {
                std::os::unix::fs::symlink(&self.root, &self.link)?;
            }
        }
        let data = self.data();
        let data_s = data.to_string_lossy();
        self.run(
            "initdb",
            &[
                "-D",
                &data_s,
                "-U",
                "aex",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-instructions",
            ],
        )?;
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let conf = format!(
            "\n# written by aex init\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n",
            self.root.to_string_lossy()
        );
        let conf_path = data.join("postgresql.auto.conf");
        let mut existing = std::fs::read_to_string(&conf_path).unwrap_or_default();
        existing.push_str(&conf);
        std::fs::write(&conf_path, existing)?;
        if let Some(user) = &self.owner {
            nix::unistd::chown(&conf_path, Some(user.uid), Some(user.gid))?;
        }
        Ok(format!("postgres://aex@127.0.0.1:{port}/aex"))
    }

    /// Starts the cluster if it is not running.
    pub fn start(&self) -> anyhow::Result<()> {
        let data = self.data();
        let log = self.root.join("postgres.log");
        let status = self
            .command("pg_ctl")
            .args(["-D", &data.to_string_lossy(), "status"])
            .output()?;
        if status.status.success() {
            return Ok(());
        }
        self.run(
            "pg_ctl",
            &[
                "-D",
                &data.to_string_lossy(),
                "-l",
                &log.to_string_lossy(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
    }

    pub fn stop(&self) -> anyhow::Result<()> {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().to_string_lossy(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        )
    }
}

/// Creates the `aex` database in a freshly started embedded cluster.
pub async fn create_database(url: &str) -> anyhow::Result<()> {
    let admin_url = url
        .rsplit_once('/')
        .map(|(base, _)| format!("{base}/postgres"))
        .context("bad URL")?;
    let pool = crate::store::db::connect(&admin_url, &crate::config::DbSettings::default()).await?;
    crate::store::setup::create_aex_database(&pool).await?;
    pool.close().await;
    Ok(())
}
