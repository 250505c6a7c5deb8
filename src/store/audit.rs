//! The SQL of the audit (SPEC §15): each invariant that the live rows can check is one query
//! returning one line per violation, and the live books the ledger fold is compared with.
//! Composing the report is `admin::audit`'s.

use sqlx::PgPool;
use uuid::Uuid;

/// One invariant checked by a query: its number in SPEC §15, its name, and the query (`$1` is
/// the number of examples to return; `$2`, when `stale` is set, the heartbeat age in seconds
/// after which a replica counts as lost).
struct Invariant {
    invariant: u8,
    name: &'static str,
    sql: &'static str,
    stale: bool,
}

/// An invariant's violations, up to the number of examples asked for.
#[derive(Debug, Clone)]
pub struct Violations {
    pub invariant: u8,
    pub name: &'static str,
    pub lines: Vec<String>,
}

/// Runs every invariant query, in order.
pub async fn invariant_violations(
    pool: &PgPool,
    examples: i64,
    stale_seconds: i64,
) -> Result<Vec<Violations>, sqlx::Error> {
    let mut out = Vec::with_capacity(INVARIANTS.len());
    for i in INVARIANTS {
        let mut query = sqlx::query_scalar(i.sql).bind(examples);
        if i.stale {
            query = query.bind(stale_seconds);
        }
        out.push(Violations {
            invariant: i.invariant,
            name: i.name,
            lines: query.fetch_all(pool).await?,
        });
    }
    Ok(out)
}

/// The allowed excesses, newest first: provider overruns and costs cut to the ceiling.
pub async fn provider_overruns(pool: &PgPool, examples: i64) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(PROVIDER_OVERRUNS)
        .bind(examples)
        .fetch_all(pool)
        .await
}

/// One agent's or tenant's live counters: `(id, name, spent, reserved)`.
pub type LiveBooks = (Uuid, String, i64, i64);

/// Every agent's live `spent` and `reserved`, by tenant and name.
pub async fn live_agent_books(pool: &PgPool) -> Result<Vec<LiveBooks>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, name, spent_micro_usd, reserved_micro_usd FROM agents ORDER BY tenant_id, name",
    )
    .fetch_all(pool)
    .await
}

/// Every tenant's live `spent` (the sum of its agents' lifetime counters, saturated at
/// `i64::MAX`) and `reserved`, by name.
pub async fn live_tenant_books(pool: &PgPool) -> Result<Vec<LiveBooks>, sqlx::Error> {
    sqlx::query_as(
        "SELECT t.id, t.name, LEAST(COALESCE((SELECT sum(a.lifetime_spent_micro_usd) \
           FROM agents a WHERE a.tenant_id = t.id), 0), 9223372036854775807)::bigint, \
           t.reserved_micro_usd FROM tenants t ORDER BY t.name",
    )
    .fetch_all(pool)
    .await
}

const INVARIANTS: &[Invariant] = &[
    Invariant {
        invariant: 1,
        name: "reserved equals the sum of open reservations",
        sql: RESERVED_HELD,
        stale: false,
    },
    Invariant {
        invariant: 2,
        name: "spent equals the sum of committed costs in the current period",
        sql: SPENT_COMMITTED,
        stale: false,
    },
    Invariant {
        invariant: 5,
        name: "no execution is in flight unless its replica is alive",
        sql: IN_FLIGHT_ON_LOST_REPLICA,
        stale: true,
    },
    Invariant {
        invariant: 6,
        name: "spent exceeds budget only by provider overruns (or a budget an operator cut)",
        sql: AGENT_OVER_BUDGET,
        stale: false,
    },
    Invariant {
        invariant: 6,
        name: "a tenant's spent exceeds its budget only by provider overruns, commits made before \
             the budget held them, or a budget an operator cut",
        sql: TENANT_OVER_BUDGET,
        stale: false,
    },
    Invariant {
        invariant: 6,
        name: "an execution costs more than its hold only by provider usage beyond the caps",
        sql: EXECUTION_OVER_HOLD,
        stale: false,
    },
    Invariant {
        invariant: 8,
        name: "tenant spent and reserved equal their agents' committed costs and tenant holds",
        sql: TENANT_BOOKS,
        stale: false,
    },
    Invariant {
        invariant: 7,
        name: "no money is held for a finished execution",
        sql: HELD_FOR_FINISHED,
        stale: false,
    },
];

/// Invariant 1: an agent's `reserved` is the sum of its open reservations.
const RESERVED_HELD: &str = "\
SELECT a.name || ': reserved ' || a.reserved_micro_usd || ' != held ' || COALESCE(r.held, 0) \
FROM agents a LEFT JOIN (SELECT agent_id, sum(estimate_micro_usd) AS held FROM reservations \
  WHERE state = 'RESERVED' GROUP BY agent_id) r ON r.agent_id = a.id \
WHERE a.reserved_micro_usd <> COALESCE(r.held, 0) LIMIT $1";

/// Invariant 2: an agent's `spent` is the sum of its committed costs in the current period.
const SPENT_COMMITTED: &str = "\
SELECT a.name || ': spent ' || a.spent_micro_usd || ' != committed ' || COALESCE(c.total, 0) \
FROM agents a LEFT JOIN LATERAL (SELECT sum(actual_micro_usd) AS total FROM reservations r \
  WHERE r.agent_id = a.id AND r.state = 'COMMITTED' \
    AND (a.budget_period = 'lifetime' OR r.settled_at >= a.period_started_at)) c ON true \
WHERE a.spent_micro_usd <> COALESCE(c.total, 0) LIMIT $1";

/// Invariant 5: an execution in flight belongs to a live replica (`$2`: the heartbeat age after
/// which a replica counts as lost).
const IN_FLIGHT_ON_LOST_REPLICA: &str = "\
SELECT e.execution_key || ' is ' || e.state || ' on a lost replica' FROM executions e \
WHERE e.state IN ('RESERVING', 'RESERVED', 'DISPATCHED') AND NOT EXISTS ( \
  SELECT 1 FROM replicas r WHERE r.id = e.replica_id AND r.stopped_at IS NULL \
    AND r.heartbeat_at > now() - make_interval(secs => $2::bigint)) LIMIT $1";

/// Invariant 7: no reservation is still held for a finished execution (or an earlier attempt).
const HELD_FOR_FINISHED: &str = "\
SELECT e.execution_key || ' is ' || e.state || ' but holds ' || r.estimate_micro_usd FROM reservations r \
JOIN executions e ON e.id = r.execution_id \
WHERE r.state = 'RESERVED' AND (e.state IN ('COMMITTED', 'RELEASED', 'DENIED', 'FAILED') OR e.attempt <> r.attempt) \
  LIMIT $1";

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
/// `reservation.reserved` event, more hosted-tool calls than the `max_tool_calls` sent, or more
/// media units — images, seconds, characters — than held),
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
             > COALESCE((c.payload::jsonb ->> 'hosted_tool_calls_bound')::numeric, 0) \
        OR COALESCE((c.payload::jsonb ->> 'billed_units')::numeric, 0) \
             > COALESCE((c.payload::jsonb ->> 'units_bound')::numeric, 0))) \
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
