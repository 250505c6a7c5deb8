//! Tamper evidence and the replay fold.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{hello, poll, spawn_app, PATIENCE};

#[tokio::test]
async fn an_edited_event_is_detected_and_named_by_aex_ledger_verify() {
    let app = spawn_app().await;
    let agent = app.create_agent("victim", "1.00", json!({})).await;
    assert_eq!(
        app.chat(&agent.token, hello()).await.status(),
        StatusCode::OK
    );

    let verify = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_aex"))
            .args(["ledger", "verify", "--local", "--json"])
            .env("AEX_HOME", app.dir.path())
            .env("AEX_DATABASE_URL", &app.db.url)
            .output()
            .unwrap()
    };
    let ok = verify();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    // The append-only trigger refuses an edit...
    let refused =
        sqlx::query("UPDATE event_log SET payload = '{}' WHERE event_type = 'usage.commit'")
            .execute(&app.pool)
            .await;
    assert!(refused.is_err(), "the trigger must refuse UPDATE");
    assert!(sqlx::query("DELETE FROM event_log")
        .execute(&app.pool)
        .await
        .is_err());

    // ...so a superuser disables it to forge the bill.
    let id: i64 = sqlx::query_scalar("SELECT id FROM event_log WHERE event_type = 'usage.commit'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    app.forge_event(id, "\"actual_micro_usd\":[0-9]+", "\"actual_micro_usd\":1")
        .await;

    let out = verify();
    assert!(!out.status.success(), "verification must fail");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(
        report["first_bad_event"]["id"], id,
        "names the edited event"
    );
    assert!(report["first_bad_event"]["problem"]
        .as_str()
        .unwrap()
        .contains("edited"));

    // The admin replay sees it too.
    let replay: Value = app
        .op(reqwest::Method::GET, "/admin/replay", None, StatusCode::OK)
        .await;
    assert_eq!(replay["ok"], false);
    assert_eq!(replay["ledger"]["first_bad_event"]["id"], id);
}

#[tokio::test]
async fn replay_rebuilds_the_books_from_the_ledger_and_shows_a_timeline() {
    let app = spawn_app().await;
    let agent = app.create_agent("folded", "1.00", json!({})).await;
    for i in 0..3 {
        let key = format!("k-{i}");
        app.post(
            "/v1/chat/completions",
            &agent.token,
            hello(),
            &[("Idempotency-Key", &key)],
        )
        .await;
    }
    let replay: Value = app
        .op(reqwest::Method::GET, "/admin/replay", None, StatusCode::OK)
        .await;
    assert_eq!(replay["ok"], true, "{replay}");
    let row = replay["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "folded")
        .unwrap()
        .clone();
    let (spent, reserved, _) = app.books(agent.id).await;
    assert_eq!(row["ledger"]["spent_micro_usd"], spent);
    assert_eq!(row["ledger"]["reserved_micro_usd"], reserved);
    assert!(spent > 0);

    let timeline: Value = app
        .op(
            reqwest::Method::GET,
            "/admin/replay?execution_id=k-1",
            None,
            StatusCode::OK,
        )
        .await;
    let types: Vec<&str> = timeline
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        vec![
            "reservation.reserved",
            "execution.dispatched",
            "usage.commit"
        ]
    );
}

/// The database's plpgsql copy of the canonical encoding (`aex_ledger_hash`) against the golden
/// vectors that pin the source of truth, the Rust encoder (src/ledger/encoding.rs); the
/// functions' comments (migration 20261207800001) name this test.
#[tokio::test]
async fn the_databases_append_function_hashes_the_golden_vectors_as_recorded() {
    let db = crate::helpers::TestDb::create().await;
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    aex::store::db::migrate(&pool).await.unwrap();
    let vectors: Vec<Value> =
        serde_json::from_str(include_str!("../vectors/ledger_v1.json")).unwrap();
    for v in vectors {
        let ts = chrono::DateTime::parse_from_rfc3339(v["ts"].as_str().unwrap()).unwrap();
        let uuid = |k: &str| v[k].as_str().map(|s| s.parse::<uuid::Uuid>().unwrap());
        let hash: String =
            sqlx::query_scalar("SELECT aex_ledger_hash($1, $2, $3, $4, $5, $6, $7, $8, $9)")
                .bind(v["chain_id"].as_str())
                .bind(v["seq"].as_i64())
                .bind(v["prev_hash"].as_str())
                .bind(v["event_type"].as_str())
                .bind(uuid("tenant_id"))
                .bind(uuid("agent_id"))
                .bind(v["execution_id"].as_str())
                .bind(ts)
                .bind(v["payload"].as_str())
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(hash, v["event_hash"].as_str().unwrap(), "{v}");
    }
    let comment: Option<String> = sqlx::query_scalar(
        "SELECT obj_description('aex_ledger_hash(text, bigint, text, text, uuid, uuid, text, \
         timestamptz, text)'::regprocedure, 'pg_proc')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        comment.is_some_and(|c| c.contains("source of truth")),
        "aex_ledger_hash says where the source of truth is"
    );
    pool.close().await;
}

#[tokio::test]
async fn a_running_server_writes_signed_checkpoints_of_new_events_periodically() {
    let app = crate::helpers::spawn_app_with(|s| s.ledger.checkpoint_interval_seconds = 1).await;
    let agent = app.create_agent("checkpointed", "1.00", json!({})).await;
    let head_of_chain = || async {
        let checkpoint: Option<(i64, String)> =
            sqlx::query_as("SELECT id, heads FROM ledger_checkpoints ORDER BY id DESC LIMIT 1")
                .fetch_optional(&app.pool)
                .await
                .unwrap();
        let seq: i64 = sqlx::query_scalar("SELECT max(seq) FROM event_log WHERE agent_id = $1")
            .bind(agent.id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        checkpoint.filter(|(_, heads)| {
            let heads: Value = serde_json::from_str(heads).unwrap();
            heads[format!("agent:{}", agent.id)]["seq"] == seq
        })
    };
    for _ in 0..2 {
        assert_eq!(
            app.chat(&agent.token, hello()).await.status(),
            StatusCode::OK
        );
        poll("a checkpoint of the chain's head", PATIENCE, head_of_chain).await;
    }
    let report = aex::ledger::verify::verify_all(&app.pool, &app.settings.auth.keys)
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
    let checkpoint = report.checkpoint.unwrap();
    assert!(
        checkpoint.signature_ok && checkpoint.chains >= 1,
        "{checkpoint:?}"
    );
}
