//! The invariants of SPEC §15, checked against the live database (`aex audit`, `/admin/replay`,
//! tests and the startup gate).

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::ledger::fold::{self, FoldedBooks};
use crate::ledger::verify::{self, VerifyReport};

/// One invariant's verdict, with up to a few offending examples.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Check {
    pub invariant: u8,
    pub name: &'static str,
    pub ok: bool,
    pub violations: Vec<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditReport {
    pub ok: bool,
    pub checks: Vec<Check>,
    pub ledger: VerifyReport,
}

const EXAMPLES: i64 = 20;

/// Runs a query that returns one line per violation; `$1` is the number of examples to return.
async fn check_sql(
    pool: &PgPool,
    invariant: u8,
    name: &'static str,
    query: sqlx::query::QueryScalar<'static, sqlx::Postgres, String, sqlx::postgres::PgArguments>,
) -> Result<Check, sqlx::Error> {
    let violations: Vec<String> = query.fetch_all(pool).await?;
    Ok(Check {
        invariant,
        name,
        ok: violations.is_empty(),
        violations,
    })
}

/// Runs every check. `stale_seconds` is the heartbeat age after which a replica counts as lost.
pub async fn audit(
    pool: &PgPool,
    stale_seconds: i64,
    keys: &std::collections::BTreeMap<String, crate::config::Secret>,
) -> Result<AuditReport, sqlx::Error> {
    let mut checks = vec![
        check_sql(
            pool,
            1,
            "reserved equals the sum of open reservations",
            sqlx::query_scalar(
            "SELECT a.name || ': reserved ' || a.reserved_micro_usd || ' != held ' || COALESCE(r.held, 0) \
             FROM agents a LEFT JOIN (SELECT agent_id, sum(estimate_micro_usd) AS held FROM reservations \
               WHERE state = 'RESERVED' GROUP BY agent_id) r ON r.agent_id = a.id \
             WHERE a.reserved_micro_usd <> COALESCE(r.held, 0) LIMIT $1",
            ).bind(EXAMPLES),
        )
        .await?,
        check_sql(
            pool,
            2,
            "spent equals the sum of committed costs in the current period",
            sqlx::query_scalar(
            "SELECT a.name || ': spent ' || a.spent_micro_usd || ' != committed ' || COALESCE(c.total, 0) \
             FROM agents a LEFT JOIN LATERAL (SELECT sum(actual_micro_usd) AS total FROM reservations r \
               WHERE r.agent_id = a.id AND r.state = 'COMMITTED' \
                 AND (a.budget_period = 'lifetime' OR r.settled_at >= a.period_started_at)) c ON true \
             WHERE a.spent_micro_usd <> COALESCE(c.total, 0) LIMIT $1",
            ).bind(EXAMPLES),
        )
        .await?,
        check_sql(
            pool,
            5,
            "no execution is in flight unless its replica is alive",
            sqlx::query_scalar(
            "SELECT e.execution_key || ' is ' || e.state || ' on a lost replica' FROM executions e \
             WHERE e.state IN ('RESERVING', 'RESERVED', 'DISPATCHED') AND NOT EXISTS ( \
               SELECT 1 FROM replicas r WHERE r.id = e.replica_id AND r.stopped_at IS NULL \
                 AND r.heartbeat_at > now() - make_interval(secs => $2::bigint)) LIMIT $1",
            ).bind(EXAMPLES).bind(stale_seconds),
        )
        .await?,
        check_sql(
            pool,
            6,
            "spent exceeds budget only with a recorded overrun",
            sqlx::query_scalar(
            "SELECT a.name || ': spent ' || a.spent_micro_usd || ' > budget ' || a.budget_micro_usd FROM agents a \
             WHERE a.spent_micro_usd > a.budget_micro_usd AND NOT EXISTS ( \
               SELECT 1 FROM event_log l WHERE l.agent_id = a.id AND l.event_type = 'usage.commit' \
                 AND (l.payload::jsonb ->> 'budget_overrun')::boolean) \
               LIMIT $1",
            ).bind(EXAMPLES),
        )
        .await?,
        check_sql(
            pool,
            7,
            "no money is held for a finished execution",
            sqlx::query_scalar(
            "SELECT e.execution_key || ' is ' || e.state || ' but holds ' || r.estimate_micro_usd FROM reservations r \
             JOIN executions e ON e.id = r.execution_id \
             WHERE r.state = 'RESERVED' AND (e.state IN ('COMMITTED', 'RELEASED', 'DENIED', 'FAILED') OR e.attempt <> r.attempt) \
               LIMIT $1",
            ).bind(EXAMPLES),
        )
        .await?,
    ];
    checks.push(fold_check(pool).await?);
    let ledger = verify::verify_all(pool, keys).await?;
    checks.push(Check {
        invariant: 4,
        name: "every chain verifies",
        ok: ledger.ok,
        violations: ledger
            .first_bad_event
            .iter()
            .map(|b| {
                format!(
                    "event {} ({} seq {}): {}",
                    b.id, b.chain_id, b.seq, b.problem
                )
            })
            .collect(),
    });
    checks.sort_by_key(|c| c.invariant);
    Ok(AuditReport {
        ok: checks.iter().all(|c| c.ok),
        checks,
        ledger,
    })
}

/// Live counters compared with the ledger fold, per agent: the mismatches.
pub async fn fold_mismatches(pool: &PgPool) -> Result<Vec<BooksComparison>, sqlx::Error> {
    let folded = fold::fold_all(pool).await?;
    let live: Vec<(Uuid, String, i64, i64)> = sqlx::query_as(
        "SELECT id, name, spent_micro_usd, reserved_micro_usd FROM agents ORDER BY tenant_id, name",
    )
    .fetch_all(pool)
    .await?;
    Ok(compare(&folded.agents, live))
}

/// One agent's live and folded books.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BooksComparison {
    pub agent_id: Uuid,
    pub name: String,
    pub live: FoldedBooks,
    pub ledger: FoldedBooks,
    pub matches: bool,
}

fn compare(
    folded: &BTreeMap<Uuid, FoldedBooks>,
    live: Vec<(Uuid, String, i64, i64)>,
) -> Vec<BooksComparison> {
    live.into_iter()
        .map(|(id, name, spent, reserved)| {
            let live = FoldedBooks {
                spent_micro_usd: spent,
                reserved_micro_usd: reserved,
            };
            let ledger = folded.get(&id).copied().unwrap_or_default();
            BooksComparison {
                agent_id: id,
                name,
                matches: live == ledger,
                live,
                ledger,
            }
        })
        .collect()
}

async fn fold_check(pool: &PgPool) -> Result<Check, sqlx::Error> {
    let violations: Vec<String> = fold_mismatches(pool)
        .await?
        .into_iter()
        .filter(|c| !c.matches)
        .take(EXAMPLES as usize)
        .map(|c| {
            format!(
                "{}: live spent {} reserved {}, ledger spent {} reserved {}",
                c.name,
                c.live.spent_micro_usd,
                c.live.reserved_micro_usd,
                c.ledger.spent_micro_usd,
                c.ledger.reserved_micro_usd
            )
        })
        .collect();
    Ok(Check {
        invariant: 3,
        name: "folding the ledger reproduces spent and reserved",
        ok: violations.is_empty(),
        violations,
    })
}
