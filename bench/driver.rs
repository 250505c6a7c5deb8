//! The hot path's SQL under two Postgres drivers (issue 17, item 3): AEX's admission and
//! settlement transactions, run as AEX issues them, against a scratch database, with
//!
//! - `sqlx-sqlhash`: AEX's store functions as they were when issue 17 was opened
//!   (`store::agents::get_agent` `FOR UPDATE`, then `aex_hold` and `aex_settle` as the store
//!   called them: Postgres encodes and hashes the ledger events) on
//!   a sqlx pool opened from the URL as written — five round trips for the admission (BEGIN,
//!   tenant, agent `FOR UPDATE`, `aex_hold`, COMMIT), one for the settlement (`aex_settle`);
//! - `sqlx-sqlhash-nossl`: the same with `sslmode=disable` (what TLS on loopback costs when the
//!   server has `ssl = on` and the URL says nothing, i.e. `prefer`);
//! - `tokio-postgres`: the statements of `sqlx-sqlhash`, prepared and cached, on a
//!   deadpool-postgres pool without TLS, one statement per round trip (the driver alone);
//! - `tokio-postgres-pipelined`: the same, pipelined as far as the logic allows: BEGIN, tenant and
//!   agent in one round trip, `aex_hold` and COMMIT in the next, the settlement in a third;
//! - `sqlx`: AEX's store functions before the switch of driver (`store::agents::lock_agent_chain`,
//!   `store::holds::hold`: the admission's events hashed in the replica; `aex_settle` hashing the
//!   settlement's event in SQL), on a pool opened as AEX opens it
//!   (`store::db::plain_on_loopback`) — five round trips for the admission, one for the settlement;
//! - `aex`: AEX's store functions now, on its money transactions' pool (`store::hot`):
//!   `store::holds::lock_hot` (BEGIN, tenant, agent and chain in one round trip) and
//!   `HotLock::hold` (the hold and COMMIT in the next), then `store::settlements::settle` (BEGIN
//!   and `aex_settle_books` in one round trip, the event hashed in the replica, its insert and
//!   COMMIT in the next) — two round trips each, Postgres hashing nothing.
//!
//! For each driver and concurrency it prints requests (admission + settlement) per second, the
//! mean wall time of one, and the CPU one costs Postgres (its backends' utime + stime from
//! /proc, over the measured window) and this client.
//!
//!   cargo run --release --example driver-bench -- [--seconds 5] [--concurrency 1,16,64]
//!
//! The database (`aex_driver_<pid>`) is created on the server of `--database-url` and dropped at
//! the end.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aex::domain::{AgentId, TenantId};
use aex::ledger::link::{self, AgentChainFacts, ChainTail};
use aex::store::executions::NewExecution;
use aex::store::holds::{self, HoldEvents, NewReservation};
use aex::store::hot::HotPool;
use aex::store::rate_windows::Charges;
use aex::store::settlements::{self, Charge, Settlement};
use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use uuid::Uuid;

const TENANT: &str = "00000000-0000-0000-0000-000000000001";
const FINGERPRINT: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
const RESERVED: &str = r#"{"attempt":1,"choices":1,"clamped":false,"estimate_micro_usd":14,"holds_tenant":false,"model":"bench-chat","output_cap":20,"output_tokens_bound":20,"prompt_tokens_estimate":16,"route":"/v1/chat/completions"}"#;
const DISPATCHED: &str = r#"{"attempt":1,"model":"bench-chat","output_cap":20,"output_tokens_bound":20,"provider":"mock","upstream_model":"gpt-4o-mini"}"#;
const ANSWER: &[u8] = br#"{"choices":[{"finish_reason":"stop","index":0,"message":{"content":"Hello w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12 w13 w14 w15 w16 w17 w18 w19","role":"assistant"}}],"created":1700000000,"id":"chatcmpl-mock","model":"bench-chat","object":"chat.completion","usage":{"completion_tokens":20,"prompt_tokens":10,"total_tokens":30}}"#;

// The statements of `gateway::admission::admit`, `store::agents::get_agent` (`FOR UPDATE`),
// `store::holds::hold` and `store::settlements::settle`, word for word.
const SQL_TENANT: &str =
    "SELECT budget_micro_usd IS NOT NULL OR rpm_limit IS NOT NULL OR tpm_limit IS NOT NULL, \
     default_policy FROM tenants WHERE id = $1";
const SQL_AGENT: &str =
    "SELECT id, tenant_id, name, budget_micro_usd, spent_micro_usd, reserved_micro_usd, \
     budget_period, period_started_at, rpm_limit, tpm_limit, policy, state, \
     prompt_tokens_total, completion_tokens_total, requests_total, created_at, updated_at \
     FROM agents WHERE tenant_id = $1 AND id = $2 FOR UPDATE";
const SQL_HOLD: &str =
    "SELECT aex_hold($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
     $16, $17, $18, $19, $20, $21)";
const SQL_SETTLE: &str = "SELECT estimate_micro_usd, remaining_micro_usd FROM aex_settle(\
     $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, \
     $20, $21)";

#[derive(Clone)]
struct Fixture {
    tenant: Uuid,
    replica: Uuid,
    agents: Vec<Uuid>,
}

/// One request's ids and its agent's chain.
struct Request {
    agent: Uuid,
    execution: Uuid,
    key: String,
    chain: String,
    lock_key: i64,
}

impl Request {
    fn new(agent: Uuid) -> Self {
        let execution = Uuid::now_v7();
        let chain = format!("agent:{agent}");
        Request {
            agent,
            execution,
            key: execution.to_string(),
            lock_key: aex::ledger::chain_lock_key(&chain),
            chain,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Arm {
    SqlxSqlHash,
    SqlxSqlHashNoSsl,
    TokioPg,
    TokioPgPipelined,
    Sqlx,
    Aex,
}

const ARMS: [Arm; 6] = [
    Arm::SqlxSqlHash,
    Arm::SqlxSqlHashNoSsl,
    Arm::TokioPg,
    Arm::TokioPgPipelined,
    Arm::Sqlx,
    Arm::Aex,
];

impl Arm {
    fn name(self) -> &'static str {
        match self {
            Arm::SqlxSqlHash => "sqlx-sqlhash",
            Arm::SqlxSqlHashNoSsl => "sqlx-sqlhash-nossl",
            Arm::TokioPg => "tokio-postgres",
            Arm::TokioPgPipelined => "tokio-postgres-pipelined",
            Arm::Sqlx => "sqlx",
            Arm::Aex => "aex",
        }
    }
}

enum Pool {
    Sqlx(PgPool),
    Deadpool(deadpool_postgres::Pool),
    Hot(HotPool),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let server_url = arg("--database-url")
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let seconds: f64 = arg("--seconds").map_or(Ok(5.0), |s| s.parse())?;
    let concurrency: Vec<usize> = arg("--concurrency")
        .unwrap_or_else(|| "1,16,64".to_owned())
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let arms: Vec<Arm> = match arg("--arms") {
        None => ARMS.to_vec(),
        Some(list) => list
            .split(',')
            .map(|n| {
                ARMS.into_iter()
                    .find(|a| a.name() == n)
                    .with_context(|| format!("unknown arm {n}"))
            })
            .collect::<anyhow::Result<_>>()?,
    };

    let admin = PgPool::connect(&server_url).await?;
    let db = format!("aex_driver_{}", std::process::id());
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&admin)
        .await?;
    let db_url = replace_db(&server_url, &db);
    let result = run(&db_url, &arms, &concurrency, seconds).await;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .execute(&admin)
        .await?;
    result
}

fn replace_db(url: &str, db: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

async fn run(
    db_url: &str,
    arms: &[Arm],
    concurrency: &[usize],
    seconds: f64,
) -> anyhow::Result<()> {
    let setup = PgPool::connect(db_url).await?;
    aex::store::db::migrate(&setup).await?;
    let fixture = seed(&setup, 64).await?;
    println!(
        "{:<26} {:>4} {:>9} {:>10} {:>12} {:>12} {:>5}",
        "driver", "c", "req/s", "µs/req", "pg µs/req", "client µs", "tls"
    );
    for &c in concurrency {
        for &arm in arms {
            let pool = open(arm, db_url, c).await?;
            let line = point(arm, &pool, &fixture, &setup, c, seconds).await?;
            println!("{line}");
            if let Pool::Sqlx(p) = pool {
                p.close().await;
            }
        }
    }
    setup.close().await;
    Ok(())
}

/// Agents with budgets that never refuse, each chain started as agent creation leaves it.
async fn seed(pool: &PgPool, agents: usize) -> anyhow::Result<Fixture> {
    let replica = Uuid::new_v4();
    sqlx::query("INSERT INTO replicas (id, hostname, version) VALUES ($1, 'driver', 'bench')")
        .bind(replica)
        .execute(pool)
        .await?;
    let tenant: Uuid = TENANT.parse()?;
    let mut ids = Vec::new();
    for i in 0..agents {
        let id = Uuid::new_v4();
        sqlx::query(
            "INSERT INTO agents (id, tenant_id, name, budget_micro_usd) VALUES ($1, $2, $3, 1000000000000000)",
        )
        .bind(id)
        .bind(tenant)
        .bind(format!("many-{i}"))
        .execute(pool)
        .await?;
        let mut conn = pool.begin().await?;
        aex::ledger::append(
            &mut conn,
            aex::ledger::NewEvent::for_agent(
                TenantId(tenant),
                AgentId(id),
                "agent.created",
                None,
                serde_json::json!({}),
            ),
        )
        .await?;
        conn.commit().await?;
        ids.push(id);
    }
    Ok(Fixture {
        tenant,
        replica,
        agents: ids,
    })
}

async fn open(arm: Arm, db_url: &str, c: usize) -> anyhow::Result<Pool> {
    let max = u32::try_from(c)?;
    Ok(match arm {
        Arm::Sqlx | Arm::SqlxSqlHash | Arm::SqlxSqlHashNoSsl => {
            let mut options: PgConnectOptions = db_url.parse()?;
            options = options
                .application_name(arm.name())
                .disable_statement_logging();
            match arm {
                Arm::SqlxSqlHashNoSsl => {
                    options = options.ssl_mode(sqlx::postgres::PgSslMode::Disable);
                }
                Arm::Sqlx => options = aex::store::db::plain_on_loopback(options),
                _ => {}
            }
            Pool::Sqlx(
                PgPoolOptions::new()
                    .max_connections(max)
                    .min_connections(max)
                    .test_before_acquire(false)
                    .connect_with(options)
                    .await?,
            )
        }
        Arm::Aex => {
            let settings = aex::config::DbSettings {
                max_connections: max,
                acquire_timeout_seconds: 30,
            };
            Pool::Hot(aex::store::hot::lazy_pool(db_url, &settings)?)
        }
        Arm::TokioPg | Arm::TokioPgPipelined => {
            let mut config: tokio_postgres::Config = db_url.parse()?;
            config.application_name(arm.name());
            let manager = deadpool_postgres::Manager::from_config(
                config,
                tokio_postgres::NoTls,
                deadpool_postgres::ManagerConfig {
                    recycling_method: deadpool_postgres::RecyclingMethod::Fast,
                },
            );
            Pool::Deadpool(
                deadpool_postgres::Pool::builder(manager)
                    .max_size(c)
                    .build()?,
            )
        }
    })
}

/// Warms the pool up for a second, then measures for `seconds`.
async fn point(
    arm: Arm,
    pool: &Pool,
    f: &Fixture,
    setup: &PgPool,
    c: usize,
    seconds: f64,
) -> anyhow::Result<String> {
    drive(arm, pool, f, c, 1.0).await?;
    let pids: Vec<(i32, Option<bool>)> = sqlx::query_as(
        "SELECT a.pid, s.ssl FROM pg_stat_activity a LEFT JOIN pg_stat_ssl s USING (pid) \
         WHERE a.application_name = $1 AND a.datname = current_database()",
    )
    .bind(arm.name())
    .fetch_all(setup)
    .await?;
    let tls = pids.iter().filter(|(_, s)| *s == Some(true)).count();
    let pg_before: u64 = pids.iter().map(|(p, _)| cpu_ticks(*p)).sum();
    let me_before = cpu_ticks(i32::try_from(std::process::id())?);
    let started = Instant::now();
    let (done, busy) = drive(arm, pool, f, c, seconds).await?;
    let wall = started.elapsed().as_secs_f64();
    let pg = pids.iter().map(|(p, _)| cpu_ticks(*p)).sum::<u64>() - pg_before;
    let me = cpu_ticks(i32::try_from(std::process::id())?) - me_before;
    let tick_us = 1e6 / clk_tck();
    let n = done.max(1) as f64;
    Ok(format!(
        "{:<26} {:>4} {:>9.0} {:>10.0} {:>12.0} {:>12.0} {:>2}/{:<2}",
        arm.name(),
        c,
        done as f64 / wall,
        busy.as_secs_f64() * 1e6 / n,
        pg as f64 * tick_us / n,
        me as f64 * tick_us / n,
        tls,
        pids.len()
    ))
}

fn clk_tck() -> f64 {
    // Linux's USER_HZ: /proc/PID/stat counts CPU time in these ticks.
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process, in clock ticks (0 when it is gone).
fn cpu_ticks(pid: i32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command (which may hold spaces) start at field 3, the state.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

/// `c` workers for `seconds`, each taking agent `worker mod N`; the requests done and the
/// summed wall time they took.
async fn drive(
    arm: Arm,
    pool: &Pool,
    f: &Fixture,
    c: usize,
    seconds: f64,
) -> anyhow::Result<(u64, Duration)> {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let done = Arc::new(AtomicU64::new(0));
    let busy_ns = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..c {
        let agent = f.agents[w % f.agents.len()];
        let (f, done, busy_ns) = (f.clone(), done.clone(), busy_ns.clone());
        let pool = match pool {
            Pool::Sqlx(p) => Pool::Sqlx(p.clone()),
            Pool::Deadpool(p) => Pool::Deadpool(p.clone()),
            Pool::Hot(p) => Pool::Hot(p.clone()),
        };
        workers.spawn(async move {
            while Instant::now() < deadline {
                let started = Instant::now();
                let r = Request::new(agent);
                match &pool {
                    Pool::Sqlx(p) if arm == Arm::Sqlx => sqlx_request(p, &f, &r).await?,
                    Pool::Sqlx(p) => sqlx_sqlhash_request(p, &f, &r).await?,
                    Pool::Deadpool(p) => tokio_pg_request(p, &f, &r, arm).await?,
                    Pool::Hot(p) => aex_request(p, &f, &r).await?,
                }
                let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                busy_ns.fetch_add(ns, Ordering::Relaxed);
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = workers.join_next().await {
        r??;
    }
    Ok((
        done.load(Ordering::Relaxed),
        Duration::from_nanos(busy_ns.load(Ordering::Relaxed)),
    ))
}

/// BEGIN and the tenant's read, as admission starts.
async fn begin_admission(
    pool: &PgPool,
    tenant: TenantId,
) -> anyhow::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    let mut tx = pool.begin().await?;
    let (_limited, _policy): (bool, sqlx::types::Json<serde_json::Value>) =
        sqlx::query_as(SQL_TENANT)
            .bind(tenant)
            .fetch_one(&mut *tx)
            .await?;
    Ok(tx)
}

/// One governed request's transactions through AEX's store functions as they were when issue 17
/// was opened: Postgres hashes the events.
async fn sqlx_sqlhash_request(pool: &PgPool, f: &Fixture, r: &Request) -> anyhow::Result<()> {
    let (tenant, agent) = (TenantId(f.tenant), AgentId(r.agent));
    let mut tx = begin_admission(pool, tenant).await?;
    let lock = aex::store::agents::Lock::ForUpdate;
    let row = aex::store::agents::get_agent(&mut tx, tenant, agent, lock).await?;
    anyhow::ensure!(row.remaining_micro_usd() > 14, "agent out of budget");
    let e = execution(f, r);
    sqlx::query(SQL_HOLD)
        .bind(e.id)
        .bind(e.tenant_id)
        .bind(e.agent_id)
        .bind(e.execution_key)
        .bind(e.keyed)
        .bind(e.route)
        .bind(e.fingerprint)
        .bind(e.model_alias)
        .bind(e.state)
        .bind(e.attempt)
        .bind(e.stream)
        .bind(e.replica_id)
        .bind(e.estimate_micro_usd)
        .bind(e.provider)
        .bind(Uuid::now_v7())
        .bind(false)
        .bind(0i64)
        .bind(&r.chain)
        .bind(r.lock_key)
        .bind(RESERVED)
        .bind(DISPATCHED)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    settle_in_sql(pool, f, r).await
}

/// The settlement as one autocommitted `aex_settle`, as the store called it before the switch of
/// driver.
async fn settle_in_sql(pool: &PgPool, f: &Fixture, r: &Request) -> anyhow::Result<()> {
    let s = settlement(f, r);
    let charge = s.charge.as_ref();
    let settled: Option<(i64, i64)> = sqlx::query_as(SQL_SETTLE)
        .bind(s.execution_id)
        .bind(s.attempt)
        .bind(s.tenant_id)
        .bind(s.agent_id)
        .bind(s.execution_key)
        .bind(s.chain_id)
        .bind(s.chain_lock_key)
        .bind(s.state)
        .bind(charge.map(|c| c.actual_micro_usd))
        .bind(charge.and_then(|c| c.prompt_tokens))
        .bind(charge.and_then(|c| c.completion_tokens))
        .bind(charge.map(|c| c.usage_source))
        .bind(s.reason)
        .bind(s.result.map(|r| i32::from(r.0)))
        .bind(s.result.map(|r| r.1))
        .bind(s.result.map(|r| r.2))
        .bind(s.event_type)
        .bind(sqlx::types::Json(&s.payload))
        .bind(s.model_alias)
        .bind(charge.map(|c| c.latency_ms))
        .bind(&s.rate_subjects[..])
        .fetch_optional(pool)
        .await?;
    anyhow::ensure!(settled.is_some(), "settlement found no hold");
    Ok(())
}

/// One governed request's transactions through AEX's store functions now: the replica hashes the
/// admission's events; the settlement is `aex_settle`, one statement, as before.
async fn sqlx_request(pool: &PgPool, f: &Fixture, r: &Request) -> anyhow::Result<()> {
    let (tenant, agent) = (TenantId(f.tenant), AgentId(r.agent));
    let mut tx = begin_admission(pool, tenant).await?;
    let locked =
        aex::store::agents::lock_agent_chain(&mut tx, tenant, agent, (&r.chain, r.lock_key))
            .await?;
    anyhow::ensure!(
        locked.agent.remaining_micro_usd() > 14,
        "agent out of budget"
    );
    let mut tail = ChainTail {
        seq: locked.tail_seq,
        hash: locked.tail_hash,
    };
    let facts = AgentChainFacts {
        chain_id: &r.chain,
        tenant_id: tenant,
        agent_id: agent,
        execution_id: Some(&r.key),
        ts: link::now_micros(),
    };
    let prev_hash = tail.hash.clone();
    let reserved = tail.link(&facts, "reservation.reserved", RESERVED.to_owned());
    let dispatched = tail.link(&facts, "execution.dispatched", DISPATCHED.to_owned());
    holds::hold(
        &mut tx,
        &execution(f, r),
        &reservation(),
        &HoldEvents {
            chain_id: &r.chain,
            ts: facts.ts,
            seq: reserved.seq,
            prev_hash: &prev_hash,
            reserved: (&reserved.event_hash, &reserved.payload),
            dispatched: (&dispatched.event_hash, &dispatched.payload),
        },
    )
    .await?;
    tx.commit().await?;
    settle_in_sql(pool, f, r).await
}

/// One governed request's transactions through AEX's store functions now, on its money
/// transactions' pool.
async fn aex_request(pool: &HotPool, f: &Fixture, r: &Request) -> anyhow::Result<()> {
    let (tenant, agent) = (TenantId(f.tenant), AgentId(r.agent));
    let subject = format!("agent:{}", r.agent);
    let (lock, locked) = holds::lock_hot(pool, tenant, agent, (&r.chain, r.lock_key), &subject)
        .await?
        .context("no such agent")?;
    anyhow::ensure!(!locked.tenant_limited, "the tenant has limits");
    anyhow::ensure!(
        locked.agent.remaining_micro_usd() > 14,
        "agent out of budget"
    );
    let mut tail = ChainTail {
        seq: locked.tail_seq,
        hash: locked.tail_hash,
    };
    let facts = AgentChainFacts {
        chain_id: &r.chain,
        tenant_id: tenant,
        agent_id: agent,
        execution_id: Some(&r.key),
        ts: link::now_micros(),
    };
    let prev_hash = tail.hash.clone();
    let reserved = tail.link(&facts, "reservation.reserved", RESERVED.to_owned());
    let dispatched = tail.link(&facts, "execution.dispatched", DISPATCHED.to_owned());
    lock.hold(
        &execution(f, r),
        &reservation(),
        &HoldEvents {
            chain_id: &r.chain,
            ts: facts.ts,
            seq: reserved.seq,
            prev_hash: &prev_hash,
            reserved: (&reserved.event_hash, &reserved.payload),
            dispatched: (&dispatched.event_hash, &dispatched.payload),
        },
        &Charges::default(),
    )
    .await?;
    let settled = settlements::settle(pool, &settlement(f, r), link::settlement_event).await?;
    anyhow::ensure!(settled.is_some(), "settlement found no hold");
    Ok(())
}

fn reservation() -> NewReservation {
    NewReservation {
        id: Uuid::now_v7(),
        holds_tenant: false,
        rate_tokens: 0,
    }
}

fn execution<'a>(f: &Fixture, r: &'a Request) -> NewExecution<'a> {
    NewExecution {
        id: r.execution,
        tenant_id: TenantId(f.tenant),
        agent_id: AgentId(r.agent),
        execution_key: &r.key,
        keyed: false,
        route: "/v1/chat/completions",
        fingerprint: FINGERPRINT,
        model_alias: Some("bench-chat"),
        state: "DISPATCHED",
        attempt: 1,
        stream: false,
        replica_id: Some(aex::domain::ReplicaId(f.replica)),
        estimate_micro_usd: 14,
        reason: None,
        provider: Some("mock"),
    }
}

fn settlement<'a>(f: &Fixture, r: &'a Request) -> Settlement<'a> {
    Settlement {
        execution_id: r.execution,
        attempt: 1,
        tenant_id: TenantId(f.tenant),
        agent_id: AgentId(r.agent),
        execution_key: &r.key,
        chain_id: &r.chain,
        chain_lock_key: r.lock_key,
        state: "COMMITTED",
        reason: None,
        charge: Some(Charge {
            actual_micro_usd: 14,
            prompt_tokens: Some(10),
            completion_tokens: Some(20),
            usage_source: "reported",
            latency_ms: 1,
        }),
        result: Some((200, ANSWER, false)),
        event_type: "usage.commit",
        payload: settle_payload(),
        model_alias: "bench-chat",
        rate_subjects: [format!("agent:{}", r.agent), format!("tenant:{}", f.tenant)],
        // The two-round-trip way, the one both drivers are compared on.
        predicted: None,
    }
}

fn settle_payload() -> serde_json::Value {
    serde_json::json!({"actual_micro_usd": 14, "attempt": 1, "completion_tokens": 20,
        "model": "bench-chat", "prompt_tokens": 10, "provider": "mock", "stream_end": null,
        "stream_events": null, "usage": "reported"})
}

/// The same transactions on tokio-postgres, one statement per round trip or pipelined.
async fn tokio_pg_request(
    pool: &deadpool_postgres::Pool,
    f: &Fixture,
    r: &Request,
    arm: Arm,
) -> anyhow::Result<()> {
    let client = pool.get().await?;
    let begin = client.prepare_cached("BEGIN").await?;
    let commit = client.prepare_cached("COMMIT").await?;
    let tenant_st = client.prepare_cached(SQL_TENANT).await?;
    let agent_st = client.prepare_cached(SQL_AGENT).await?;
    let hold_st = client.prepare_cached(SQL_HOLD).await?;
    let settle_st = client.prepare_cached(SQL_SETTLE).await?;
    let reservation = Uuid::now_v7();
    let chain = r.chain.as_str();
    let hold_params: [&(dyn tokio_postgres::types::ToSql + Sync); 21] = [
        &r.execution,
        &f.tenant,
        &r.agent,
        &r.key,
        &false,
        &"/v1/chat/completions",
        &FINGERPRINT,
        &"bench-chat",
        &"DISPATCHED",
        &1i32,
        &false,
        &f.replica,
        &14i64,
        &"mock",
        &reservation,
        &false,
        &0i64,
        &chain,
        &r.lock_key,
        &RESERVED,
        &DISPATCHED,
    ];
    let tenant_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&f.tenant];
    let agent_params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&f.tenant, &r.agent];
    let agent_row = if arm == Arm::TokioPgPipelined {
        let (_, _tenant, agent) = tokio::try_join!(
            client.execute(&begin, &[]),
            client.query_one(&tenant_st, &tenant_params),
            client.query_one(&agent_st, &agent_params),
        )?;
        agent
    } else {
        client.execute(&begin, &[]).await?;
        client.query_one(&tenant_st, &tenant_params).await?;
        client.query_one(&agent_st, &agent_params).await?
    };
    let budget: i64 = agent_row.try_get("budget_micro_usd")?;
    let spent: i64 = agent_row.try_get("spent_micro_usd")?;
    let reserved: i64 = agent_row.try_get("reserved_micro_usd")?;
    let _policy: serde_json::Value = agent_row.try_get("policy")?;
    let _at: chrono::DateTime<chrono::Utc> = agent_row.try_get("period_started_at")?;
    anyhow::ensure!(budget - spent - reserved > 14, "agent out of budget");
    if arm == Arm::TokioPgPipelined {
        tokio::try_join!(
            client.execute(&hold_st, &hold_params),
            client.execute(&commit, &[])
        )?;
    } else {
        client.execute(&hold_st, &hold_params).await?;
        client.execute(&commit, &[]).await?;
    }
    let subjects = [format!("agent:{}", r.agent), format!("tenant:{}", f.tenant)];
    let payload = settle_payload();
    let settle_params: [&(dyn tokio_postgres::types::ToSql + Sync); 21] = [
        &r.execution,
        &1i32,
        &f.tenant,
        &r.agent,
        &r.key,
        &chain,
        &r.lock_key,
        &"COMMITTED",
        &Some(14i64),
        &Some(10i64),
        &Some(20i64),
        &Some("reported"),
        &None::<&str>,
        &Some(200i32),
        &Some(ANSWER),
        &Some(false),
        &"usage.commit",
        &payload,
        &"bench-chat",
        &Some(1i64),
        &&subjects[..],
    ];
    let settled = client.query_opt(&settle_st, &settle_params).await?;
    anyhow::ensure!(settled.is_some(), "settlement found no hold");
    Ok(())
}
