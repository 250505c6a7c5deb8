//! `aex doctor`: what is wrong with this installation, one line per finding with how to fix it.
//!
//! It checks what a newcomer's first failing call depends on, in the order it is needed: the
//! config loads, the database answers with its migrations current (and whether the server's role
//! could disable the ledger's triggers, as `/ready` reports), the ledger verifies since the last
//! checkpoint, the routing table validates and every provider in it has its key variable set,
//! answers at its base URL and lists the models routed to it ([`providers`]). `--compat --token T`
//! instead drives a running server the way a client would ([`compat`]).
//!
//! Everything runs from the CLI's process: the provider keys checked are those of the
//! environment `aex doctor` runs in, so run it where (and as) the server runs.

pub mod compat;
pub mod providers;

use std::time::Duration;

use anyhow::bail;
use serde::Serialize;

use crate::config::{RoutingDocument, RoutingTable, Settings};
use crate::ledger::verify;
use crate::store::db;

/// How long the database may take to answer before it counts as unreachable.
const DB_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Works, but something is weaker than it should be; does not fail the run.
    Warn,
    Fail,
}

/// One finding: what was checked, what was found and, when it is not ok, how to fix it.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub message: String,
    pub fix: Option<String>,
}

impl Check {
    pub fn ok(name: impl Into<String>, message: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: Status::Ok,
            message: message.into(),
            fix: None,
        }
    }

    pub fn fail(
        name: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            name: name.into(),
            status: Status::Fail,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn warn(
        name: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            status: Status::Warn,
            ..Check::fail(name, message, fix)
        }
    }

    /// The check's one line for people.
    pub fn line(&self) -> String {
        let tag = match self.status {
            Status::Ok => "[ok]  ",
            Status::Warn => "[warn]",
            Status::Fail => "[FAIL]",
        };
        match &self.fix {
            Some(fix) => format!("{tag} {}: {} — fix: {fix}", self.name, self.message),
            None => format!("{tag} {}: {}", self.name, self.message),
        }
    }
}

/// Every finding of one run; `ok` when none failed.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ok: bool,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn new(checks: Vec<Check>) -> Report {
        Report {
            ok: checks.iter().all(|c| c.status != Status::Fail),
            checks,
        }
    }

    pub fn find(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }
}

/// Where `aex doctor` reads the provider key variables from: the process environment, or a map
/// in tests (which must not change the environment of the other tests running beside them).
pub type EnvLookup<'a> = &'a (dyn Fn(&str) -> Option<String> + Sync);

/// The process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The local checks, against loaded `settings` (the config check is the caller's: see [`run`]).
pub async fn diagnose(settings: &Settings, env: EnvLookup<'_>) -> Vec<Check> {
    let mut checks = Vec::new();
    let pool = database(settings, &mut checks).await;
    if let Some(pool) = &pool {
        if migrations(pool, &mut checks).await {
            ledger(pool, settings, &mut checks).await;
        } else {
            checks.push(Check::warn(
                "ledger",
                "not checked: the database has no AEX schema yet",
                "run `aex migrate`",
            ));
        }
    }
    if let Some(doc) = routing(settings, pool.as_ref(), &mut checks).await {
        checks.extend(providers::check_all(&doc, env).await);
    }
    if let Some(pool) = pool {
        pool.close().await;
    }
    checks
}

/// Connects (briefly) and reports the role's privileges as `/ready` does.
async fn database(settings: &Settings, checks: &mut Vec<Check>) -> Option<sqlx::PgPool> {
    let Some(url) = &settings.database_url else {
        checks.push(Check::fail(
            "database",
            "no database configured",
            "set database_url in aex.toml or AEX_DATABASE_URL (or run `aex init`)",
        ));
        return None;
    };
    let mut db_settings = settings.db.clone();
    db_settings.acquire_timeout_seconds = DB_TIMEOUT.as_secs();
    let connected = match db::lazy_pool(url.expose(), &db_settings) {
        Ok(pool) => tokio::time::timeout(DB_TIMEOUT, db::ping(&pool))
            .await
            .map_err(|_| format!("no answer within {} s", DB_TIMEOUT.as_secs()))
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map(|_| pool),
        Err(e) => Err(format!("invalid database_url: {e}")),
    };
    let where_ = db::url_user(url.expose())
        .map(|user| format!(" as {user}"))
        .unwrap_or_default();
    let pool = match connected {
        Ok(pool) => pool,
        Err(e) => {
            checks.push(Check::fail(
                "database",
                format!("cannot connect{where_}: {e}"),
                "start Postgres (or `aex daemon start` for the embedded one) and check database_url / AEX_DATABASE_URL",
            ));
            return None;
        }
    };
    checks.push(Check::ok("database", format!("connected{where_}")));
    checks.push(match db::check_role(&pool).await {
        Ok(role) if role.least_privilege() => {
            Check::ok("least_privilege", "the server's role cannot disable the ledger's triggers")
        }
        Ok(role) => Check::warn(
            "least_privilege",
            if role.superuser {
                "the server connects as a superuser: it could disable the ledger's append-only triggers"
            } else {
                "the server connects as the owner of event_log: it could disable the ledger's append-only triggers"
            },
            "connect as a runtime role (database_url) and migrate as the owner (migration_database_url), see README \"Configuration\"",
        ),
        // No event_log yet: the migrations check says why.
        Err(_) => Check::warn(
            "least_privilege",
            "cannot tell: the ledger table is missing",
            "run `aex migrate`",
        ),
    });
    Some(pool)
}

/// Names every embedded migration not applied, and every applied one this binary does not know.
/// Returns whether any migration is applied (whether there is a ledger to check).
async fn migrations(pool: &sqlx::PgPool, checks: &mut Vec<Check>) -> bool {
    let applied = match crate::store::setup::applied_migrations(pool).await {
        Ok(v) => v,
        Err(e) => {
            checks.push(Check::fail(
                "migrations",
                format!("cannot read _sqlx_migrations: {e}"),
                "check the database role's rights",
            ));
            return false;
        }
    };
    let pending: Vec<String> = db::MIGRATOR
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .map(|m| format!("{}_{}", m.version, m.description.replace(' ', "_")))
        .collect();
    let unknown: Vec<String> = applied
        .iter()
        .filter(|v| !db::MIGRATOR.iter().any(|m| m.version == **v))
        .map(i64::to_string)
        .collect();
    checks.push(if !pending.is_empty() {
        Check::fail(
            "migrations",
            format!("{} pending: {}", pending.len(), pending.join(", ")),
            "run `aex migrate` (as the owner role: migration_database_url)",
        )
    } else if !unknown.is_empty() {
        Check::fail(
            "migrations",
            format!(
                "applied migrations this binary does not know: {}",
                unknown.join(", ")
            ),
            "run the aex version that migrated this database (or a newer one)",
        )
    } else {
        Check::ok(
            "migrations",
            format!("all {} applied", db::MIGRATOR.iter().count()),
        )
    });
    !applied.is_empty()
}

/// What the startup gate checks: the chains since the latest signed checkpoint.
async fn ledger(pool: &sqlx::PgPool, settings: &Settings, checks: &mut Vec<Check>) {
    let report = match verify::verify_since_checkpoint(pool, &settings.auth.keys).await {
        Ok(r) => r,
        Err(e) => {
            checks.push(Check::fail(
                "ledger",
                format!("cannot read the ledger: {e}"),
                "run `aex migrate`, then `aex ledger verify --local`",
            ));
            return;
        }
    };
    let fix = "the ledger was changed outside AEX: `aex ledger verify --local` names the first bad event; restore the database from a backup and investigate who could write to it";
    checks.push(if let Some(bad) = &report.first_bad_event {
        Check::fail(
            "ledger",
            format!(
                "chain BROKEN at event {} (chain {}, seq {}): {}",
                bad.id, bad.chain_id, bad.seq, bad.problem
            ),
            fix,
        )
    } else if let Some(problem) = report.checkpoint.as_ref().and_then(|c| c.problem.as_ref()) {
        Check::fail(
            "ledger",
            format!("the latest checkpoint does not verify: {problem}"),
            "check [auth.keys] holds the key that signed it; else the checkpoint was forged",
        )
    } else if let Some(warning) = &report.warning {
        Check::warn(
            "ledger",
            format!(
                "{} events in {} chains verify; {warning}",
                report.events, report.chains
            ),
            "run `aex ledger checkpoint`",
        )
    } else {
        Check::ok(
            "ledger",
            format!(
                "{} events in {} chains verify since the latest checkpoint",
                report.events, report.chains
            ),
        )
    });
}

/// The routing table the server would use: the models file when it exists (what a server
/// imports at start), else the active version stored in the database.
async fn routing(
    settings: &Settings,
    pool: Option<&sqlx::PgPool>,
    checks: &mut Vec<Check>,
) -> Option<RoutingDocument> {
    let path = settings.models_file_path();
    let active = active_version(pool).await;
    let (text, source) = match std::fs::read_to_string(&path) {
        Ok(text) => {
            // The file is imported when a server starts or reloads; until then the servers run
            // the version stored in the database.
            if let Some((version, content)) = &active {
                if *content != text {
                    checks.push(Check::warn(
                        "routing_table_active",
                        format!(
                            "the servers run routing table version {version}, not what {} says now",
                            path.display()
                        ),
                        "run `aex models reload` to make the file active on every replica",
                    ));
                }
            }
            (text, path.display().to_string())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match active {
            Some((_, text)) => (text, "the active version in the database".to_owned()),
            None => {
                checks.push(Check::fail(
                    "routing_table",
                    format!("{} does not exist and no version is stored", path.display()),
                    "run `aex init`, or set models_file to your routing table",
                ));
                return None;
            }
        },
        Err(e) => {
            checks.push(Check::fail(
                "routing_table",
                format!("cannot read {}: {e}", path.display()),
                "make the file readable by the server's user",
            ));
            return None;
        }
    };
    let parsed = toml::from_str::<RoutingDocument>(&text)
        .map_err(|e| e.message().to_owned())
        .and_then(|doc| {
            RoutingTable::from_document(&doc)
                .map(|_| doc)
                .map_err(|e| e.to_string())
        });
    match parsed {
        Ok(doc) => {
            checks.push(Check::ok(
                "routing_table",
                format!(
                    "{} providers, {} models ({source})",
                    doc.providers.len(),
                    doc.models.len()
                ),
            ));
            Some(doc)
        }
        Err(e) => {
            checks.push(Check::fail(
                "routing_table",
                format!("{source}: {e}"),
                "correct the key named in the models file, then `aex models reload`",
            ));
            None
        }
    }
}

/// The active routing-table version stored in the database, and its text.
async fn active_version(pool: Option<&sqlx::PgPool>) -> Option<(i64, String)> {
    let mut conn = pool?.acquire().await.ok()?;
    crate::store::config_versions::get_active(&mut conn)
        .await
        .ok()
        .flatten()
        .map(|row| (row.version, row.content))
}

/// `aex doctor`: the config check, then [`diagnose`]; `--compat` checks a running server instead.
pub async fn run(cli: &super::Cli, args: &DoctorArgs) -> anyhow::Result<()> {
    let path = Settings::config_path(cli.config.as_deref());
    let settings = Settings::load(&path);
    let checks = if args.compat {
        let token = match (&args.token, std::env::var("AEX_AGENT_TOKEN")) {
            (Some(t), _) => t.clone(),
            (None, Ok(t)) => t,
            (None, Err(_)) => {
                bail!("--compat needs an agent token: --token T (or AEX_AGENT_TOKEN)")
            }
        };
        let base = match (&args.url, &settings) {
            (Some(url), _) => url.clone(),
            (None, Ok(s)) => super::client::server_url(s),
            (None, Err(e)) => bail!("{e}: pass the server's URL with --url"),
        };
        compat::check(&base, &token, args.model.as_deref()).await
    } else {
        match &settings {
            Ok(s) => {
                let loaded = if path.exists() {
                    format!("{} loads", path.display())
                } else {
                    format!("no {} (defaults and AEX_* variables only)", path.display())
                };
                let mut checks = vec![Check::ok("config", loaded)];
                checks.extend(diagnose(s, &process_env).await);
                checks
            }
            Err(e) => vec![Check::fail(
                "config",
                e.to_string(),
                format!(
                    "correct the key named above in {} or in its AEX_ environment variable",
                    path.display()
                ),
            )],
        }
    };
    let report = Report::new(checks);
    super::emit(cli.json, &serde_json::to_value(&report)?, || {
        report
            .checks
            .iter()
            .map(Check::line)
            .collect::<Vec<_>>()
            .join("\n")
    });
    if !report.ok {
        let failed = report
            .checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .count();
        bail!("doctor found {failed} problem(s)");
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Check a running server the way a client does (health, readiness, models, one tiny chat
    /// completion, AEX's headers) instead of this installation.
    #[arg(long)]
    pub compat: bool,
    /// The agent token for `--compat` (default: $AEX_AGENT_TOKEN). It is charged for one tiny call.
    #[arg(long)]
    pub token: Option<String>,
    /// The server for `--compat` (default: $AEX_URL, else `[cli] url`, else `listen`).
    #[arg(long)]
    pub url: Option<String>,
    /// The model alias `--compat` calls (default: the first chat model the token may use).
    #[arg(long)]
    pub model: Option<String>,
}
