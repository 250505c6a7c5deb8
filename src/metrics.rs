//! In-process Prometheus metrics, served at `/metrics`. Labels are bounded: routes are the
//! matched templates, reasons and outcomes are fixed codes, providers and tenants are configured
//! names, never ids of requests or free text.
//!
//! Counters and histograms live in one process-wide registry and are updated where the facts
//! happen: this module is a leaf (it imports nothing of the crate), so any layer may count into
//! it. Values read from the database or from this server's state (spend by tenant, stale
//! reservations, the last ledger verification, the pool) are sampled in the background
//! (`cluster::sampler`, into `cluster::observed`) and rendered at scrape time (`http::scrape`).

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

pub struct Metrics {
    pub registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_latency: HistogramVec,
    pub admissions: IntCounterVec,
    pub settlements: IntCounterVec,
    pub settlement_predictions: IntCounterVec,
    pub spent: IntCounterVec,
    pub overruns: IntCounterVec,
    pub ledger_append: Histogram,
    pub admission_batch: Histogram,
    pub settlement_batch: Histogram,
    pub money_wait: HistogramVec,
    pub money_batch: HistogramVec,
    pub stream_final_wait: Histogram,
    pub config_version: IntGauge,
    pub upstream_latency: HistogramVec,
    pub upstream_errors: IntCounterVec,
    pub upstream_fallbacks: IntCounterVec,
    pub reconcile_runs: IntCounterVec,
    pub reconciled: IntCounterVec,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
];

/// The money path's own times: a batch takes from about 0.3 ms (one call, an idle machine) to
/// tens of milliseconds (a full batch on a saturated one).
const MONEY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.25,
];

fn counter(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> prometheus::Result<HistogramVec> {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )?;
    registry.register(Box::new(h.clone()))?;
    Ok(h)
}

/// A histogram by money queue, both queues listed from the start.
fn money_histogram(r: &Registry, name: &str, help: &str) -> prometheus::Result<HistogramVec> {
    let h = histogram(r, name, help, &["queue"], MONEY_BUCKETS)?;
    for queue in ["admission", "settlement"] {
        h.with_label_values(&[queue]);
    }
    Ok(h)
}

fn build() -> prometheus::Result<Metrics> {
    let registry = Registry::new();
    let r = &registry;
    let ledger_append = Histogram::with_opts(
        HistogramOpts::new(
            "aex_ledger_append_duration_seconds",
            "Time of each statement that appends to the ledger: a lone append, or the hold or settlement call it is part of",
        )
        .buckets(vec![
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25,
        ]),
    )?;
    registry.register(Box::new(ledger_append.clone()))?;
    let admission_batch = Histogram::with_opts(
        HistogramOpts::new(
            "aex_admission_batch_size",
            "Admissions per batch written by this replica's admission writers (`admission::batch`)",
        )
        .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
    )?;
    registry.register(Box::new(admission_batch.clone()))?;
    let settlement_batch = Histogram::with_opts(
        HistogramOpts::new(
            "aex_settlement_batch_size",
            "Settlements written together in one transaction by this replica (store::settle_batch)",
        )
        .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
    )?;
    registry.register(Box::new(settlement_batch.clone()))?;
    let stream_final_wait = Histogram::with_opts(
        HistogramOpts::new(
            "aex_stream_final_event_wait_seconds",
            "What read-your-writes costs a stream's last event: the time from the provider's end \
             of stream to the final event, which waits for the settlement to commit",
        )
        .buckets(vec![
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
        ]),
    )?;
    registry.register(Box::new(stream_final_wait.clone()))?;
    let config_version = IntGauge::new("aex_config_version", "Active routing-table version")?;
    registry.register(Box::new(config_version.clone()))?;
    let build_info = IntGaugeVec::new(
        Opts::new("aex_build_info", "The version of this build; always 1"),
        &["version"],
    )?;
    registry.register(Box::new(build_info.clone()))?;
    build_info.with_label_values(&[crate::VERSION]).set(1);
    Ok(Metrics {
        http_requests: counter(
            r,
            "aex_http_requests_total",
            "HTTP requests by route and status",
            &["route", "status"],
        )?,
        http_latency: histogram(
            r,
            "aex_http_request_duration_seconds",
            "HTTP request latency by route and status",
            &["route", "status"],
            LATENCY_BUCKETS,
        )?,
        admissions: counter(
            r,
            "aex_admissions_total",
            "Admission decisions by outcome and reason",
            &["outcome", "reason"],
        )?,
        settlements: counter(
            r,
            "aex_settlements_total",
            "Settlements by result",
            &["result"],
        )?,
        settlement_predictions: {
            let predictions = counter(
                r,
                "aex_settlement_predictions_total",
                "Lone settlements written in one round trip after the chain tail they predicted \
                 (hit), or the two-round-trip way after a wrong prediction (stale)",
                &["outcome"],
            )?;
            for outcome in ["hit", "stale"] {
                predictions.with_label_values(&[outcome]);
            }
            predictions
        },
        spent: counter(
            r,
            "aex_spent_micro_usd_total",
            "Micro-USD committed by this replica",
            &["result"],
        )?,
        overruns: counter(
            r,
            "aex_overruns_total",
            "Commits whose actual cost exceeded the estimate",
            &["result"],
        )?,
        upstream_latency: histogram(
            r,
            "aex_upstream_request_duration_seconds",
            "Time until a provider answered (any status), by provider",
            &["provider"],
            LATENCY_BUCKETS,
        )?,
        upstream_errors: counter(
            r,
            "aex_upstream_errors_total",
            "Provider calls that failed, by provider and kind (timeout, connect, transport, \
             status_4xx, status_429, status_5xx)",
            &["provider", "kind"],
        )?,
        upstream_fallbacks: counter(
            r,
            "aex_upstream_fallbacks_total",
            "Calls moved to a fallback model's provider after their provider failed",
            &["provider", "fallback_provider"],
        )?,
        reconcile_runs: {
            let runs = counter(
                r,
                "aex_reconcile_runs_total",
                "Reconciler passes by outcome (done, skipped: another replica held the lock, error)",
                &["outcome"],
            )?;
            // Every outcome is exported from the start (at 0): the first pass runs only once the
            // replica's database contact has lasted `stale_after_seconds`, and an absent series
            // cannot be alerted on.
            for outcome in ["done", "skipped", "error"] {
                runs.with_label_values(&[outcome]);
            }
            runs
        },
        reconciled: counter(
            r,
            "aex_reconciled_executions_total",
            "Executions of lost replicas settled by the reconciler, by resulting state",
            &["state"],
        )?,
        ledger_append,
        admission_batch,
        settlement_batch,
        money_wait: money_histogram(
            r,
            "aex_money_wait_seconds",
            "Time a call waits for the money transaction that carries it (queue: admission or \
             settlement): from joining this replica's queue to its batch's answer, the batch in \
             the database before it included",
        )?,
        money_batch: money_histogram(
            r,
            "aex_money_batch_seconds",
            "Time of each money batch this replica writes (queue: admission or settlement), \
             from taking its calls off the queue to answering them",
        )?,
        stream_final_wait,
        config_version,
        registry,
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

/// One provider call: its latency when it answered (its status), or the kind of its failure
/// (`timeout`, `connect`, `transport`).
pub fn observe_upstream(provider: &str, elapsed: Duration, outcome: Result<u16, &'static str>) {
    let Some(m) = METRICS.as_ref() else {
        return;
    };
    let kind = match outcome {
        Ok(status) => {
            m.upstream_latency
                .with_label_values(&[provider])
                .observe(elapsed.as_secs_f64());
            match status {
                429 => "status_429",
                400..=499 => "status_4xx",
                500..=599 => "status_5xx",
                _ => return,
            }
        }
        Err(kind) => kind,
    };
    m.upstream_errors.with_label_values(&[provider, kind]).inc();
}

/// A call moved from a failed provider to a fallback model's provider.
pub fn upstream_fallback(provider: &str, fallback_provider: &str) {
    if let Some(m) = METRICS.as_ref() {
        m.upstream_fallbacks
            .with_label_values(&[provider, fallback_provider])
            .inc();
    }
}

/// One reconciler pass: `outcome` is `done`, `skipped` or `error`.
pub fn reconcile_run(outcome: &str, released: u64, failed: u64) {
    if let Some(m) = METRICS.as_ref() {
        m.reconcile_runs.with_label_values(&[outcome]).inc();
        if released > 0 {
            m.reconciled
                .with_label_values(&["RELEASED"])
                .inc_by(released);
        }
        if failed > 0 {
            m.reconciled.with_label_values(&["FAILED"]).inc_by(failed);
        }
    }
}

/// A lone settlement's predicted chain tail was right (`hit`: written in one round trip) or not.
pub fn settlement_prediction(hit: bool) {
    if let Some(m) = METRICS.as_ref() {
        let outcome = if hit { "hit" } else { "stale" };
        m.settlement_predictions.with_label_values(&[outcome]).inc();
    }
}

/// A settlement batch of `members` went to the database.
pub fn settlement_batch(members: usize) {
    if let Some(m) = METRICS.as_ref() {
        m.settlement_batch.observe(members as f64);
    }
}

/// A call waited `waited` for its money transaction on `queue` (`store::group_commit`).
pub fn observe_money_wait(queue: &str, waited: Duration) {
    if let Some(m) = METRICS.as_ref() {
        m.money_wait
            .with_label_values(&[queue])
            .observe(waited.as_secs_f64());
    }
}

/// A money batch on `queue` took `elapsed` (`store::group_commit`).
pub fn observe_money_batch(queue: &str, elapsed: Duration) {
    if let Some(m) = METRICS.as_ref() {
        m.money_batch
            .with_label_values(&[queue])
            .observe(elapsed.as_secs_f64());
    }
}

pub fn observe_ledger_append(elapsed: Duration) {
    if let Some(m) = METRICS.as_ref() {
        m.ledger_append.observe(elapsed.as_secs_f64());
    }
}

/// A batch of `size` admissions was written.
pub fn observe_admission_batch(size: usize) {
    if let Some(m) = METRICS.as_ref() {
        m.admission_batch.observe(size as f64);
    }
}

/// A stream's final event went out `waited` after the provider's end of stream.
pub fn observe_stream_final_wait(waited: Duration) {
    if let Some(m) = METRICS.as_ref() {
        m.stream_final_wait.observe(waited.as_secs_f64());
    }
}

pub fn set_config_version(version: i64) {
    if let Some(m) = METRICS.as_ref() {
        m.config_version.set(version);
    }
}
