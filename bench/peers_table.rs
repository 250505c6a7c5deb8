//! `bench/peers.sh`'s table: AEX (governed, and the mock direct as the baseline) beside the peer
//! gateways, one row per system, from the same results file format as `bench/run.sh`'s.
//!
//! Modes in the file: `direct` (the mock), `governed` (AEX), and one per peer (`portkey`,
//! `litellm`). Scenarios: `chat-c1`, `chat-c16`, `chat-c64`, `stream-c16`, and `open-half`,
//! AEX and the mock at a fixed rate of half AEX's peak (open loop). A peer that could not be
//! installed or started leaves a `peer-NAME` record saying why instead of figures.

use std::fmt::Write;

use super::report::{self, added, ms, signed_ms, str_of, Results, Verdicts};
use super::{LoadResult, Percentiles};

/// The systems in the table: (mode in the results, label, CPU column names Postgres too).
const SYSTEMS: [(&str, &str); 4] = [
    ("direct", "mock upstream, direct (baseline)"),
    ("governed", "AEX, governed"),
    ("portkey", "Portkey gateway"),
    ("litellm", "LiteLLM proxy"),
];

const CHATS: [&str; 3] = ["chat-c1", "chat-c16", "chat-c64"];

/// `req/s (+added p50 ms)`, or `(p50 ms)` on the baseline row.
fn chat_cell(l: Option<&LoadResult>, d: Option<&LoadResult>, baseline: bool) -> String {
    let Some(l) = l else { return "-".into() };
    let p50 = |l: &LoadResult| l.latency_us.map(|p| p.p50);
    let latency = if baseline {
        p50(l).map_or("-".into(), ms)
    } else {
        signed_ms(added(
            l.latency_us.as_ref(),
            d.and_then(|d| d.latency_us.as_ref()),
            |p| p.p50,
        ))
    };
    format!("{:.0} ({latency}){}", l.throughput_rps, failures(l))
}

/// ` !ok/total` when some requests failed, so a fast row of errors cannot pass for a fast row.
fn failures(l: &LoadResult) -> String {
    if l.ok == l.completed {
        String::new()
    } else {
        format!(" !{}/{}", l.ok, l.completed)
    }
}

/// TTFB p50 / p99: added over direct, or as measured on the baseline row.
fn stream_cell(l: Option<&LoadResult>, d: Option<&LoadResult>, baseline: bool) -> String {
    let Some(l) = l else { return "-".into() };
    let (t, dt) = (l.ttfb_us.as_ref(), d.and_then(|d| d.ttfb_us.as_ref()));
    let at = |f: fn(&Percentiles) -> f64| {
        if baseline {
            t.map_or("-".into(), |p| ms(f(p)))
        } else {
            signed_ms(added(t, dt, f))
        }
    };
    format!("{} / {}{}", at(|p| p.p50), at(|p| p.p99), failures(l))
}

/// µs of CPU per request over the chat scenarios, lowest–highest, of the gateway (and, where
/// watched, of its Postgres backends).
fn cpu_cell(loads: &[&LoadResult]) -> String {
    let range = |per: &dyn Fn(&LoadResult) -> Option<f64>| {
        let v: Vec<f64> = loads.iter().filter_map(|l| per(l)).collect();
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        match v.len() {
            0 => None,
            _ if (hi - lo) < 0.5 => Some(format!("{lo:.0}")),
            _ => Some(format!("{lo:.0}–{hi:.0}")),
        }
    };
    let per_request = |p: Option<super::ProcUse>, l: &LoadResult| {
        p.map(|p| p.cpu_seconds * 1e6 / (l.throughput_rps * l.window_seconds).max(1.0))
    };
    let own = range(&|l| per_request(l.process, l));
    let db = range(&|l| per_request(l.db_process, l));
    match (own, db) {
        (Some(o), Some(d)) => format!("{o} + {d}"),
        (Some(o), None) => o,
        _ => "-".into(),
    }
}

/// The whole table.
pub fn render(text: &str) -> anyhow::Result<String> {
    let r = Results::parse(text)?;
    let mut out = String::new();
    if let Some(m) = r.other.get("meta") {
        writeln!(
            out,
            "AEX beside its peers {} — {} CPUs, load average before the run {}; {}",
            str_of(m, "started"),
            str_of(m, "nproc"),
            str_of(m, "loadavg"),
            str_of(m, "settings"),
        )?;
        writeln!(out, "busy processes before the run: {}", str_of(m, "busy"))?;
        writeln!(out)?;
    }
    writeln!(
        out,
        "chat: req/s (added p50 ms over direct; the baseline row: its p50); stream: added TTFB \
         p50 / p99 ms; CPU: µs per request over the chat scenarios (AEX: itself + its Postgres \
         backends); RSS: peak MB of the gateway's processes; !ok/total where requests failed"
    )?;
    let widths = [34, 18, 18, 18, 20, 22, 8];
    let head = [
        "",
        "chat c1",
        "chat c16",
        "chat c64",
        "stream c16 TTFB",
        "CPU µs/req",
        "RSS MB",
    ];
    let row = |cells: &[String]| -> String {
        let mut line = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i == 0 {
                line.push_str(&format!("{cell:<w$}"));
            } else {
                line.push_str(&format!(" {cell:>w$}"));
            }
        }
        line
    };
    out.push_str(&row(&head.map(String::from)));
    out.push('\n');
    for (mode, label) in SYSTEMS {
        let label = match r.other.get(&format!("peer-{mode}")) {
            Some(p) if !str_of(p, "version").is_empty() => {
                format!("{label} {}", str_of(p, "version"))
            }
            _ => label.to_owned(),
        };
        let loads: Vec<&LoadResult> = CHATS.iter().filter_map(|s| r.get(s, mode)).collect();
        if loads.is_empty() && r.get("stream-c16", mode).is_none() {
            let why = r
                .other
                .get(&format!("peer-{mode}"))
                .map_or("not run".into(), |p| str_of(p, "status"));
            writeln!(out, "{label:<34} {why}")?;
            continue;
        }
        let baseline = mode == "direct";
        let mut cells = vec![label];
        for s in CHATS {
            cells.push(chat_cell(r.get(s, mode), r.get(s, "direct"), baseline));
        }
        cells.push(stream_cell(
            r.get("stream-c16", mode),
            r.get("stream-c16", "direct"),
            baseline,
        ));
        let all: Vec<&LoadResult> = loads
            .iter()
            .copied()
            .chain(r.get("stream-c16", mode))
            .collect();
        cells.push(cpu_cell(&loads));
        let rss = all
            .iter()
            .filter_map(|l| l.process.map(|p| p.rss_peak_mb))
            .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
        cells.push(rss.map_or("-".into(), |x| format!("{x:.0}")));
        out.push_str(&row(&cells));
        out.push('\n');
    }
    open_loop_line(&r, &mut out)?;
    writeln!(out)?;
    let mut v = Verdicts(Vec::new());
    verdicts(&r, &mut v);
    v.write("Targets (issue 17; the same run, ratios)", &mut out)?;
    Ok(out)
}

/// The targets of issue 17 this run's figures judge: throughput beside the peers at c=64, the
/// added latency at c=1, at half of AEX's peak and to a stream's first byte, and the CPU.
fn verdicts(r: &Results, v: &mut Verdicts) {
    let aex = r.get("chat-c64", "governed").map(|l| l.throughput_rps);
    for (peer, times) in [("portkey", 1.0), ("litellm", 15.0)] {
        let name = SYSTEMS
            .iter()
            .find(|(m, _)| *m == peer)
            .map_or(peer, |(_, label)| *label);
        let other = r.get("chat-c64", peer).filter(|l| l.ok == l.completed);
        let met = aex.zip(other).map(|(a, o)| a >= times * o.throughput_rps);
        v.push(
            met,
            format!(
                "governed chat throughput at c=64 >= {times}x the {name}'s: {}",
                match (aex, other) {
                    (Some(a), Some(o)) => format!(
                        "{:.2}x ({a:.0} vs {:.0} req/s)",
                        a / o.throughput_rps.max(1e-9),
                        o.throughput_rps
                    ),
                    _ => "not measured in this run (or it had failures)".into(),
                }
            ),
        );
    }
    report::latency_verdicts(r, v);
    if let (Some(g), Some(d)) = (r.get("open-half", "governed"), r.get("open-half", "direct")) {
        let (gl, dl) = (g.latency_us.as_ref(), d.latency_us.as_ref());
        let (p50, p99) = (added(gl, dl, |p| p.p50), added(gl, dl, |p| p.p99));
        v.push(
            p50.zip(p99)
                .map(|(a, b)| a <= 2000.0 && b <= 6000.0 && g.ok == g.completed),
            format!(
                "added latency at 50% of AEX's peak rate <= 2 ms p50 and <= 6 ms p99: {} / {} ms",
                signed_ms(p50),
                signed_ms(p99)
            ),
        );
    }
    report::cpu_verdicts(r, v);
}

/// AEX's added latency at half its own peak rate, open loop.
fn open_loop_line(r: &Results, out: &mut String) -> std::fmt::Result {
    writeln!(out)?;
    let (Some(g), Some(d)) = (r.get("open-half", "governed"), r.get("open-half", "direct")) else {
        return writeln!(out, "AEX at 50% of its peak rate: not run");
    };
    let (gl, dl) = (g.latency_us.as_ref(), d.latency_us.as_ref());
    let peak = r
        .other
        .get("peak")
        .map_or("?".into(), |p| str_of(p, "governed_rps"));
    writeln!(
        out,
        "AEX at 50% of its peak rate (open loop, {:.0} req/s scheduled, peak {peak} req/s; latency \
         from each request's scheduled send): added p50 {} ms, p99 {} ms; AEX {} / {} ms, direct \
         {} / {} ms (p50 / p99); AEX answered {:.0} req/s, ok {}/{}",
        g.rate_rps.unwrap_or(0.0),
        signed_ms(added(gl, dl, |p| p.p50)),
        signed_ms(added(gl, dl, |p| p.p99)),
        gl.map_or("-".into(), |p| ms(p.p50)),
        gl.map_or("-".into(), |p| ms(p.p99)),
        dl.map_or("-".into(), |p| ms(p.p50)),
        dl.map_or("-".into(), |p| ms(p.p99)),
        g.throughput_rps,
        g.ok,
        g.completed,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(scenario: &str, mode: &str, rps: f64, p50_us: f64, ok: u64, completed: u64) -> String {
        let p = serde_json::json!({"count": ok, "mean": p50_us, "p50": p50_us, "p95": p50_us,
            "p99": p50_us, "max": p50_us});
        let kind = if scenario.starts_with("stream") {
            "stream"
        } else {
            "chat"
        };
        serde_json::json!({"record": "load", "scenario": scenario, "mode": mode, "kind": kind,
            "concurrency": 1, "window_seconds": 1.0, "completed": completed, "ok": ok,
            "statuses": {}, "throughput_rps": rps, "latency_us": p, "ttfb_us": p})
        .to_string()
    }

    #[test]
    fn rows_show_added_latency_failures_and_peers_that_did_not_run() {
        let text = [
            load("chat-c1", "direct", 1000.0, 1000.0, 10, 10),
            load("chat-c1", "governed", 300.0, 4000.0, 10, 10),
            load("chat-c1", "portkey", 900.0, 500.0, 4, 10),
            r#"{"record":"peer-litellm","status":"pip install failed"}"#.to_owned(),
        ]
        .join("\n");
        let out = render(&text).expect("renders");
        let row = |name: &str| {
            out.lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("no {name} row in\n{out}"))
                .to_owned()
        };
        assert!(row("mock upstream").contains("1000 (1.00)"));
        assert!(row("AEX, governed").contains("300 (+3.00)"));
        // A row with failures says so, so fast errors cannot pass for throughput.
        assert!(row("Portkey").contains("900 (-0.50) !4/10"));
        assert!(row("LiteLLM proxy").contains("pip install failed"));
        assert!(out.contains("AEX at 50% of its peak rate: not run"));
    }

    #[test]
    fn targets_are_judged_against_the_peers_of_the_same_run() {
        let text = [
            load("chat-c1", "direct", 1000.0, 1000.0, 10, 10),
            load("chat-c1", "governed", 800.0, 2000.0, 10, 10),
            load("chat-c64", "governed", 900.0, 9000.0, 10, 10),
            load("chat-c64", "portkey", 800.0, 9000.0, 10, 10),
            load("chat-c64", "litellm", 100.0, 90000.0, 10, 10),
        ]
        .join("\n");
        let out = render(&text).expect("renders");
        let line = |what: &str| {
            out.lines()
                .find(|l| l.contains(what))
                .unwrap_or_else(|| panic!("no line with {what} in\n{out}"))
                .to_owned()
        };
        assert!(line("Portkey gateway's").starts_with("[MET]"), "{out}");
        assert!(line("1.12x (900 vs 800 req/s)").contains("Portkey"));
        // 15 x 100 = 1,500 > 900.
        assert!(line("LiteLLM proxy's").starts_with("[MISSED]"), "{out}");
        // +1.00 ms at c=1 is within 1.5 ms.
        assert!(line("added latency at c=1").starts_with("[MET]"), "{out}");
        // No CPU was watched: not judged.
        assert!(
            line("Postgres CPU per governed request").starts_with("[N/A]"),
            "{out}"
        );
    }
}
