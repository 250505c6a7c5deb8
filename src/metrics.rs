//! In-process Prometheus metrics, served at `/metrics`. Labels are bounded: routes are the
//! matched templates, reasons and outcomes are fixed codes, never ids or free text.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_latency: HistogramVec,
    pub admissions: IntCounterVec,
    pub settlements: IntCounterVec,
    pub spent: IntCounterVec,
    pub overruns: IntCounterVec,
    pub ledger_append: Histogram,
    pub config_version: IntGauge,
}

fn build() -> Result<Metrics, prometheus::Error> {
    let registry = Registry::new();
    let http_requests = IntCounterVec::new(
        Opts::new(
            "aex_http_requests_total",
            "HTTP requests by route and status",
        ),
        &["route", "status"],
    )?;
    let http_latency = HistogramVec::new(
        HistogramOpts::new(
            "aex_http_request_duration_seconds",
            "HTTP request latency by route and status",
        )
        .buckets(vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            120.0,
        ]),
        &["route", "status"],
    )?;
    let admissions = IntCounterVec::new(
        Opts::new(
            "aex_admissions_total",
            "Admission decisions by outcome and reason",
        ),
        &["outcome", "reason"],
    )?;
    let settlements = IntCounterVec::new(
        Opts::new("aex_settlements_total", "Settlements by result"),
        &["result"],
    )?;
    let spent = IntCounterVec::new(
        Opts::new(
            "aex_spent_micro_usd_total",
            "Micro-USD committed by this replica",
        ),
        &["result"],
    )?;
    let overruns = IntCounterVec::new(
        Opts::new(
            "aex_overruns_total",
            "Commits whose actual cost exceeded the estimate",
        ),
        &["result"],
    )?;
    let ledger_append = Histogram::with_opts(
        HistogramOpts::new(
            "aex_ledger_append_duration_seconds",
            "Time to append one ledger event",
        )
        .buckets(vec![
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25,
        ]),
    )?;
    let config_version = IntGauge::new("aex_config_version", "Active routing-table version")?;
    registry.register(Box::new(http_requests.clone()))?;
    registry.register(Box::new(http_latency.clone()))?;
    registry.register(Box::new(admissions.clone()))?;
    registry.register(Box::new(settlements.clone()))?;
    registry.register(Box::new(spent.clone()))?;
    registry.register(Box::new(overruns.clone()))?;
    registry.register(Box::new(ledger_append.clone()))?;
    registry.register(Box::new(config_version.clone()))?;
    Ok(Metrics {
        registry,
        http_requests,
        http_latency,
        admissions,
        settlements,
        spent,
        overruns,
        ledger_append,
        config_version,
    })
}

/// The process-wide metrics; `None` only if registration failed, which would be a bug in the
/// names above (metrics then silently stop rather than take the gateway down).
pub static METRICS: LazyLock<Option<Metrics>> = LazyLock::new(|| build().ok());

pub fn observe_http(route: &str, status: u16, elapsed: Duration) {
    if let Some(m) = METRICS.as_ref() {
        let status = status.to_string();
        m.http_requests.with_label_values(&[route, &status]).inc();
        m.http_latency
            .with_label_values(&[route, &status])
            .observe(elapsed.as_secs_f64());
    }
}

pub fn admission(outcome: &str, reason: &str) {
    if let Some(m) = METRICS.as_ref() {
        m.admissions.with_label_values(&[outcome, reason]).inc();
    }
}

pub fn settled(result: &str, actual_micro_usd: i64, overrun: bool) {
    if let Some(m) = METRICS.as_ref() {
        m.settlements.with_label_values(&[result]).inc();
        if actual_micro_usd > 0 {
            m.spent
                .with_label_values(&[result])
                .inc_by(actual_micro_usd.unsigned_abs());
        }
        if overrun {
            m.overruns.with_label_values(&[result]).inc();
        }
    }
}

pub fn observe_ledger_append(elapsed: Duration) {
    if let Some(m) = METRICS.as_ref() {
        m.ledger_append.observe(elapsed.as_secs_f64());
    }
}

pub fn set_config_version(version: i64) {
    if let Some(m) = METRICS.as_ref() {
        m.config_version.set(version);
    }
}

/// The text exposition of every metric.
pub fn render() -> String {
    let Some(m) = METRICS.as_ref() else {
        return String::new();
    };
    let mut buf = Vec::new();
    if TextEncoder::new()
        .encode(&m.registry.gather(), &mut buf)
        .is_err()
    {
        return String::new();
    }
    String::from_utf8(buf).unwrap_or_default()
}
