//! The benchmark's table: every figure of a results file (JSON lines written by `aex-loadgen run`
//! and by `bench/run.sh`), governed against direct, and each target of issues 9 and 17 met or
//! missed.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::Value;

use super::{LoadResult, Percentiles};

/// The lines of one results file, by kind.
#[derive(Default)]
pub(super) struct Results {
    load: BTreeMap<(String, String), LoadResult>,
    order: Vec<String>,
    pgbench: BTreeMap<String, Value>,
    pub(super) other: BTreeMap<String, Value>,
}

impl Results {
    pub(super) fn parse(text: &str) -> anyhow::Result<Self> {
        let mut r = Results::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line)?;
            match v.get("record").and_then(Value::as_str).unwrap_or("") {
                "load" => {
                    let l: LoadResult = serde_json::from_value(v)?;
                    if !r.order.contains(&l.scenario) {
                        r.order.push(l.scenario.clone());
                    }
                    r.load.insert((l.scenario.clone(), l.mode.clone()), l);
                }
                "pgbench" => {
                    let name = str_of(&v, "scenario");
                    r.pgbench.insert(name, v);
                }
                other => {
                    r.other.insert(other.to_owned(), v);
                }
            }
        }
        Ok(r)
    }

    pub(super) fn get(&self, scenario: &str, mode: &str) -> Option<&LoadResult> {
        self.load.get(&(scenario.to_owned(), mode.to_owned()))
    }

    fn num(&self, record: &str, pointer: &str) -> Option<f64> {
        self.other.get(record)?.pointer(pointer)?.as_f64()
    }
}

pub(super) fn str_of(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

pub(super) fn ms(us: f64) -> String {
    format!("{:.2}", us / 1000.0)
}

fn pct(p: Option<&Percentiles>, f: impl Fn(&Percentiles) -> f64) -> String {
    p.map_or("-".into(), |p| ms(f(p)))
}

pub(super) fn added(
    g: Option<&Percentiles>,
    d: Option<&Percentiles>,
    f: impl Fn(&Percentiles) -> f64,
) -> Option<f64> {
    Some(f(g?) - f(d?))
}

pub(super) fn signed_ms(us: Option<f64>) -> String {
    us.map_or("-".into(), |v| format!("{:+.2}", v / 1000.0))
}

/// `[MET]`, `[MISSED]` or `[N/A]` and the line that says why.
pub(super) struct Verdicts(pub(super) Vec<(Option<bool>, String)>);

impl Verdicts {
    pub(super) fn push(&mut self, met: Option<bool>, line: String) {
        self.0.push((met, line));
    }

    pub(super) fn write(&self, title: &str, out: &mut String) -> std::fmt::Result {
        writeln!(out, "{title}")?;
        for (met, line) in &self.0 {
            let tag = match met {
                Some(true) => "[MET]   ",
                Some(false) => "[MISSED]",
                None => "[N/A]   ",
            };
            writeln!(out, "{tag} {line}")?;
        }
        Ok(())
    }
}

/// CPU µs per request of a watched process over a run's window.
pub(super) fn cpu_per_request(p: Option<super::ProcUse>, l: &LoadResult) -> Option<f64> {
    p.map(|p| p.cpu_seconds * 1e6 / (l.throughput_rps * l.window_seconds).max(1.0))
}

/// Issue 17: the CPU a governed request costs at c=64, AEX's own and its Postgres backends'.
pub(super) fn cpu_verdicts(r: &Results, v: &mut Verdicts) {
    let Some(g) = r.get("chat-c64", "governed") else {
        return;
    };
    let own = cpu_per_request(g.process, g);
    let db = cpu_per_request(g.db_process, g);
    let us = |x: Option<f64>| x.map_or("not watched".into(), |x| format!("{x:.0} µs"));
    v.push(
        db.map(|d| d <= 500.0),
        format!(
            "Postgres CPU per governed request at c=64 <= 500 µs (its backends of aex's pool): {}",
            us(db)
        ),
    );
    v.push(
        own.map(|o| o <= 250.0),
        format!(
            "AEX's own CPU per governed request at c=64 <= 250 µs: {}",
            us(own)
        ),
    );
}

/// Issue 17: added latency at c=1 over direct, and streaming's added time to first byte (p50).
pub(super) fn latency_verdicts(r: &Results, v: &mut Verdicts) {
    if let (Some(d), Some(g)) = (r.get("chat-c1", "direct"), r.get("chat-c1", "governed")) {
        let p50 = added(g.latency_us.as_ref(), d.latency_us.as_ref(), |p| p.p50);
        v.push(
            p50.map(|a| a <= 1500.0),
            format!("added latency at c=1 <= 1.5 ms p50: {} ms", signed_ms(p50)),
        );
    }
    if let (Some(d), Some(g)) = (
        r.get("stream-c16", "direct"),
        r.get("stream-c16", "governed"),
    ) {
        let ttfb = added(g.ttfb_us.as_ref(), d.ttfb_us.as_ref(), |p| p.p50);
        v.push(
            ttfb.map(|t| t <= 3000.0),
            format!(
                "streaming: added time to first byte at c=16 <= 3 ms p50: {} ms",
                signed_ms(ttfb)
            ),
        );
    }
}

/// Issue 17: governed chat at c=64 against the build the issue started from, run in the same
/// bench run (`BASELINE_AEX`, mode `baseline`).
fn baseline_verdict(r: &Results, v: &mut Verdicts) {
    let (Some(g), Some(b)) = (r.get("chat-c64", "governed"), r.get("chat-c64", "baseline")) else {
        v.push(
            None,
            "governed chat at c=64 >= 3x the issue's starting point: no baseline in this run \
             (BASELINE_AEX=path/to/the/old/aex bash bench/run.sh)"
                .into(),
        );
        return;
    };
    let x = g.throughput_rps / b.throughput_rps.max(1e-9);
    v.push(
        Some(x >= 3.0),
        format!(
            "governed chat at c=64 >= 3x the issue's starting point (the baseline build, same run): \
             {x:.2}x ({:.0} vs {:.0} req/s)",
            g.throughput_rps, b.throughput_rps
        ),
    );
}

/// The scenarios run both ways, streamed or not, in the order they ran: (name, direct, governed).
fn pairs(r: &Results, stream: bool) -> impl Iterator<Item = (&str, &LoadResult, &LoadResult)> {
    r.order.iter().filter_map(move |name| {
        let (d, g) = (r.get(name, "direct")?, r.get(name, "governed")?);
        ((d.kind == super::Kind::Stream) == stream).then_some((name.as_str(), d, g))
    })
}

/// The start of a block's last row: governed throughput as a share of direct.
fn ratio_head(d: &LoadResult, g: &LoadResult) -> String {
    let share = 100.0 * g.throughput_rps / d.throughput_rps.max(1e-9);
    format!("{:<16} {:<9} {share:>8.1}%", "", "gov/dir")
}

/// What governance adds at p50, p95 and p99, in ms, as three columns.
fn added_ms(g: Option<&Percentiles>, d: Option<&Percentiles>) -> String {
    let at = |f: fn(&Percentiles) -> f64| signed_ms(added(g, d, f));
    format!(
        "{:>8} {:>8} {:>8}",
        at(|p| p.p50),
        at(|p| p.p95),
        at(|p| p.p99)
    )
}

/// The start of a row: the scenario (on its direct row only), the mode, the throughput with
/// `decimals` decimals, and p50, p95, p99 of `p` in ms.
fn row_head(name: &str, l: &LoadResult, p: Option<&Percentiles>, decimals: usize) -> String {
    let name = if l.mode == "direct" { name } else { "" };
    format!(
        "{name:<16} {:<9} {:>9.*} {:>8} {:>8} {:>8}",
        l.mode,
        decimals,
        l.throughput_rps,
        pct(p, |p| p.p50),
        pct(p, |p| p.p95),
        pct(p, |p| p.p99)
    )
}

/// The non-streaming table: a block per scenario (direct, governed, the difference).
fn load_table(r: &Results, out: &mut String) -> std::fmt::Result {
    writeln!(
        out,
        "Requests (latency in ms at the client; cores, CPU per request and peak RSS of the watched process \
         over the measured window: the mock on direct rows, aex on governed rows; machine = all CPUs busy; \
         client = the load client's cores; pg µs/req = CPU per request of aex's Postgres backends)"
    )?;
    writeln!(
        out,
        "{:<16} {:<9} {:>9} {:>8} {:>8} {:>8} {:>15} {:>10} {:>10} {:>7} {:>8} {:>7} {:>10}",
        "scenario",
        "mode",
        "req/s",
        "p50",
        "p95",
        "p99",
        "ok/total",
        "cores",
        "µs CPU/req",
        "RSS MB",
        "machine",
        "client",
        "pg µs/req"
    )?;
    for (name, d, g) in pairs(r, false) {
        // The baseline build's row (BASELINE_AEX), when the run has one, after the governed row.
        for l in [Some(d), Some(g), r.get(name, "baseline")]
            .into_iter()
            .flatten()
        {
            let db = cpu_per_request(l.db_process, l).map_or("-".into(), |x| format!("{x:.0}"));
            let proc = l.process.map_or(String::new(), |p| {
                format!(
                    "{:>10.2} {:>10.0} {:>7.1} {:>7.0}% {:>7.2} {db:>10}",
                    p.cores,
                    p.cpu_seconds * 1e6 / (l.throughput_rps * l.window_seconds).max(1.0),
                    p.rss_peak_mb,
                    100.0 * p.machine_busy,
                    p.client_cores,
                )
            });
            writeln!(
                out,
                "{} {:>15} {proc}",
                row_head(name, l, l.latency_us.as_ref(), 0),
                format!("{}/{}", l.ok, l.completed),
            )?;
        }
        let added = added_ms(g.latency_us.as_ref(), d.latency_us.as_ref());
        writeln!(out, "{} {added}", ratio_head(d, g))?;
    }
    Ok(())
}

fn stream_table(r: &Results, out: &mut String) -> std::fmt::Result {
    writeln!(
        out,
        "Streams (TTFB in ms; in µs: sgap = each stream's mean gap between its events, p50 and p95 \
         over streams; gap99 = p99 of single gaps, where stalls show)"
    )?;
    writeln!(
        out,
        "{:<16} {:<9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}",
        "scenario",
        "mode",
        "streams/s",
        "TTFB50",
        "TTFB95",
        "TTFB99",
        "sgap50",
        "sgap95",
        "gap99",
        "events",
        "peak open",
        "RSS MB"
    )?;
    for (name, d, g) in pairs(r, true) {
        for l in [d, g] {
            let us = |p: Option<&Percentiles>, f: fn(&Percentiles) -> f64| {
                p.map_or("-".into(), |p| format!("{:.0}", f(p)))
            };
            writeln!(
                out,
                "{} {:>8} {:>8} {:>8} {:>8.1} {:>9} {:>9}",
                row_head(name, l, l.ttfb_us.as_ref(), 1),
                us(l.stream_gap_us.as_ref(), |p| p.p50),
                us(l.stream_gap_us.as_ref(), |p| p.p95),
                us(l.gap_us.as_ref(), |p| p.p99),
                l.events_per_stream.unwrap_or(0.0),
                l.peak_open_streams.unwrap_or(0),
                l.process
                    .map_or("".into(), |p| format!("{:.1}", p.rss_peak_mb)),
            )?;
        }
        let (gs, ds) = (g.stream_gap_us.as_ref(), d.stream_gap_us.as_ref());
        let (gg, dg) = (g.gap_us.as_ref(), d.gap_us.as_ref());
        let us = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:+.0}"));
        writeln!(
            out,
            "{} {} {:>8} {:>8} {:>8}",
            ratio_head(d, g),
            added_ms(g.ttfb_us.as_ref(), d.ttfb_us.as_ref()),
            us(added(gs, ds, |p| p.p50)),
            us(added(gs, ds, |p| p.p95)),
            us(added(gg, dg, |p| p.p99)),
        )?;
    }
    Ok(())
}

fn ceiling_table(r: &Results, out: &mut String, v: &mut Verdicts) -> std::fmt::Result {
    let Some(hash) = r.pgbench.values().next().map(|p| str_of(p, "hash")) else {
        return Ok(());
    };
    writeln!(
        out,
        "Postgres ceiling (pgbench -M prepared: the statements and transactions of one governed chat request; ledger hash: {hash})"
    )?;
    writeln!(
        out,
        "{:<16} {:>8} {:>10} {:>12} {:>14} {:>12}",
        "scenario", "clients", "pg tps", "pg lat ms", "governed req/s", "governed/pg"
    )?;
    let mut worst: Option<(f64, String)> = None;
    for (name, p) in &r.pgbench {
        let tps = p.get("tps").and_then(Value::as_f64).unwrap_or(0.0);
        let gov = r.get(name, "governed").map(|g| g.throughput_rps);
        let ratio = gov.map(|g| g / tps.max(1e-9));
        writeln!(
            out,
            "{:<16} {:>8} {:>10.0} {:>12.3} {:>14} {:>12}",
            name,
            str_of(p, "clients"),
            tps,
            p.get("latency_ms").and_then(Value::as_f64).unwrap_or(0.0),
            gov.map_or("-".into(), |g| format!("{g:.0}")),
            ratio.map_or("-".into(), |x| format!("{:.1}%", 100.0 * x)),
        )?;
        if let Some(x) = ratio {
            if worst.as_ref().is_none_or(|(w, _)| x < *w) {
                worst = Some((x, name.clone()));
            }
        }
    }
    let line = r
        .pgbench
        .keys()
        .filter_map(|n| {
            let tps = r.pgbench.get(n)?.get("tps")?.as_f64()?;
            Some(format!(
                "{n} {:.0}%",
                100.0 * r.get(n, "governed")?.throughput_rps / tps.max(1e-9)
            ))
        })
        .collect::<Vec<_>>()
        .join(", ");
    v.push(
        worst.map(|(x, _)| x >= 0.70),
        format!("governed chat throughput >= 70% of the Postgres ceiling: {line}"),
    );
    Ok(())
}

fn verdicts(r: &Results, v: &mut Verdicts) {
    if let (Some(d), Some(g)) = (r.get("chat-c16", "direct"), r.get("chat-c16", "governed")) {
        let (gl, dl) = (g.latency_us.as_ref(), d.latency_us.as_ref());
        let p50 = added(gl, dl, |p| p.p50);
        let p99 = added(gl, dl, |p| p.p99);
        v.push(
            p50.zip(p99).map(|(a, b)| a <= 1500.0 && b <= 5000.0),
            format!(
                "added latency at c=16 <= 1.5 ms p50 and <= 5 ms p99: p50 {} ms, p99 {} ms",
                signed_ms(p50),
                signed_ms(p99)
            ),
        );
    }
    latency_verdicts(r, v);
    cpu_verdicts(r, v);
    baseline_verdict(r, v);
    if let (Some(h), Some(m)) = (r.get("hot-c64", "governed"), r.get("chat-c64", "governed")) {
        let share = h.throughput_rps / m.throughput_rps.max(1e-9);
        let over = r.num("overspend", "/overspend_micro_usd");
        let held = r.num("overspend", "/reserved_micro_usd");
        let capped = r.get("capped-c64", "governed");
        let detail = match (r.other.get("overspend"), capped) {
            (Some(o), Some(c)) => format!(
                "capped hot agent: budget {} micro-USD, spent {}, still held {}, {} of {} requests admitted",
                str_of(o, "budget_micro_usd"),
                str_of(o, "spent_micro_usd"),
                str_of(o, "reserved_micro_usd"),
                c.statuses.get("200").copied().unwrap_or(0),
                c.completed
            ),
            _ => "no overspend check recorded".into(),
        };
        v.push(
            Some(share >= 0.6 && over == Some(0.0) && held == Some(0.0)),
            format!(
                "one hot agent at c=64 keeps >= 60% of the many-agents throughput with zero overspend: {:.0}% ({:.0} vs {:.0} req/s); overspend {} micro-USD ({detail})",
                100.0 * share,
                h.throughput_rps,
                m.throughput_rps,
                over.map_or("?".into(), |o| format!("{o:.0}")),
            ),
        );
    }
    if let (Some(d), Some(g)) = (
        r.get("stream-c16", "direct"),
        r.get("stream-c16", "governed"),
    ) {
        let ttfb = added(g.ttfb_us.as_ref(), d.ttfb_us.as_ref(), |p| p.p99);
        let gap = added(g.stream_gap_us.as_ref(), d.stream_gap_us.as_ref(), |p| {
            p.p50
        });
        v.push(
            ttfb.map(|t| t <= 3000.0),
            format!(
                "streaming: added time to first byte <= 3 ms p99: {} ms",
                signed_ms(ttfb)
            ),
        );
        v.push(
            gap.map(|x| x <= 50.0),
            format!(
                "streaming: added per-chunk gap <= 50 µs (median over streams of a stream's mean gap, governed - direct): {} µs",
                gap.map_or("?".into(), |x| format!("{x:+.0}"))
            ),
        );
    }
    if let Some(rate) = r.num("verify", "/report/events_per_second") {
        let events = r.num("verify", "/report/events").unwrap_or(0.0);
        let note = if events < 1_000_000.0 {
            format!(
                "; only {events:.0} events (the run's own), far below the 1,000,000 the target is about: startup cost weighs on this rate"
            )
        } else {
            String::new()
        };
        v.push(
            Some(rate >= 300_000.0),
            format!(
                "ledger verification >= 300,000 events/s: {rate:.0} events/s over {events:.0} events in {:.0} chains{note}",
                r.num("verify", "/report/chains").unwrap_or(0.0)
            ),
        );
    }
    if let Some(idle) = r.num("idle", "/VmRSS_mb") {
        let part = |record: &str, field: &str| {
            r.num(record, &format!("/{field}_mb"))
                .map_or("?".into(), |x| format!("{x:.1}"))
        };
        v.push(
            Some(idle <= 64.0),
            format!(
                "RSS <= 64 MB idle: {idle:.1} MB after startup ({} MB anonymous, {} MB file-backed); {} MB idle after the load",
                part("idle", "RssAnon"),
                part("idle", "RssFile"),
                part("idle_after", "VmRSS"),
            ),
        );
    }
    if let Some(g) = r.get("streams-1000", "governed") {
        let peak = g.process.map(|p| p.rss_peak_mb);
        let open = g.peak_open_streams.unwrap_or(0);
        v.push(
            peak.map(|p| p <= 256.0 && open >= 1000),
            format!(
                "RSS <= 256 MB with 1,000 concurrent streams: peak {} MB with {open} streams open at once",
                peak.map_or("?".into(), |p| format!("{p:.1}"))
            ),
        );
    }
    if let Some(log) = r.other.get("log") {
        let errors = r.num("log", "/errors").unwrap_or(0.0);
        v.push(
            Some(errors == 0.0),
            format!(
                "aex logged no error during the run: {} errors, {} warnings",
                str_of(log, "errors"),
                str_of(log, "warnings")
            ),
        );
    }
    if let Some(a) = r.other.get("audit").and_then(|a| a.get("report")) {
        let checks = a.get("checks").and_then(Value::as_array);
        let failed: Vec<String> = checks
            .into_iter()
            .flatten()
            .filter(|c| c.get("ok").and_then(Value::as_bool) != Some(true))
            .map(|c| str_of(c, "name"))
            .collect();
        v.push(
            a.get("ok").and_then(Value::as_bool),
            format!(
                "the books after the run (aex audit, SPEC §15): {} checks, failed: {}",
                checks.map_or(0, Vec::len),
                if failed.is_empty() {
                    "none".into()
                } else {
                    failed.join("; ")
                }
            ),
        );
    }
}

/// The whole report.
pub fn render(text: &str) -> anyhow::Result<String> {
    let r = Results::parse(text)?;
    let mut out = String::new();
    let mut v = Verdicts(Vec::new());
    if let Some(m) = r.other.get("meta") {
        writeln!(
            out,
            "AEX benchmark {} — {} CPUs, {} MB memory, load average before the run {}; {}",
            str_of(m, "started"),
            str_of(m, "nproc"),
            str_of(m, "mem_total_mb"),
            str_of(m, "loadavg"),
            str_of(m, "settings"),
        )?;
        writeln!(out, "busy processes before the run: {}", str_of(m, "busy"))?;
        writeln!(out)?;
    }
    load_table(&r, &mut out)?;
    writeln!(out)?;
    stream_table(&r, &mut out)?;
    writeln!(out)?;
    ceiling_table(&r, &mut out, &mut v)?;
    writeln!(out)?;
    verdicts(&r, &mut v);
    v.write("Targets (issues 9 and 17)", &mut out)?;
    Ok(out)
}
