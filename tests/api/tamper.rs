//! Tampering with the ledger, every way a superuser could: each is detected and the first bad
//! event named — by `aex ledger verify`, by the checkpoint, and by an independent verifier of the
//! export.

use aex::ledger::{checkpoint, verify};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{hello, poll, spawn_app, TestApp, PATIENCE};

/// Runs `sql` with the append-only trigger disabled, as a superuser could.
async fn tamper(app: &TestApp, sql: &str) {
    let mut tx = app.pool.begin().await.unwrap();
    sqlx::query("ALTER TABLE event_log DISABLE TRIGGER event_log_append_only")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::raw_sql(sql).execute(&mut *tx).await.unwrap();
    sqlx::query("ALTER TABLE event_log ENABLE TRIGGER event_log_append_only")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// An app with one agent, three committed calls and a checkpoint of that state.
async fn ledger_with_history() -> (TestApp, uuid::Uuid) {
    let app = spawn_app().await;
    let agent = app.create_agent("audited", "1.00", json!({})).await;
    for _ in 0..3 {
        assert_eq!(
            app.chat(&agent.token, hello()).await.status(),
            StatusCode::OK
        );
    }
    let key = &app.settings.auth.keys["k1"];
    assert!(checkpoint::write(&app.pool, "k1", key, None)
        .await
        .unwrap()
        .is_some());
    (app, agent.id)
}

async fn first_bad(app: &TestApp) -> (i64, String, i64, String) {
    let report = verify::verify_all(&app.pool, &app.settings.auth.keys)
        .await
        .unwrap();
    assert!(!report.ok, "tampering went unnoticed");
    let bad = report.first_bad_event.expect("a bad event is named");
    (bad.id, bad.chain_id, bad.seq, bad.problem)
}

fn chain(agent: uuid::Uuid) -> String {
    format!("agent:{agent}")
}

#[tokio::test]
async fn an_untouched_ledger_verifies_fully_and_since_the_checkpoint() {
    let (app, agent) = ledger_with_history().await;
    let keys = &app.settings.auth.keys;
    let full = verify::verify_all(&app.pool, keys).await.unwrap();
    assert!(full.ok, "{full:?}");
    assert!(full.checkpoint.as_ref().unwrap().signature_ok);
    let token = app.create_agent("later", "1.00", json!({})).await.token;
    assert_eq!(app.chat(&token, hello()).await.status(), StatusCode::OK);
    let since = verify::verify_since_checkpoint(&app.pool, keys)
        .await
        .unwrap();
    assert!(since.ok, "{since:?}");
    // Everything after the checkpoint is new, so a walk of the whole ledger would count more
    // events than the full verification above did.
    assert!(
        since.events < full.events,
        "only the tail since the checkpoint is read: {} of {}",
        since.events,
        full.events
    );
    let _ = agent;
}

#[tokio::test]
async fn a_deleted_event_is_a_sequence_gap() {
    let (app, agent) = ledger_with_history().await;
    tamper(
        &app,
        &format!(
            "DELETE FROM event_log WHERE chain_id = '{}' AND seq = 4",
            chain(agent)
        ),
    )
    .await;
    let (_, chain_id, seq, problem) = first_bad(&app).await;
    assert_eq!((chain_id, seq), (chain(agent), 5));
    assert!(problem.contains("sequence gap"), "{problem}");
}

#[tokio::test]
async fn a_truncated_tail_is_caught_by_the_checkpoint() {
    let (app, agent) = ledger_with_history().await;
    let last: i64 = sqlx::query_scalar("SELECT max(seq) FROM event_log WHERE chain_id = $1")
        .bind(chain(agent))
        .fetch_one(&app.pool)
        .await
        .unwrap();
    // Cutting the last two events leaves a chain that links perfectly: only the checkpoint knows.
    tamper(
        &app,
        &format!(
            "DELETE FROM event_log WHERE chain_id = '{}' AND seq > {}",
            chain(agent),
            last - 2
        ),
    )
    .await;
    let (_, chain_id, seq, problem) = first_bad(&app).await;
    assert_eq!((chain_id, seq), (chain(agent), last - 2));
    assert!(problem.contains("tail was removed"), "{problem}");
    let since = verify::verify_since_checkpoint(&app.pool, &app.settings.auth.keys)
        .await
        .unwrap();
    assert!(!since.ok, "the startup gate's partial walk sees it too");
}

#[tokio::test]
async fn a_reordered_sequence_is_detected() {
    let (app, agent) = ledger_with_history().await;
    let c = chain(agent);
    tamper(
        &app,
        &format!(
            "UPDATE event_log SET seq = 1000004 WHERE chain_id = '{c}' AND seq = 4; \
             UPDATE event_log SET seq = 4 WHERE chain_id = '{c}' AND seq = 5; \
             UPDATE event_log SET seq = 5 WHERE chain_id = '{c}' AND seq = 1000004"
        ),
    )
    .await;
    let (_, chain_id, seq, _) = first_bad(&app).await;
    assert_eq!((chain_id, seq), (c, 4));
}

#[tokio::test]
async fn with_two_chains_broken_the_one_first_in_chain_order_is_named_whatever_the_append_order() {
    let app = spawn_app().await;
    let first = app.create_agent("first", "1.00", json!({})).await;
    let second = app.create_agent("second", "1.00", json!({})).await;
    for token in [&first.token, &second.token, &first.token] {
        assert_eq!(app.chat(token, hello()).await.status(), StatusCode::OK);
    }
    let (early, late) = if chain(first.id) < chain(second.id) {
        (chain(first.id), chain(second.id))
    } else {
        (chain(second.id), chain(first.id))
    };
    // The chain that sorts first is broken at its newest event, appended after the other chain's
    // first event, which is broken too: a walk in append order meets the other one first.
    let newest: i64 = sqlx::query_scalar("SELECT max(seq) FROM event_log WHERE chain_id = $1")
        .bind(&early)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    tamper(
        &app,
        &format!(
            "UPDATE event_log SET payload = '{{}}' WHERE (chain_id = '{early}' AND seq = {newest}) \
             OR (chain_id = '{late}' AND seq = 1)"
        ),
    )
    .await;
    let (_, chain_id, seq, problem) = first_bad(&app).await;
    assert_eq!((chain_id, seq), (early, newest));
    assert!(problem.contains("edited"), "{problem}");
}

#[tokio::test]
async fn renumbered_ids_are_not_tampering_with_what_is_hashed() {
    let (app, agent) = ledger_with_history().await;
    // Ids are not hashed: moving an event's id past its successors changes the order the rows
    // are read in, not the chain.
    tamper(
        &app,
        &format!(
            "UPDATE event_log SET id = id + 1000000 WHERE chain_id = '{}' AND seq = 2",
            chain(agent)
        ),
    )
    .await;
    let report = verify::verify_all(&app.pool, &app.settings.auth.keys)
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
}

#[tokio::test]
async fn a_deleted_chain_is_named_by_the_checkpoint() {
    let (app, agent) = ledger_with_history().await;
    tamper(
        &app,
        &format!("DELETE FROM event_log WHERE chain_id = '{}'", chain(agent)),
    )
    .await;
    let (id, chain_id, seq, problem) = first_bad(&app).await;
    assert_eq!((id, chain_id, seq), (0, chain(agent), 0));
    assert!(problem.contains("whole chain is missing"), "{problem}");
}

#[tokio::test]
async fn a_forged_checkpoint_is_rejected() {
    let (app, _) = ledger_with_history().await;
    // Checkpoints are append-only too: only the owner, its triggers disabled, can edit one.
    sqlx::raw_sql(
        "BEGIN; ALTER TABLE ledger_checkpoints DISABLE TRIGGER USER; \
         UPDATE ledger_checkpoints SET heads = replace(heads, '\"seq\":', '\"seq\":1'); \
         ALTER TABLE ledger_checkpoints ENABLE TRIGGER USER; COMMIT;",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let report = verify::verify_all(&app.pool, &app.settings.auth.keys)
        .await
        .unwrap();
    assert!(!report.ok);
    assert!(report
        .checkpoint
        .unwrap()
        .problem
        .unwrap()
        .contains("invalid signature"));
}

#[tokio::test]
async fn the_export_reverifies_independently_and_catches_an_edit() {
    let (app, agent) = ledger_with_history().await;
    let export = |name: &str| {
        let path = app.dir.path().join(name);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_aex"))
            .args(["ledger", "export", "--output"])
            .arg(&path)
            .env("AEX_HOME", app.dir.path())
            .env("AEX_DATABASE_URL", &app.db.url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        path
    };
    let check = |path: &std::path::Path| {
        std::process::Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/deploy/verify-ledger-export.py"
            ))
            .arg(path)
            .env("AEX_CHECKPOINT_KEY", app.settings.auth.keys["k1"].expose())
            .output()
            .unwrap()
    };
    let good = check(&export("good.jsonl"));
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stdout)
    );
    assert!(String::from_utf8_lossy(&good.stdout).contains("ledger export OK"));

    let id: i64 = sqlx::query_scalar("SELECT id FROM event_log WHERE chain_id = $1 AND seq = 3")
        .bind(chain(agent))
        .fetch_one(&app.pool)
        .await
        .unwrap();
    tamper(
        &app,
        &format!("UPDATE event_log SET payload = '{{}}' WHERE id = {id}"),
    )
    .await;
    let bad = check(&export("bad.jsonl"));
    assert!(!bad.status.success());
    let said = String::from_utf8_lossy(&bad.stdout).into_owned();
    assert!(
        said.contains(&format!("event {id}")) && said.contains("edited"),
        "{said}"
    );
}

#[tokio::test]
async fn a_server_whose_ledger_fails_the_startup_gate_stays_unready() {
    let (app, agent) = ledger_with_history().await;
    tamper(&app, &format!("UPDATE event_log SET payload = '{{}}' WHERE chain_id = '{}' AND seq = (SELECT max(seq) FROM event_log WHERE chain_id = '{}')", chain(agent), chain(agent))).await;
    let server = aex::server::start(app.settings.clone()).await.unwrap();
    let base = format!("http://{}", server.addr);
    // Never ready, from the first answer on, until the gate has run and failed.
    poll("the startup gate to fail", PATIENCE, || async {
        let r = app.http.get(format!("{base}/ready")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let ready: Value = r.json().await.unwrap();
        (ready["checks"]["startup_gate"] == false).then_some(())
    })
    .await;
    let r = app.http.get(format!("{base}/ready")).send().await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "a failed gate is final"
    );
    server.shutdown();
    server.wait().await.unwrap();
}
