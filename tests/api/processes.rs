//! Server processes: `aex serve` run as the real binary on one database, killed with SIGKILL or
//! stopped with SIGTERM while requests are in flight. Afterwards the books are checked by SQL and
//! by the binary itself (`aex audit`, `aex ledger verify`).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aex::auth::TokenSigner;
use aex::dev::mock_upstream::{self, MockControl};
use aex::domain::Scope;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::process::{Child, Command};
use uuid::Uuid;

use crate::helpers::{create_agent_at, hello, models_toml, poll, wait_ready, Agent, TestDb, KEY};
use crate::load::{committed_keys, keys_with, Load};

/// Server processes on one fresh database, the mock provider they share, and the environment
/// every `aex` command of the test runs with.
pub(crate) struct Fleet {
    env: Vec<(String, String)>,
    mock: Arc<MockControl>,
    pub(crate) operator_token: String,
    pub(crate) pool: PgPool,
    dir: tempfile::TempDir,
    // Dropped last: the processes (killed on drop) and the pool go first.
    _db: TestDb,
}

/// One `aex serve` process, killed when dropped.
pub(crate) struct Server {
    child: Child,
    pub(crate) base: String,
    replica_id: Uuid,
}

impl Fleet {
    pub(crate) async fn new(settings: &[(&str, &str)]) -> Fleet {
        let db = TestDb::create().await;
        let mock = Arc::new(MockControl::default());
        let mock_addr = mock_upstream::spawn("127.0.0.1:0".parse().unwrap(), Arc::clone(&mock))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let models = dir.path().join("models.toml");
        std::fs::write(&models, models_toml(mock_addr)).unwrap();
        let mut env: Vec<(String, String)> = [
            ("AEX_HOME", dir.path().to_str().unwrap()),
            ("AEX_CONFIG", dir.path().join("none.toml").to_str().unwrap()),
            ("AEX_DATABASE_URL", &db.url),
            ("AEX_MODELS_FILE", models.to_str().unwrap()),
            ("AEX_LISTEN", "127.0.0.1:0"),
            ("AEX_LOG_FORMAT", "json"),
            ("AEX_AUTH__KEYS__K1", KEY),
            ("AEX_DB__MAX_CONNECTIONS", "10"),
            ("AEX_CLUSTER__HEARTBEAT_SECONDS", "1"),
            ("AEX_CLUSTER__STALE_AFTER_SECONDS", "3"),
            ("AEX_CLUSTER__RECONCILE_INTERVAL_SECONDS", "1"),
            ("AEX_CLUSTER__DRAIN_TIMEOUT_SECONDS", "10"),
            ("RUST_LOG", "info,sqlx=warn"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        for (k, v) in settings {
            env.retain(|(key, _)| key != k);
            env.push(((*k).to_owned(), (*v).to_owned()));
        }
        let mut auth = aex::config::AuthSettings::default();
        auth.keys.insert("k1".into(), aex::config::Secret::new(KEY));
        let operator_token = TokenSigner::new(&auth)
            .issue("test-operator", Scope::Operator, None, None, None)
            .unwrap()
            .token;
        let pool = PgPool::connect(&db.url).await.unwrap();
        Fleet {
            env,
            mock,
            operator_token,
            pool,
            dir,
            _db: db,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_aex"));
        cmd.args(args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Starts `aex serve` and waits until it is ready; its address and replica id come from its
    /// own "aex listening" log line.
    pub(crate) async fn spawn(&self, name: &str) -> Server {
        let log_path = self.dir.path().join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = self
            .command(&["serve"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let listening = poll(
            &format!("{name} to log its address"),
            Duration::from_secs(30),
            || {
                let exited = child.try_wait().unwrap();
                let text = std::fs::read_to_string(&log_path).unwrap_or_default();
                assert!(exited.is_none(), "{name} exited ({exited:?}):\n{text}");
                let line = text
                    .lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .find(|v| v["message"] == "aex listening");
                async move { line }
            },
        )
        .await;
        let base = format!("http://{}", listening["addr"].as_str().unwrap());
        wait_ready(&reqwest::Client::new(), &base).await;
        Server {
            child,
            base,
            replica_id: listening["replica_id"].as_str().unwrap().parse().unwrap(),
        }
    }

    async fn create_agent(&self, server: &Server, name: &str) -> Agent {
        create_agent_at(&server.base, &self.operator_token, name, "10.00", json!({})).await
    }

    /// Runs `aex --json ARGS`; the exit status and the JSON object it printed.
    async fn aex(&self, args: &[&str]) -> (bool, Value) {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.command(&all).output().await.unwrap();
        let value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            json!({"stdout": String::from_utf8_lossy(&out.stdout), "stderr": String::from_utf8_lossy(&out.stderr)})
        });
        (out.status.success(), value)
    }

    /// Executions by state: all of them, or only those admitted by `replica`.
    async fn states(&self, replica: Option<Uuid>) -> BTreeMap<String, i64> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT state, count(*) FROM executions \
             WHERE $1::uuid IS NULL OR replica_id = $1 GROUP BY state",
        )
        .bind(replica)
        .fetch_all(&self.pool)
        .await
        .unwrap();
        rows.into_iter().collect()
    }

    async fn in_flight(&self, replica: Option<Uuid>) -> i64 {
        let s = self.states(replica).await;
        ["RESERVING", "RESERVED", "DISPATCHED"]
            .iter()
            .filter_map(|k| s.get(*k))
            .sum()
    }

    /// The books are exact: nothing in flight or held, no execution committed twice, every
    /// agent's spent the sum of its committed costs, and `aex audit` and `aex ledger verify` pass.
    async fn assert_books(&self) {
        assert_eq!(
            self.in_flight(None).await,
            0,
            "{:?}",
            self.states(None).await
        );
        let (held, doubles, wrong_spent): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM agents WHERE reserved_micro_usd <> 0), \
                    (SELECT count(*) FROM (SELECT execution_id FROM reservations \
                       WHERE state = 'COMMITTED' GROUP BY execution_id HAVING count(*) > 1) d), \
                    (SELECT count(*) FROM agents a WHERE spent_micro_usd <> \
                       (SELECT COALESCE(sum(actual_micro_usd), 0) FROM reservations r \
                        WHERE r.agent_id = a.id AND r.state = 'COMMITTED'))",
        )
        .fetch_one(&self.pool)
        .await
        .unwrap();
        assert_eq!((held, doubles, wrong_spent), (0, 0, 0));
        let (ok, audit) = self.aex(&["audit"]).await;
        assert!(ok && audit["ok"] == true, "aex audit: {audit:#}");
        let (ok, verify) = self.aex(&["ledger", "verify", "--local"]).await;
        assert!(ok && verify["ok"] == true, "aex ledger verify: {verify:#}");
        assert!(verify["events"].as_u64().unwrap() > 0);
    }
}

impl Server {
    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id().unwrap() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        tokio::time::timeout(within, self.child.wait())
            .await
            .expect("the process exits in time")
            .unwrap()
    }
}

#[tokio::test]
async fn killing_one_of_two_server_processes_loses_nothing_and_charges_nothing_twice() {
    let fleet = Fleet::new(&[]).await;
    fleet.mock.delay_ms.store(800, Ordering::SeqCst);
    let mut a = fleet.spawn("a").await;
    let b = fleet.spawn("b").await;
    let mut agents = Vec::new();
    for i in 0..4 {
        agents.push(fleet.create_agent(&a, &format!("burst-{i}")).await);
    }
    let mut load = Load::default();
    for i in 0..12 {
        let (server, base) = if i % 2 == 0 {
            (0, &a.base)
        } else {
            (1, &b.base)
        };
        load.add_worker(
            base,
            server,
            &agents[i % agents.len()].token,
            &format!("w{i}"),
        );
    }

    // Both servers have finished calls and `a` is in the middle of some.
    poll("a to be busy", Duration::from_secs(30), || async {
        let s = fleet.states(Some(a.replica_id)).await;
        let busy = s.get("COMMITTED").copied().unwrap_or(0) >= 6
            && fleet.in_flight(Some(a.replica_id)).await >= 3;
        busy.then_some(())
    })
    .await;
    a.signal(nix::sys::signal::Signal::SIGKILL);
    let killed_at = Instant::now();
    a.wait_exit(Duration::from_secs(10)).await;
    let at_kill: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT id, state FROM executions WHERE replica_id = $1 \
         AND state IN ('RESERVING', 'RESERVED', 'DISPATCHED')",
    )
    .bind(a.replica_id)
    .fetch_all(&fleet.pool)
    .await
    .unwrap();
    assert!(!at_kill.is_empty());

    // `b` notices `a` is gone and settles its executions while it keeps serving.
    poll(
        "a's executions to be reconciled",
        Duration::from_secs(30),
        || async { (fleet.in_flight(Some(a.replica_id)).await == 0).then_some(()) },
    )
    .await;
    let reconciled_after = killed_at.elapsed();
    let outcomes = load.stop().await;

    let ids: Vec<Uuid> = at_kill.iter().map(|(id, _)| *id).collect();
    let ended: Vec<(String, String)> = sqlx::query_as(
        "SELECT state, COALESCE(reason, '') FROM executions WHERE id = ANY($1) ORDER BY state",
    )
    .bind(&ids)
    .fetch_all(&fleet.pool)
    .await
    .unwrap();
    let count = |pairs: Vec<String>| {
        pairs
            .into_iter()
            .fold(BTreeMap::<String, usize>::new(), |mut m, k| {
                *m.entry(k).or_default() += 1;
                m
            })
    };
    let served_after_kill = outcomes
        .iter()
        .filter(|o| o.server == 1 && o.status == 200 && o.at > killed_at)
        .count();
    println!(
        "kill -9: {} executions of the killed server in flight {:?}; ended {:?}; reconciled {:.1} s after the kill; \
         the other server answered {served_after_kill} requests meanwhile; clients of the killed one saw {} connections cut",
        at_kill.len(),
        count(at_kill.iter().map(|(_, s)| s.clone()).collect()),
        count(ended.iter().map(|(s, r)| format!("{s} {r}")).collect()),
        reconciled_after.as_secs_f64(),
        outcomes.iter().filter(|o| o.server == 0 && o.status == 0).count(),
    );
    for (state, reason) in &ended {
        let expected = match state.as_str() {
            "FAILED" => ["replica_lost", "replica_lost_while_reserving"].contains(&reason.as_str()),
            "RELEASED" => reason == "replica_lost_before_dispatch",
            _ => false,
        };
        assert!(expected, "an orphan ended {state} {reason}");
    }
    assert!(served_after_kill > 0, "the surviving server kept serving");

    // Every 200 is a committed execution. The only other commits are calls the killed server
    // settled in the instant before its answer could be written: the provider did that work.
    let committed = committed_keys(&fleet.pool).await;
    let answered = keys_with(&outcomes, 200);
    let cut = keys_with(&outcomes, 0);
    assert!(answered.is_subset(&committed));
    assert!(committed.difference(&answered).all(|k| cut.contains(k)));
    assert!(outcomes.iter().all(|o| [0, 200].contains(&o.status)));
    fleet.assert_books().await;
}

/// `/ready` of a draining server: 503 with `draining: true`.
async fn ready_is_draining(base: &str) -> Option<()> {
    let resp = reqwest::get(format!("{base}/ready")).await.ok()?;
    let status = resp.status();
    let v: Value = resp.json().await.ok()?;
    (status == 503 && v["ready"] == false && v["checks"]["draining"] == true).then_some(())
}

async fn stopped_at(fleet: &Fleet, replica: Uuid) -> Option<chrono::DateTime<chrono::Utc>> {
    sqlx::query_scalar("SELECT stopped_at FROM replicas WHERE id = $1")
        .bind(replica)
        .fetch_one(&fleet.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests_refuses_new_ones_and_exits_zero() {
    // A grace of 4 s, for the test to see the server draining before its listener closes, and
    // calls that take 8 s, still running when it has closed (the drain timeout is 10 s).
    let fleet = Fleet::new(&[("AEX_CLUSTER__DRAIN_GRACE_SECONDS", "4")]).await;
    fleet.mock.delay_ms.store(8_000, Ordering::SeqCst);
    let mut server = fleet.spawn("s").await;
    let agent = fleet.create_agent(&server, "drained").await;
    let in_flight: Vec<_> = (0..6)
        .map(|i| {
            let (base, token) = (server.base.clone(), agent.token.clone());
            tokio::spawn(async move {
                let resp = reqwest::Client::new()
                    .post(format!("{base}/v1/chat/completions"))
                    .bearer_auth(token)
                    .header("Idempotency-Key", format!("drain-{i}"))
                    .json(&hello())
                    .send()
                    .await
                    .unwrap();
                (resp.status().as_u16(), resp.text().await.unwrap())
            })
        })
        .collect();
    poll(
        "six calls at the provider",
        Duration::from_secs(20),
        || async { (fleet.states(None).await.get("DISPATCHED") == Some(&6)).then_some(()) },
    )
    .await;

    server.signal(nix::sys::signal::Signal::SIGTERM);
    // Bounded by the grace: after it, /ready does not answer at all.
    poll("/ready to say draining", Duration::from_secs(4), || {
        ready_is_draining(&server.base)
    })
    .await;
    // During the grace the listener still accepts, and refuses new work without writing it.
    let refused = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", server.base))
        .bearer_auth(&agent.token)
        .json(&hello())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    // Then it closes: new connections are refused while the six calls are still running.
    let addr = server.base.trim_start_matches("http://").to_owned();
    poll("the listener to close", Duration::from_secs(10), || {
        let addr = addr.clone();
        async move {
            tokio::net::TcpStream::connect(addr)
                .await
                .is_err()
                .then_some(())
        }
    })
    .await;
    assert_eq!(
        fleet.in_flight(None).await,
        6,
        "the calls are still running"
    );

    for call in in_flight {
        let (status, body) = call.await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let exit = server.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(exit.code(), Some(0));
    assert!(stopped_at(&fleet, server.replica_id).await.is_some());
    assert_eq!(
        fleet.states(None).await,
        BTreeMap::from([("COMMITTED".to_owned(), 6)])
    );
    fleet.assert_books().await;
}

#[tokio::test]
async fn a_stream_longer_than_the_drain_timeout_is_cut_and_charged_for_what_it_delivered() {
    let fleet = Fleet::new(&[("AEX_CLUSTER__DRAIN_TIMEOUT_SECONDS", "2")]).await;
    fleet.mock.completion_tokens.store(200, Ordering::SeqCst);
    // 100 chunks 300 ms apart: the stream alone would run 30 s.
    fleet.mock.chunks.store(100, Ordering::SeqCst);
    fleet.mock.chunk_delay_ms.store(300, Ordering::SeqCst);
    let mut server = fleet.spawn("s").await;
    let agent = fleet.create_agent(&server, "streamer").await;
    let mut body = hello();
    body["stream"] = json!(true);
    let (base, token) = (server.base.clone(), agent.token.clone());
    let client = tokio::spawn(async move {
        let resp = reqwest::Client::new()
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        // The body ends when the server cuts the stream: keep what arrived.
        let mut text = Vec::new();
        let mut resp = resp;
        while let Ok(Some(chunk)) = resp.chunk().await {
            text.extend_from_slice(&chunk);
        }
        String::from_utf8_lossy(&text).into_owned()
    });
    poll("the stream to flow", Duration::from_secs(20), || async {
        (fleet.mock.chunks_sent.load(Ordering::SeqCst) >= 5).then_some(())
    })
    .await;

    server.signal(nix::sys::signal::Signal::SIGTERM);
    let signalled = Instant::now();
    let exit = server.wait_exit(Duration::from_secs(25)).await;
    let took = signalled.elapsed();
    assert_eq!(exit.code(), Some(0));
    // Generous for a loaded machine, and still well short of the stream's own end: the exit
    // came from the drain timeout (2 s), not from the stream finishing.
    assert!(
        took < Duration::from_secs(20),
        "drain timeout 2 s, exited after {took:?}"
    );
    assert!(fleet.mock.chunks_sent.load(Ordering::SeqCst) < 100);
    let received = client.await.unwrap();
    assert!(received.contains("chat.completion.chunk") && !received.contains("[DONE]"));

    let (state, payload): (String, String) = sqlx::query_as(
        "SELECT e.state, l.payload FROM executions e JOIN event_log l \
         ON l.execution_id = e.execution_key AND l.event_type = 'usage.commit' \
         WHERE e.agent_id = $1",
    )
    .bind(agent.id)
    .fetch_one(&fleet.pool)
    .await
    .unwrap();
    let commit: Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(state, "COMMITTED");
    assert_eq!(commit["stream_end"], "server_draining");
    assert_eq!(commit["usage"], "estimated");
    let completion = commit["completion_tokens"].as_u64().unwrap();
    assert!(
        completion > 0 && completion < 200,
        "charged for what was delivered: {commit}"
    );
    assert!(stopped_at(&fleet, server.replica_id).await.is_some());
    fleet.assert_books().await;
}

/// The descriptor-starvation attack of issue 15 on a real process: a replica allowed 400 open
/// files, 500 sockets opened and left idle. The connection cap keeps the replica's descriptors
/// for its database and its answers, the idle timeout frees the slots, and `/health` and a
/// governed call are still answered.
#[tokio::test]
async fn five_hundred_idle_sockets_do_not_starve_a_replica_limited_to_400_descriptors() {
    let fleet = Fleet::new(&[
        ("AEX_SERVER__MAX_CONNECTIONS", "100"),
        ("AEX_SERVER__IDLE_TIMEOUT_SECONDS", "1"),
        ("AEX_SERVER__HEADER_READ_TIMEOUT_SECONDS", "1"),
    ])
    .await;
    let server = fleet.spawn("s").await;
    let agent = fleet.create_agent(&server, "neighbour").await;
    let pid = server.child.id().unwrap().to_string();
    let limited = std::process::Command::new("prlimit")
        .args(["--pid", &pid, "--nofile=400:400"])
        .status()
        .unwrap();
    assert!(limited.success(), "prlimit failed");

    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut idle = Vec::new();
    for _ in 0..500 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(90))
        .build()
        .unwrap();
    let health = http
        .get(format!("{}/health", server.base))
        .send()
        .await
        .expect("/health answers past 500 idle sockets");
    assert_eq!(health.status(), 200);
    let call = http
        .post(format!("{}/v1/chat/completions", server.base))
        .bearer_auth(&agent.token)
        .json(&hello())
        .send()
        .await
        .expect("a governed call is answered past 500 idle sockets");
    assert_eq!(
        call.status(),
        200,
        "{}",
        call.text().await.unwrap_or_default()
    );
    drop(idle);
    fleet.assert_books().await;
}
