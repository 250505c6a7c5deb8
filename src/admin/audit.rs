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
    /// Executions charged more than their hold because the provider reported usage beyond the
    /// caps AEX sent, or whose cost was cut to the ceiling: allowed, and named here (not a
    /// failure).
    pub provider_overruns: Vec<String>,
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
            "spent exceeds budget only by provider overruns (or a budget an operator cut)",
            sqlx::query_scalar(AGENT_OVER_BUDGET).bind(EXAMPLES),
        )
        .await?,
        check_sql(
            pool,
            6,
            "a tenant's spent exceeds its budget only by provider overruns, commits made before \
             the budget held them, or a budget an operator cut",
            sqlx::query_scalar(TENANT_OVER_BUDGET).bind(EXAMPLES),
        )
        .await?,
        check_sql(
            pool,
            6,
            "an execution costs more than its hold only by provider usage beyond the caps",
            sqlx::query_scalar(EXECUTION_OVER_HOLD).bind(EXAMPLES),
        )
        .await?,
        check_sql(
            pool,
            8,
            "tenant spent and reserved equal their agents' committed costs and tenant holds",
            sqlx::query_scalar(TENANT_BOOKS).bind(EXAMPLES),
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
    let folded = fold_mismatches(pool).await?;
    checks.push(fold_check(
        3,
        "folding the ledger reproduces every agent's spent and reserved",
        &folded.agents,
    ));
    checks.push(fold_check(
        8,
        "folding the ledger reproduces every tenant's spent and reserved",
        &folded.tenants,
    ));
    let provider_overruns = sqlx::query_scalar(PROVIDER_OVERRUNS)
        .bind(EXAMPLES)
        .fetch_all(pool)
        .await?;
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
        provider_overruns,
    })
}

/// Invariant 6, per agent: `spent - budget` may exceed zero only by what provider overruns in
/// the current period (cost beyond the hold), budget cuts by an operator and period changes that
/// recounted `spent` upwards explain. Admission keeps `spent + reserved <= budget` whenever it
/// holds, so nothing else can push an agent over.
const AGENT_OVER_BUDGET: &str = "\
SELECT a.name || ': spent ' || a.spent_micro_usd || ' > budget ' || a.budget_micro_usd \
       || ', beyond the ' || x.allowed || ' provider overruns and budget cuts explain' \
FROM agents a CROSS JOIN LATERAL (SELECT \
    COALESCE((SELECT sum(r.actual_micro_usd - r.estimate_micro_usd) FROM reservations r \
        WHERE r.agent_id = a.id AND r.state = 'COMMITTED' AND r.actual_micro_usd > r.estimate_micro_usd \
          AND (a.budget_period = 'lifetime' OR r.settled_at >= a.period_started_at)), 0) \
  + COALESCE((SELECT sum(GREATEST((l.payload::jsonb ->> 'before')::numeric \
        - (l.payload::jsonb ->> 'after')::numeric, 0)) FROM event_log l \
        WHERE l.agent_id = a.id AND l.event_type = 'budget.set'), 0) \
  + COALESCE((SELECT sum(GREATEST((l.payload::jsonb ->> 'spent_after_micro_usd')::numeric \
        - (l.payload::jsonb ->> 'spent_before_micro_usd')::numeric, 0)) FROM event_log l \
        WHERE l.agent_id = a.id AND l.event_type = 'budget.period_reset'), 0) AS allowed) x \
WHERE a.spent_micro_usd > a.budget_micro_usd AND a.spent_micro_usd - a.budget_micro_usd > x.allowed \
LIMIT $1";

/// Invariant 6, per tenant with a budget: admission keeps `spent + reserved <= budget` for every
/// hold made against it, so `spent - budget` may exceed zero only by the excess of those holds'
/// provider overruns, the whole cost of commits whose hold did not count against the tenant
/// (made before it had a budget), and budget cuts by an operator (`tenant.updated`).
const TENANT_OVER_BUDGET: &str = "\
SELECT t.name || ': spent ' || s.spent || ' > budget ' || t.budget_micro_usd \
       || ', beyond the ' || x.allowed || ' overruns, unheld commits and budget cuts explain' \
FROM tenants t \
CROSS JOIN LATERAL (SELECT COALESCE(sum(a.lifetime_spent_micro_usd), 0) AS spent FROM agents a \
    WHERE a.tenant_id = t.id) s \
CROSS JOIN LATERAL (SELECT \
    COALESCE((SELECT sum(CASE WHEN r.holds_tenant \
            THEN GREATEST(r.actual_micro_usd - r.estimate_micro_usd, 0) \
            ELSE r.actual_micro_usd END) FROM reservations r \
        WHERE r.tenant_id = t.id AND r.state = 'COMMITTED'), 0) \
  + COALESCE((SELECT sum(GREATEST((l.payload::jsonb #>> '{before,budget_micro_usd}')::numeric \
        - (l.payload::jsonb #>> '{after,budget_micro_usd}')::numeric, 0)) FROM event_log l \
        WHERE l.tenant_id = t.id AND l.event_type = 'tenant.updated'), 0) AS allowed) x \
WHERE t.budget_micro_usd IS NOT NULL AND s.spent > t.budget_micro_usd \
  AND s.spent - t.budget_micro_usd > x.allowed \
LIMIT $1";

/// Invariant 6, per execution: a cost above the hold needs its commit event to show usage the
/// provider reported beyond what the hold covered (more prompt tokens than its input bound, or
/// more completion tokens than its output bound — the cap × choices — read from the
/// `reservation.reserved` event, or more hosted-tool calls than the `max_tool_calls` sent),
/// whatever the event calls it. Anything else (AEX's own count, an ambiguous outcome, a row edited after
/// the fact) fails.
const EXECUTION_OVER_HOLD: &str = "\
SELECT e.execution_key || ' (attempt ' || r.attempt || '): cost ' || r.actual_micro_usd \
       || ' > hold ' || r.estimate_micro_usd || ' without provider usage beyond the caps' \
FROM reservations r JOIN executions e ON e.id = r.execution_id \
WHERE r.state = 'COMMITTED' AND r.actual_micro_usd > r.estimate_micro_usd AND NOT EXISTS ( \
    SELECT 1 FROM event_log c JOIN event_log h ON h.tenant_id = c.tenant_id \
        AND h.execution_id = c.execution_id AND h.agent_id = c.agent_id \
        AND h.event_type = 'reservation.reserved' \
        AND (h.payload::jsonb ->> 'attempt')::int = r.attempt \
    WHERE c.tenant_id = r.tenant_id AND c.execution_id = e.execution_key AND c.agent_id = r.agent_id \
      AND c.event_type = 'usage.commit' AND (c.payload::jsonb ->> 'attempt')::int = r.attempt \
      AND (c.payload::jsonb ->> 'actual_micro_usd')::numeric = r.actual_micro_usd \
      AND c.payload::jsonb ->> 'usage' = 'reported' \
      AND ((c.payload::jsonb ->> 'prompt_tokens')::numeric \
             > COALESCE((h.payload::jsonb ->> 'prompt_tokens_estimate')::numeric, 0) \
        OR (c.payload::jsonb ->> 'completion_tokens')::numeric \
             > COALESCE((h.payload::jsonb ->> 'output_tokens_bound')::numeric, \
                 COALESCE((h.payload::jsonb ->> 'output_cap')::numeric, 0) \
                 * COALESCE((h.payload::jsonb ->> 'choices')::numeric, 1)) \
        OR COALESCE((c.payload::jsonb ->> 'hosted_tool_calls')::numeric, 0) \
             > COALESCE((c.payload::jsonb ->> 'hosted_tool_calls_bound')::numeric, 0))) \
LIMIT $1";

/// Invariant 8 on the live rows: a tenant's `spent` (the sum of its agents' lifetime counters)
/// is every committed cost of its agents (a tenant has no budget period of its own), its
/// `reserved` the open holds made against its budget.
const TENANT_BOOKS: &str = "\
SELECT t.name || ': spent ' || COALESCE(a.spent, 0) || ' != its agents'' committed ' \
       || COALESCE(r.committed, 0) || ', or reserved ' || t.reserved_micro_usd \
       || ' != held against it ' || COALESCE(r.held, 0) \
FROM tenants t \
LEFT JOIN (SELECT tenant_id, sum(lifetime_spent_micro_usd) AS spent FROM agents GROUP BY tenant_id) a \
    ON a.tenant_id = t.id \
LEFT JOIN (SELECT tenant_id, \
        sum(actual_micro_usd) FILTER (WHERE state = 'COMMITTED') AS committed, \
        sum(estimate_micro_usd) FILTER (WHERE state = 'RESERVED' AND holds_tenant) AS held \
    FROM reservations GROUP BY tenant_id) r ON r.tenant_id = t.id \
WHERE COALESCE(a.spent, 0) <> COALESCE(r.committed, 0) \
   OR t.reserved_micro_usd <> COALESCE(r.held, 0) \
LIMIT $1";

/// The allowed excesses, named: provider overruns and costs cut to the ceiling.
const PROVIDER_OVERRUNS: &str = "\
SELECT l.execution_id || ': ' || (l.payload::jsonb ->> 'actual_micro_usd') || ' charged against a hold of ' \
       || (l.payload::jsonb ->> 'estimate_micro_usd') \
       || CASE WHEN (l.payload::jsonb ->> 'cost_saturated')::boolean \
               THEN ' (cost cut to the ceiling)' ELSE '' END \
       || ', ' || (l.payload::jsonb ->> 'prompt_tokens') || ' prompt and ' \
       || (l.payload::jsonb ->> 'completion_tokens') || ' completion tokens reported' \
FROM event_log l WHERE l.event_type = 'usage.commit' \
  AND (l.payload::jsonb ->> 'overrun' = 'provider' OR (l.payload::jsonb ->> 'cost_saturated')::boolean) \
ORDER BY l.id DESC LIMIT $1";

/// Live books compared with the ledger fold, per agent and per tenant.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FoldComparison {
    pub agents: Vec<BooksComparison>,
    pub tenants: Vec<TenantBooksComparison>,
}

/// Live counters compared with the ledger fold, per agent and per tenant.
pub async fn fold_mismatches(pool: &PgPool) -> Result<FoldComparison, sqlx::Error> {
    let folded = fold::fold_all(pool).await?;
    let agents: Vec<(Uuid, String, i64, i64)> = sqlx::query_as(
        "SELECT id, name, spent_micro_usd, reserved_micro_usd FROM agents ORDER BY tenant_id, name",
    )
    .fetch_all(pool)
    .await?;
    let tenants: Vec<(Uuid, String, i64, i64)> = sqlx::query_as(
        "SELECT t.id, t.name, LEAST(COALESCE((SELECT sum(a.lifetime_spent_micro_usd) \
           FROM agents a WHERE a.tenant_id = t.id), 0), 9223372036854775807)::bigint, \
           t.reserved_micro_usd FROM tenants t ORDER BY t.name",
    )
    .fetch_all(pool)
    .await?;
    Ok(FoldComparison {
        agents: compare(&folded.agents, agents)
            .map(|(agent_id, name, live, ledger)| BooksComparison {
                agent_id,
                name,
                matches: live == ledger,
                live,
                ledger,
            })
            .collect(),
        tenants: compare(&folded.tenants, tenants)
            .map(|(tenant_id, name, live, ledger)| TenantBooksComparison {
                tenant_id,
                name,
                matches: live == ledger,
                live,
                ledger,
            })
            .collect(),
    })
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

/// One tenant's live and folded books.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TenantBooksComparison {
    pub tenant_id: Uuid,
    pub name: String,
    pub live: FoldedBooks,
    pub ledger: FoldedBooks,
    pub matches: bool,
}

/// Each live row with its folded books: `(id, name, live, ledger)`.
fn compare(
    folded: &BTreeMap<Uuid, FoldedBooks>,
    live: Vec<(Uuid, String, i64, i64)>,
) -> impl Iterator<Item = (Uuid, String, FoldedBooks, FoldedBooks)> + '_ {
    live.into_iter().map(|(id, name, spent, reserved)| {
        let live = FoldedBooks {
            spent_micro_usd: spent,
            reserved_micro_usd: reserved,
        };
        let ledger = folded.get(&id).copied().unwrap_or_default();
        (id, name, live, ledger)
    })
}

/// What a comparison row shows, for the audit's violation lines.
trait Compared {
    fn line(&self) -> Option<String>;
}

fn mismatch_line(name: &str, live: &FoldedBooks, ledger: &FoldedBooks) -> String {
    format!(
        "{name}: live spent {} reserved {}, ledger spent {} reserved {}",
        live.spent_micro_usd,
        live.reserved_micro_usd,
        ledger.spent_micro_usd,
        ledger.reserved_micro_usd
    )
}

impl Compared for BooksComparison {
    fn line(&self) -> Option<String> {
        (!self.matches).then(|| mismatch_line(&self.name, &self.live, &self.ledger))
    }
}

impl Compared for TenantBooksComparison {
    fn line(&self) -> Option<String> {
        (!self.matches).then(|| mismatch_line(&self.name, &self.live, &self.ledger))
    }
}

fn fold_check(invariant: u8, name: &'static str, rows: &[impl Compared]) -> Check {
    let violations: Vec<String> = rows
        .iter()
        .filter_map(Compared::line)
        .take(EXAMPLES as usize)
        .collect();
    Check {
        invariant,
        name,
        ok: violations.is_empty(),
        violations,
    }
}
