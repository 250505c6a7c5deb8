//! The text exposition: the process-wide registry plus the gauges of this server's state (its
//! readiness, its connection pool, the last ledger verification and database sample), built at
//! scrape time so that a gauge that is not known yet is absent rather than a false zero.

use prometheus::core::Collector;
use prometheus::{Encoder, Gauge, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};
use sqlx::PgPool;

use crate::cluster::observed::Observed;
use crate::metrics::METRICS;

/// What a scrape reads besides the registry.
pub struct ScrapeInputs<'a> {
    pub observed: &'a Observed,
    pub pool: &'a PgPool,
    pub max_connections: u32,
    /// Requests waiting for an attempt of the same key in flight.
    pub duplicates_waiting: usize,
    /// The server accepts traffic (`/ready` would answer 200 but for the database ping).
    pub up: bool,
    pub agent_labels: bool,
}

fn gauge(local: &Registry, name: &str, help: &str, value: i64) -> prometheus::Result<()> {
    let g = IntGauge::new(name, help)?;
    g.set(value);
    register(local, g)
}

fn gauge_vec(
    local: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    rows: impl IntoIterator<Item = (Vec<String>, i64)>,
) -> prometheus::Result<()> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    for (values, v) in rows {
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        g.with_label_values(&values).set(v);
    }
    register(local, g)
}

fn register(local: &Registry, c: impl Collector + 'static) -> prometheus::Result<()> {
    local.register(Box::new(c))
}

/// A gauge holding a moment as Unix time in seconds.
fn timestamp_gauge(
    local: &Registry,
    name: &str,
    help: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> prometheus::Result<()> {
    let g = Gauge::new(name, help)?;
    g.set(at.timestamp_millis() as f64 / 1000.0);
    register(local, g)
}

fn local_registry(s: &ScrapeInputs<'_>) -> prometheus::Result<Registry> {
    let local = Registry::new();
    let r = &local;
    gauge(
        r,
        "aex_up",
        "1 while this replica accepts traffic, else 0",
        i64::from(s.up),
    )?;
    let in_use = i64::from(s.pool.size()) - i64::try_from(s.pool.num_idle()).unwrap_or(0);
    let idle = i64::try_from(s.pool.num_idle()).unwrap_or(0);
    gauge_vec(
        r,
        "aex_db_pool_connections",
        "Open database connections of this replica, by state (in_use, idle)",
        &["state"],
        [
            (vec!["in_use".into()], in_use.max(0)),
            (vec!["idle".into()], idle),
        ],
    )?;
    gauge(
        r,
        "aex_db_pool_max_connections",
        "The sqlx pool's size limit (half or more of db.max_connections; the money transactions' pool has the rest)",
        i64::from(s.max_connections),
    )?;
    gauge(
        r,
        "aex_idempotency_waiting",
        "Requests of this replica waiting for an attempt of the same Idempotency-Key in flight",
        i64::try_from(s.duplicates_waiting).unwrap_or(i64::MAX),
    )?;
    if let Some(check) = s.observed.ledger() {
        gauge(
            r,
            "aex_ledger_verify_ok",
            "1 if the last verification of every hash chain passed, 0 if it found a bad event",
            i64::from(check.ok),
        )?;
        gauge(
            r,
            "aex_ledger_verified_events",
            "Events checked by the last ledger verification",
            i64::try_from(check.events).unwrap_or(i64::MAX),
        )?;
        timestamp_gauge(
            r,
            "aex_ledger_verify_timestamp_seconds",
            "When the last ledger verification finished (Unix time)",
            check.checked_at,
        )?;
    }
    if let Some(books) = s.observed.books() {
        let tenants = &books.tenants;
        gauge_vec(
            r,
            "aex_tenant_spent_micro_usd",
            "Micro-USD committed by the agents of a tenant (current budget period)",
            &["tenant"],
            tenants
                .iter()
                .map(|t| (vec![t.tenant.clone()], t.spent_micro_usd)),
        )?;
        gauge_vec(
            r,
            "aex_tenant_reserved_micro_usd",
            "Micro-USD held by open reservations of a tenant's agents",
            &["tenant"],
            tenants
                .iter()
                .map(|t| (vec![t.tenant.clone()], t.reserved_micro_usd)),
        )?;
        if s.agent_labels {
            let agents = &books.agents;
            let key = |a: &crate::store::stats::AgentBooks| vec![a.tenant.clone(), a.agent.clone()];
            gauge_vec(
                r,
                "aex_agent_spent_micro_usd",
                "Micro-USD committed by an agent (current budget period)",
                &["tenant", "agent"],
                agents.iter().map(|a| (key(a), a.spent_micro_usd)),
            )?;
            gauge_vec(
                r,
                "aex_agent_reserved_micro_usd",
                "Micro-USD held by an agent's open reservations",
                &["tenant", "agent"],
                agents.iter().map(|a| (key(a), a.reserved_micro_usd)),
            )?;
        }
        gauge(
            r,
            "aex_reservations_stale",
            "Reservations held longer than metrics.stale_reservation_seconds",
            books.stale_reservations,
        )?;
        gauge(
            r,
            "aex_agent_budget_exhausted",
            "Agents (not decommissioned) whose remaining budget is zero or less",
            books.exhausted_agents,
        )?;
        timestamp_gauge(
            r,
            "aex_books_sample_timestamp_seconds",
            "When the database gauges were last sampled (Unix time)",
            books.sampled_at,
        )?;
    }
    Ok(local)
}

/// The text exposition of every metric.
pub fn render(inputs: &ScrapeInputs<'_>) -> String {
    let mut families = METRICS
        .as_ref()
        .map(|m| m.registry.gather())
        .unwrap_or_default();
    match local_registry(inputs) {
        Ok(local) => families.extend(local.gather()),
        Err(e) => tracing::error!(error = %e, "building the scrape-time metrics failed"),
    }
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut buf = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
        tracing::error!(error = %e, "encoding metrics failed");
    }
    String::from_utf8(buf).unwrap_or_default()
}
