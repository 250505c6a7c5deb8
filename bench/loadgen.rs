//! `aex-loadgen`: the load client of `bench/run.sh`.
//!
//! `agents` creates agents through the admin API and writes their tokens, one a line. `run`
//! drives one scenario (chat, streamed chat or embeddings) at a fixed concurrency for a duration
//! or a number of requests, against the mock upstream directly or through AEX — the same code
//! and parameters both ways — and appends one JSON line of results: throughput, latency
//! percentiles, for streams time to first byte and the gaps between events, and, when given
//! `--watch-pid`, the CPU time and peak RSS of those processes over the measured window. `report`
//! turns the collected lines into the benchmark's table, `peers-report` into `bench/peers.sh`'s.
//!
//! By default a run is closed-loop: `--concurrency` workers each send their next request when the
//! last one is answered, which measures throughput but hides queueing (a slow answer delays the
//! requests behind it, which are then never late — coordinated omission). With `--rate N` it is
//! open-loop: requests are scheduled N per second whatever the answers do, and latency is measured
//! from each request's scheduled send time, so time spent waiting to be sent counts.

mod peers_table;
mod report;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, Parser)]
#[command(name = "aex-loadgen", about = "Load client and report of bench/run.sh")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create agents through the admin API and write their tokens to a file, one a line.
    Agents {
        /// Base URL of the AEX server.
        #[arg(long)]
        url: String,
        #[arg(long, env = "BENCH_ADMIN_TOKEN")]
        admin_token: String,
        /// Agents are named PREFIX-0, PREFIX-1, …
        #[arg(long)]
        prefix: String,
        #[arg(long, default_value_t = 1)]
        count: usize,
        #[arg(long)]
        budget_usd: String,
        /// Requests per minute of each agent (`aex agent create` always gives one); none when
        /// left out.
        #[arg(long)]
        rpm: Option<u32>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Drive one scenario and append its results to a JSON-lines file.
    Run(RunArgs),
    /// Print the table of a results file.
    Report { results: PathBuf },
    /// Print `bench/peers.sh`'s table (AEX beside the peer gateways) of a results file.
    PeersReport { results: PathBuf },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Chat,
    Stream,
    Embeddings,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Scenario name in the report, e.g. `chat-c16`.
    #[arg(long)]
    scenario: String,
    /// `direct` (the mock) or `governed` (through AEX).
    #[arg(long)]
    mode: String,
    /// Base URL ending in `/v1`.
    #[arg(long)]
    url: String,
    #[arg(long, value_enum)]
    kind: Kind,
    #[arg(long)]
    model: String,
    /// Tokens to use in turn, one a line (none: a placeholder, as the mock ignores it).
    #[arg(long)]
    tokens: Option<PathBuf>,
    /// Closed loop: requests in flight at once. Open loop (`--rate`): the cap on requests in
    /// flight; a request over the cap waits, and its wait counts in its latency.
    #[arg(long)]
    concurrency: usize,
    /// Open loop: send this many requests per second on a fixed schedule, latency measured from
    /// each one's scheduled send time.
    #[arg(long)]
    rate: Option<f64>,
    /// A header sent with every request, `'Name: value'`; repeatable.
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Measure for this long after the warm-up …
    #[arg(long, default_value_t = 10.0)]
    duration_secs: f64,
    #[arg(long, default_value_t = 1.0)]
    warmup_secs: f64,
    /// … or send exactly this many requests (no warm-up) and measure them all.
    #[arg(long)]
    requests: Option<u64>,
    /// Output cap sent with every chat request.
    #[arg(long, default_value_t = 20)]
    max_tokens: u64,
    /// Worker threads of the client's runtime (it shares the machine with what it measures).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Process whose CPU time and peak RSS to record over the measured window; repeatable (a
    /// gateway with several processes: their CPU and peak RSS are summed).
    #[arg(long)]
    watch_pid: Vec<u32>,
    /// Database server processes (the gateway's Postgres backends) whose CPU time to record
    /// separately; repeatable.
    #[arg(long)]
    watch_db_pid: Vec<u32>,
    /// Clock ticks per second of /proc/PID/stat (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    clk_tck: u64,
    #[arg(long)]
    out: PathBuf,
}

/// Percentiles of a sample, in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    fn of(mut v: Vec<u32>) -> Option<Self> {
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let at = |q: f64| {
            let rank = (q * v.len() as f64).ceil() as usize;
            f64::from(v[rank.clamp(1, v.len()) - 1])
        };
        Some(Percentiles {
            count: v.len() as u64,
            mean: v.iter().map(|x| f64::from(*x)).sum::<f64>() / v.len() as f64,
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: at(1.0),
        })
    }
}

/// CPU and memory of the watched process over the measured window.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ProcUse {
    pub cpu_seconds: f64,
    /// CPU seconds per wall second: 1.0 is one core busy.
    pub cores: f64,
    /// Peak RSS in the window (VmHWM after resetting it at the start; whole life if the reset
    /// was refused).
    pub rss_peak_mb: f64,
    pub hwm_reset: bool,
    /// Share of the whole machine's CPU time that was busy (everything running, not only AEX).
    pub machine_busy: f64,
    /// CPU seconds per wall second of this load client itself.
    pub client_cores: f64,
}

/// One scenario in one mode: a line of the results file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadResult {
    pub scenario: String,
    pub mode: String,
    pub kind: Kind,
    pub concurrency: usize,
    /// Open loop: the scheduled request rate (latency then counts from the scheduled send).
    #[serde(default)]
    pub rate_rps: Option<f64>,
    pub window_seconds: f64,
    pub completed: u64,
    pub ok: u64,
    pub statuses: BTreeMap<String, u64>,
    pub throughput_rps: f64,
    pub latency_us: Option<Percentiles>,
    pub ttfb_us: Option<Percentiles>,
    /// Gaps between consecutive server-sent events of a stream (jitter shows here).
    pub gap_us: Option<Percentiles>,
    /// Each stream's mean gap, first event to last over the gaps between: robust to the
    /// occasional stall of a busy machine, which bunches a few events of a few streams.
    pub stream_gap_us: Option<Percentiles>,
    pub events_per_stream: Option<f64>,
    pub peak_open_streams: Option<i64>,
    pub process: Option<ProcUse>,
    /// The watched database processes (`--watch-db-pid`), CPU only.
    #[serde(default)]
    pub db_process: Option<ProcUse>,
}

/// What one worker saw.
#[derive(Default)]
struct Tally {
    completed_in_window: u64,
    ok_in_window: u64,
    statuses: BTreeMap<String, u64>,
    latency: Vec<u32>,
    ttfb: Vec<u32>,
    gaps: Vec<u32>,
    stream_gaps: Vec<u32>,
    events: u64,
    streams: u64,
}

/// Shared by the workers of one run.
struct Plan {
    client: reqwest::Client,
    url: String,
    headers: reqwest::header::HeaderMap,
    body: Bytes,
    tokens: Vec<String>,
    next_token: AtomicUsize,
    stream: bool,
    /// Requests started before this are warm-up; completions after `end` are not counted.
    measure_from: Instant,
    end: Option<Instant>,
    budget: Option<AtomicU64>,
    open_streams: AtomicI64,
    peak_open_streams: AtomicI64,
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// What one request observed.
struct Observed {
    /// When the request was actually sent (later than scheduled when the client was behind).
    sent: Instant,
    status: String,
    ok: bool,
    ttfb: Option<Duration>,
    event_times: Vec<Instant>,
}

impl Plan {
    fn request_body(kind: Kind, model: &str, max_tokens: u64) -> Bytes {
        let body = match kind {
            Kind::Embeddings => {
                json!({"model": model, "input": "The quick brown fox jumps over the lazy dog"})
            }
            Kind::Chat | Kind::Stream => {
                let mut b = json!({
                    "model": model,
                    "messages": [{"role": "user", "content": "Say hello to the benchmark, briefly."}],
                    "max_tokens": max_tokens,
                });
                if kind == Kind::Stream {
                    // Usage is asked for both ways so that direct and governed streams carry the
                    // same events (AEX always asks the provider for it).
                    b["stream"] = json!(true);
                    b["stream_options"] = json!({"include_usage": true});
                }
                b
            }
        };
        Bytes::from(body.to_string())
    }

    /// Takes the next request, to be sent at `at`, if the run is not over by then.
    fn take(&self, at: Instant) -> bool {
        match (&self.budget, self.end) {
            (Some(left), _) => left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok(),
            (None, Some(end)) => at < end,
            (None, None) => false,
        }
    }

    async fn one(&self) -> Observed {
        let i = self.next_token.fetch_add(1, Ordering::Relaxed);
        let token = self.tokens[i % self.tokens.len()].as_str();
        let started = Instant::now();
        let sent = self
            .client
            .post(&self.url)
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .headers(self.headers.clone())
            .body(self.body.clone())
            .send()
            .await;
        let mut observed = Observed {
            sent: started,
            status: String::new(),
            ok: false,
            ttfb: None,
            event_times: Vec::new(),
        };
        let mut resp = match sent {
            Ok(r) => r,
            Err(e) => {
                observed.status = if e.is_timeout() { "timeout" } else { "error" }.into();
                return observed;
            }
        };
        observed.status = resp.status().as_u16().to_string();
        let success = resp.status().is_success();
        if !self.stream || !success {
            observed.ok = resp.bytes().await.is_ok() && success;
            return observed;
        }
        // Count events as their terminating blank line arrives; events that arrive in one read
        // arrived together.
        let mut prev = 0u8;
        let mut done = false;
        let mut opened = false;
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    let now = Instant::now();
                    if !opened {
                        opened = true;
                        observed.ttfb = Some(now.duration_since(started));
                        let open = self.open_streams.fetch_add(1, Ordering::SeqCst) + 1;
                        self.peak_open_streams.fetch_max(open, Ordering::SeqCst);
                    }
                    done |= chunk.windows(6).any(|w| w == b"[DONE]");
                    for &b in chunk.iter() {
                        if b == b'\n' && prev == b'\n' {
                            observed.event_times.push(now);
                        }
                        prev = b;
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    observed.status = "stream_cut".into();
                    break;
                }
            }
        }
        if opened {
            self.open_streams.fetch_sub(1, Ordering::SeqCst);
        }
        observed.ok = done && observed.status != "stream_cut";
        if !observed.ok && observed.status != "stream_cut" {
            observed.status = "stream_incomplete".into();
        }
        observed
    }

    /// Counts one request that started at `start` (sent, or scheduled to be) and ended at
    /// `done`, if it falls in the measured window.
    fn record(&self, t: &mut Tally, start: Instant, done: Instant, o: Observed) {
        if self.end.is_some_and(|end| done > end) || done < self.measure_from {
            return;
        }
        t.completed_in_window += 1;
        *t.statuses.entry(o.status).or_default() += 1;
        if !o.ok {
            return;
        }
        t.ok_in_window += 1;
        if start < self.measure_from {
            return;
        }
        t.latency.push(micros(done - start));
        if let Some(ttfb) = o.ttfb {
            // Open loop: the time to first byte counts from the scheduled send too.
            t.ttfb
                .push(micros(ttfb + o.sent.saturating_duration_since(start)));
            t.streams += 1;
            t.events += o.event_times.len() as u64;
            t.gaps
                .extend(o.event_times.windows(2).map(|w| micros(w[1] - w[0])));
            if let (Some(first), Some(last)) = (o.event_times.first(), o.event_times.last()) {
                let n = u32::try_from(o.event_times.len() - 1).unwrap_or(u32::MAX);
                if n > 0 {
                    t.stream_gaps.push(micros((*last - *first) / n));
                }
            }
        }
    }

    /// One closed-loop worker: requests back to back until the run is over.
    async fn worker(self: Arc<Self>) -> Tally {
        let mut t = Tally::default();
        while self.take(Instant::now()) {
            let start = Instant::now();
            let o = self.one().await;
            self.record(&mut t, start, Instant::now(), o);
        }
        t
    }

    /// The open loop: request i is due at `t0 + i / rate`, sent then whatever the earlier ones
    /// are doing (at most `cap` in flight; a request over the cap waits for a free slot), and its
    /// latency counts from when it was due.
    async fn open_loop(self: Arc<Self>, t0: Instant, rate: f64, cap: usize) -> Tally {
        let slots = Arc::new(tokio::sync::Semaphore::new(cap));
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut i: u32 = 0;
        loop {
            let due = t0 + Duration::from_secs_f64(f64::from(i) / rate);
            if !self.take(due) {
                break;
            }
            tokio::time::sleep_until(due.into()).await;
            let (plan, slots, done_tx) = (Arc::clone(&self), Arc::clone(&slots), done_tx.clone());
            tokio::spawn(async move {
                let Ok(_slot) = slots.acquire_owned().await else {
                    return;
                };
                let o = plan.one().await;
                // The receiver lives until every sender is dropped.
                let _ = done_tx.send((due, Instant::now(), o));
            });
            i = i.saturating_add(1);
        }
        drop(done_tx);
        let mut t = Tally::default();
        while let Some((due, done, o)) = done_rx.recv().await {
            self.record(&mut t, due, done, o);
        }
        t
    }
}

/// CPU ticks (user + system) of a process.
fn proc_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn proc_hwm_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// (busy, total) jiffies of the whole machine.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let v: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4)?;
    Some((total - idle, total))
}

/// A measurement of the watched processes and the machine at one instant.
struct Mark {
    at: Instant,
    /// Per watched process, in the order given (a process that has exited counts 0).
    ticks: Vec<u64>,
    own_ticks: u64,
    machine: (u64, u64),
    hwm_reset: bool,
}

fn mark(pids: &[u32], reset_hwm: bool) -> Mark {
    // Writing 5 to clear_refs resets VmHWM, so the peak is this window's.
    let hwm_reset = reset_hwm
        && pids
            .iter()
            .all(|pid| std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok());
    Mark {
        at: Instant::now(),
        ticks: pids.iter().map(|&p| proc_ticks(p).unwrap_or(0)).collect(),
        own_ticks: proc_ticks(std::process::id()).unwrap_or(0),
        machine: machine_ticks().unwrap_or((0, 0)),
        hwm_reset,
    }
}

/// CPU and peak RSS of the processes `pids` between two marks, summed over them.
fn proc_use(pids: &[u32], clk_tck: u64, from: &Mark, to: &Mark) -> ProcUse {
    let seconds = |a: u64, b: u64| b.saturating_sub(a) as f64 / clk_tck.max(1) as f64;
    // A process that exits in the window reads 0 at the end: it counts nothing, not less.
    let cpu_seconds: f64 = from
        .ticks
        .iter()
        .zip(&to.ticks)
        .map(|(&a, &b)| seconds(a, b))
        .sum();
    let wall = to.at.duration_since(from.at).as_secs_f64().max(1e-9);
    let busy = to.machine.0.saturating_sub(from.machine.0) as f64;
    let total = to.machine.1.saturating_sub(from.machine.1).max(1) as f64;
    ProcUse {
        cpu_seconds,
        cores: cpu_seconds / wall,
        rss_peak_mb: pids
            .iter()
            .map(|&p| proc_hwm_kb(p).unwrap_or(0))
            .sum::<u64>() as f64
            / 1024.0,
        hwm_reset: from.hwm_reset,
        machine_busy: busy / total,
        client_cores: seconds(from.own_ticks, to.own_ticks) / wall,
    }
}

/// The `--header 'Name: value'` options as a header map (a name given twice is sent twice).
fn parse_headers(given: &[String]) -> anyhow::Result<reqwest::header::HeaderMap> {
    let mut headers = reqwest::header::HeaderMap::new();
    for h in given {
        let Some((name, value)) = h.split_once(':') else {
            bail!("--header {h:?}: expected 'Name: value'");
        };
        headers.append(
            reqwest::header::HeaderName::from_bytes(name.trim().as_bytes())
                .with_context(|| format!("--header {h:?}: bad name"))?,
            reqwest::header::HeaderValue::from_str(value.trim())
                .with_context(|| format!("--header {h:?}: bad value"))?,
        );
    }
    Ok(headers)
}

async fn run(args: RunArgs) -> anyhow::Result<LoadResult> {
    let tokens = match &args.tokens {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading {}", path.display()))?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect(),
        None => vec!["direct".to_owned()],
    };
    if tokens.is_empty() || args.concurrency == 0 {
        bail!("need at least one token and a concurrency of at least 1");
    }
    if args.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        bail!("--rate must be a positive number of requests per second");
    }
    let headers = parse_headers(&args.headers)?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(120))
        .build()?;
    let path = match args.kind {
        Kind::Embeddings => "/embeddings",
        Kind::Chat | Kind::Stream => "/chat/completions",
    };
    let t0 = Instant::now();
    let (measure_from, end) = match args.requests {
        Some(_) => (t0, None),
        None => {
            let from = t0 + Duration::from_secs_f64(args.warmup_secs);
            (
                from,
                Some(from + Duration::from_secs_f64(args.duration_secs)),
            )
        }
    };
    let plan = Arc::new(Plan {
        client,
        url: format!("{}{path}", args.url.trim_end_matches('/')),
        headers,
        body: Plan::request_body(args.kind, &args.model, args.max_tokens),
        tokens,
        next_token: AtomicUsize::new(0),
        stream: args.kind == Kind::Stream,
        measure_from,
        end,
        budget: args.requests.map(AtomicU64::new),
        open_streams: AtomicI64::new(0),
        peak_open_streams: AtomicI64::new(0),
    });

    // The watched processes are measured over exactly the window the figures cover.
    let watched = (!args.watch_pid.is_empty())
        .then(|| watch(args.watch_pid.clone(), true, measure_from, end));
    let watched_db = (!args.watch_db_pid.is_empty())
        .then(|| watch(args.watch_db_pid.clone(), false, measure_from, end));
    let workers: Vec<_> = match args.rate {
        Some(rate) => vec![tokio::spawn(Arc::clone(&plan).open_loop(
            t0,
            rate,
            args.concurrency,
        ))],
        None => (0..args.concurrency)
            .map(|_| tokio::spawn(Arc::clone(&plan).worker()))
            .collect(),
    };
    let mut all = Tally::default();
    for w in workers {
        let t = w.await?;
        all.completed_in_window += t.completed_in_window;
        all.ok_in_window += t.ok_in_window;
        for (k, v) in t.statuses {
            *all.statuses.entry(k).or_default() += v;
        }
        all.latency.extend(t.latency);
        all.ttfb.extend(t.ttfb);
        all.gaps.extend(t.gaps);
        all.stream_gaps.extend(t.stream_gaps);
        all.events += t.events;
        all.streams += t.streams;
    }
    let finished = Instant::now();
    let process = match watched {
        Some(w) => Some(w.finish(args.clk_tck).await?),
        None => None,
    };
    let db_process = match watched_db {
        Some(w) => Some(w.finish(args.clk_tck).await?),
        None => None,
    };
    let window = end
        .unwrap_or(finished)
        .duration_since(measure_from)
        .as_secs_f64();
    let stream = args.kind == Kind::Stream;
    Ok(LoadResult {
        scenario: args.scenario,
        mode: args.mode,
        kind: args.kind,
        concurrency: args.concurrency,
        rate_rps: args.rate,
        window_seconds: window,
        completed: all.completed_in_window,
        ok: all.ok_in_window,
        statuses: all.statuses,
        throughput_rps: all.ok_in_window as f64 / window.max(1e-9),
        latency_us: Percentiles::of(all.latency),
        ttfb_us: Percentiles::of(all.ttfb),
        gap_us: Percentiles::of(all.gaps),
        stream_gap_us: Percentiles::of(all.stream_gaps),
        events_per_stream: (stream && all.streams > 0)
            .then(|| all.events as f64 / all.streams as f64),
        peak_open_streams: stream.then(|| plan.peak_open_streams.load(Ordering::SeqCst)),
        process,
        db_process,
    })
}

/// Processes being measured: marked when the window opens and, for a timed run, when it closes.
struct Watch {
    pids: Vec<u32>,
    marks: tokio::task::JoinHandle<(Mark, Option<Mark>)>,
}

fn watch(pids: Vec<u32>, reset_hwm: bool, from: Instant, end: Option<Instant>) -> Watch {
    let watched = pids.clone();
    let marks = tokio::spawn(async move {
        tokio::time::sleep_until(from.into()).await;
        let first = mark(&watched, reset_hwm);
        let last = match end {
            Some(end) => {
                tokio::time::sleep_until(end.into()).await;
                Some(mark(&watched, false))
            }
            None => None,
        };
        (first, last)
    });
    Watch { pids, marks }
}

impl Watch {
    /// What the processes used over the window (a run of N requests: until now).
    async fn finish(self, clk_tck: u64) -> anyhow::Result<ProcUse> {
        let (from, to) = self.marks.await?;
        let to = to.unwrap_or_else(|| mark(&self.pids, false));
        Ok(proc_use(&self.pids, clk_tck, &from, &to))
    }
}

async fn create_agents(
    url: &str,
    admin_token: &str,
    prefix: &str,
    count: usize,
    budget_usd: &str,
    rpm: Option<u32>,
) -> anyhow::Result<Vec<String>> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let mut tokens = Vec::with_capacity(count);
    for i in 0..count {
        let resp = client
            .post(format!("{}/admin/agents", url.trim_end_matches('/')))
            .bearer_auth(admin_token)
            .json(&json!({"name": format!("{prefix}-{i}"), "budget_usd": budget_usd, "rpm": rpm}))
            .send()
            .await?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await?;
        match body.get("token").and_then(serde_json::Value::as_str) {
            Some(token) if status.is_success() => tokens.push(token.to_owned()),
            _ => bail!("creating agent {prefix}-{i}: {status} {body}"),
        }
    }
    Ok(tokens)
}

fn read(path: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn append_line(path: &PathBuf, line: &str) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "{line}")?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let threads = match &cli.command {
        Command::Run(a) => a.threads.max(1),
        _ => 1,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    match cli.command {
        Command::Agents {
            url,
            admin_token,
            prefix,
            count,
            budget_usd,
            rpm,
            out,
        } => {
            let tokens = rt.block_on(create_agents(
                &url,
                &admin_token,
                &prefix,
                count,
                &budget_usd,
                rpm,
            ))?;
            std::fs::write(&out, tokens.join("\n") + "\n")?;
        }
        Command::Run(args) => {
            let out = args.out.clone();
            let result = rt.block_on(run(args))?;
            let mut line = serde_json::to_value(&result)?;
            line["record"] = json!("load");
            append_line(&out, &line.to_string())?;
            eprintln!(
                "  {:<14} {:<8} {:>9.0} req/s  ok {}/{}",
                result.scenario, result.mode, result.throughput_rps, result.ok, result.completed
            );
        }
        Command::Report { results } => print!("{}", report::render(&read(&results)?)?),
        Command::PeersReport { results } => {
            print!("{}", peers_table::render(&read(&results)?)?)
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_parsed_and_bad_ones_refused() {
        let given = [
            "x-portkey-provider: openai".to_owned(),
            "X-Portkey-Custom-Host:http://127.0.0.1:9/v1".to_owned(),
        ];
        let h = parse_headers(&given).expect("valid headers");
        assert_eq!(h["x-portkey-provider"], "openai");
        assert_eq!(h["x-portkey-custom-host"], "http://127.0.0.1:9/v1");
        for bad in ["no colon", "bad name: v", "x: bad\nvalue"] {
            assert!(
                parse_headers(&[bad.to_owned()]).is_err(),
                "{bad:?} accepted"
            );
        }
    }
}
