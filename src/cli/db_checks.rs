//! Read-only checks that talk to the database directly, so they work while no server runs:
//! `aex migrate`, `aex ledger verify`, `aex replay`, `aex audit`.

use anyhow::{bail, Context};
use serde_json::json;

use super::{emit, Cli};
use crate::admin::{audit, replay};
use crate::domain::DEFAULT_TENANT;
use crate::ledger::verify;
use crate::store::db;

/// A pool on the configured database (starting the embedded cluster when there is one).
pub(super) async fn pool(cli: &Cli) -> anyhow::Result<sqlx::PgPool> {
    let settings = super::settings(cli)?;
    start_embedded()?;
    let url = settings
        .database_url
        .context("no database configured (database_url / AEX_DATABASE_URL)")?;
    db::connect(url.expose(), &settings.db)
        .await
        .context("cannot connect to the database")
}

/// Migrates as the owner role (`migration_database_url`, else `database_url`) and grants the
/// runtime role (`database_url`'s user, when another) what the server needs.
pub async fn migrate(cli: &Cli) -> anyhow::Result<()> {
    let settings = super::settings(cli)?;
    start_embedded()?;
    let owner = settings
        .migration_url()
        .context("no database configured (migration_database_url / database_url)")?;
    let runtime = settings.database_url.as_ref().map(|u| u.expose());
    let granted = db::migrate_as_owner(owner.expose(), runtime).await?;
    let version = db::MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    emit(
        cli.json,
        &json!({"migrated": true, "schema_version": version, "runtime_role": granted}),
        || match &granted {
            Some(role) => format!(
                "database schema is current (version {version}); runtime role {role} granted"
            ),
            None => format!("database schema is current (version {version})"),
        },
    );
    Ok(())
}

/// Starts the embedded cluster when there is one.
fn start_embedded() -> anyhow::Result<()> {
    if let Ok(pg) = super::embedded::EmbeddedPg::for_home(&crate::config::aex_home()) {
        if pg.exists() {
            pg.start()?;
        }
    }
    Ok(())
}

pub async fn ledger_verify(cli: &Cli) -> anyhow::Result<()> {
    let settings = super::settings(cli)?;
    let pool = pool(cli).await?;
    let report = verify::verify_all(&pool, &settings.auth.keys).await?;
    print_verify(cli.json, &serde_json::to_value(&report)?)
}

/// Prints a verification report (from the database or the admin API); fails when it is bad.
pub fn print_verify(json: bool, report: &serde_json::Value) -> anyhow::Result<()> {
    let field = |k: &str| super::text(report, k);
    emit(json, report, || match report.get("first_bad_event") {
        Some(bad) if !bad.is_null() => format!(
            "ledger BROKEN at event {} (chain {}, seq {}): {}",
            super::text(bad, "id"),
            super::text(bad, "chain_id"),
            super::text(bad, "seq"),
            super::text(bad, "problem")
        ),
        _ => {
            let mut line = format!(
                "ledger OK: {} events in {} chains verified in {} ms",
                field("events"),
                field("chains"),
                field("elapsed_ms")
            );
            if let Some(warning) = report.get("warning").and_then(serde_json::Value::as_str) {
                line.push_str("\nwarning: ");
                line.push_str(warning);
            }
            line
        }
    });
    if report.get("ok").and_then(serde_json::Value::as_bool) != Some(true) {
        bail!("ledger verification failed");
    }
    Ok(())
}

pub async fn ledger_checkpoint(cli: &Cli) -> anyhow::Result<()> {
    let settings = super::settings(cli)?;
    let pool = pool(cli).await?;
    let kid = &settings.auth.active_kid;
    let key = settings
        .auth
        .keys
        .get(kid)
        .context("no signing key configured in [auth.keys]")?;
    let id = crate::ledger::checkpoint::write(&pool, kid, key, None).await?;
    let head = crate::store::checkpoints::latest(&pool).await?;
    print_checkpoint(cli.json, id, &serde_json::to_value(&head)?);
    Ok(())
}

/// Prints the outcome of `aex ledger checkpoint`: with `--json`, the latest signed head in full
/// (`head`, `null` when there is none), ready to archive outside the database.
pub fn print_checkpoint(json: bool, written: Option<i64>, head: &serde_json::Value) {
    emit(
        json,
        &json!({"checkpoint_id": written, "head": head}),
        || {
            match written {
            Some(id) => format!("checkpoint {id} written"),
            None => "no checkpoint written: nothing changed since the last one (or another is being written)".to_owned(),
        }
        },
    );
}

/// `aex ledger verify --head FILE`: the archived head still in the chains, and every chain
/// verifying.
pub async fn ledger_verify_head(cli: &Cli, file: &std::path::Path) -> anyhow::Result<()> {
    let settings = super::settings(cli)?;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
    // The whole output of `aex ledger checkpoint --json`, or just its `head`.
    let head = value.get("head").cloned().unwrap_or(value);
    let archived: crate::ledger::checkpoint::CheckpointRow = serde_json::from_value(head)
        .with_context(|| format!("{} holds no signed head", file.display()))?;
    let pool = pool(cli).await?;
    let report = crate::ledger::anchor::verify_head(&pool, &settings.auth.keys, &archived).await?;
    emit(cli.json, &serde_json::to_value(&report)?, || {
        match (&report.problem, &report.ledger.first_bad_event) {
            (Some(problem), _) => format!("ledger BROKEN against archived head {}: {problem}", report.checkpoint_id),
            (None, Some(bad)) => format!("ledger BROKEN at event {} (chain {}, seq {}): {}", bad.id, bad.chain_id, bad.seq, bad.problem),
            (None, None) => format!(
                "ledger OK: the {} chain heads of archived checkpoint {} are still in the chains; {} events verified",
                report.chains, report.checkpoint_id, report.ledger.events
            ),
        }
    });
    if !report.ok {
        bail!("ledger verification against the archived head failed");
    }
    Ok(())
}

pub async fn ledger_export(cli: &Cli, output: Option<&std::path::Path>) -> anyhow::Result<()> {
    let pool = pool(cli).await?;
    let count = match output {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            let mut out = std::io::BufWriter::new(file);
            crate::ledger::export::export(&pool, &mut out).await?
        }
        None => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            return crate::ledger::export::export(&pool, &mut out)
                .await
                .map(|_| ());
        }
    };
    emit(cli.json, &json!({"events": count}), || {
        format!("{count} events exported")
    });
    Ok(())
}

pub async fn replay(cli: &Cli, execution: Option<&str>) -> anyhow::Result<()> {
    let pool = pool(cli).await?;
    if let Some(id) = execution {
        let events = replay::timeline(&pool, DEFAULT_TENANT, id).await?;
        emit(
            cli.json,
            &json!({"execution_id": id, "events": events}),
            || {
                events
                    .iter()
                    .map(|e| format!("{} {:<24} {}", e.ts.to_rfc3339(), e.event_type, e.payload))
                    .collect::<Vec<_>>()
                    .join("\n")
            },
        );
        if events.is_empty() {
            bail!("no events for execution {id} in the default tenant");
        }
        return Ok(());
    }
    let report = replay::replay(&pool, None, &super::settings(cli)?.auth.keys).await?;
    emit(cli.json, &serde_json::to_value(&report)?, || {
        let mut lines = vec![format!(
            "ledger: {} ({} events)",
            if report.ledger.ok { "OK" } else { "BROKEN" },
            report.ledger.events
        )];
        let books = report
            .agents
            .iter()
            .map(|a| (&a.name, &a.live, &a.ledger, a.matches))
            .chain(
                report
                    .tenants
                    .iter()
                    .map(|t| (&t.name, &t.live, &t.ledger, t.matches)),
            );
        for (i, (name, live, ledger, matches)) in books.enumerate() {
            if i == report.agents.len() {
                lines.push("tenants:".into());
            }
            lines.push(format!(
                "{:<24} live spent {:>12} reserved {:>10} | ledger spent {:>12} reserved {:>10} {}",
                name,
                live.spent_micro_usd,
                live.reserved_micro_usd,
                ledger.spent_micro_usd,
                ledger.reserved_micro_usd,
                if matches { "ok" } else { "MISMATCH" }
            ));
        }
        lines.join("\n")
    });
    if !report.ok {
        bail!("replay found mismatches");
    }
    Ok(())
}

pub async fn audit(cli: &Cli) -> anyhow::Result<()> {
    let settings = super::settings(cli)?;
    let pool = pool(cli).await?;
    let stale = i64::try_from(settings.cluster.stale_after_seconds).unwrap_or(30);
    let report = audit::audit(&pool, stale, &settings.auth.keys).await?;
    emit(cli.json, &serde_json::to_value(&report)?, || {
        report
            .checks
            .iter()
            .map(|c| {
                let mut line = format!(
                    "[{}] {}. {}",
                    if c.ok { "ok" } else { "FAIL" },
                    c.invariant,
                    c.name
                );
                for v in &c.violations {
                    line.push_str(&format!("\n      {v}"));
                }
                line
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    if !report.ok {
        bail!("audit failed");
    }
    Ok(())
}
