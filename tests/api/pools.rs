//! The money transactions' pool (`store::hot`) gives idle connections back to Postgres, whose
//! connection slots every replica shares, as the sqlx pool does; and its cached plans read the
//! books by index however small the tables were when they were planned.

use std::time::Duration;

use futures::StreamExt;

use aex::config::DbSettings;
use aex::store::hot;
use sqlx::PgPool;

use crate::helpers::{admin_database_url, poll, TestDb, PATIENCE};

/// The backends connected to `db` (whichever pool opened them), seen from another connection.
async fn backends(admin: &PgPool, db: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'aex'",
    )
    .bind(db)
    .fetch_one(admin)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_money_pool_closes_only_connections_idle_past_the_limit() {
    let db = TestDb::create().await;
    let admin = PgPool::connect(&admin_database_url()).await.unwrap();
    let pool = hot::lazy_pool(&db.url, &DbSettings::default()).unwrap();

    // Two connections at once, then both back in the pool.
    let (a, b) = tokio::join!(pool.get(), pool.get());
    drop((a.unwrap(), b.unwrap()));
    assert_eq!(backends(&admin, &db.name).await, 2);

    // Just used: a minute's limit keeps them.
    assert_eq!(pool.close_idle(Duration::from_secs(60)), 0);
    assert_eq!(backends(&admin, &db.name).await, 2);

    // Past the limit: closed, and Postgres's slots are free again.
    assert_eq!(pool.close_idle(Duration::ZERO), 2);
    poll(
        "the closed connections' backends to end",
        PATIENCE,
        || async { (backends(&admin, &db.name).await == 0).then_some(()) },
    )
    .await;

    // The pool still serves: a new connection is opened on demand.
    drop(pool.get().await.unwrap());
    assert_eq!(backends(&admin, &db.name).await, 1);
    drop(pool);
    admin.close().await;
}

/// `(seq_scan, idx_scan)` of each of `tables`, as Postgres's statistics have them now.
async fn scans(pool: &PgPool, tables: &[&str]) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    for table in tables {
        out.push(
            sqlx::query_as(
                "SELECT seq_scan, COALESCE(idx_scan, 0) FROM pg_stat_user_tables \
                 WHERE relname = $1",
            )
            .bind(table)
            .fetch_one(pool)
            .await
            .unwrap(),
        );
    }
    out
}

#[tokio::test]
async fn calls_read_the_books_by_index_however_small_the_tables_were_when_planned() {
    let app = crate::helpers::spawn_app().await;
    let mut agents = Vec::new();
    for i in 0..4 {
        let policy = serde_json::json!({"rpm": 100000});
        agents.push(
            app.create_agent(&format!("busy-{i}"), "1000.00", policy)
                .await,
        );
    }
    // The tables every admission reads, all of a page or two: a plan cached now scans them whole,
    // and would go on doing so as they grow (the money pool plans with sequential scans off).
    let tables = ["agents", "tenants", "rate_windows"];
    let before = scans(&app.pool, &tables).await;
    let calls = (0..400).map(|i| {
        let app = &app;
        let token = agents[i % 4].token.clone();
        async move { app.chat(&token, crate::helpers::hello()).await.status() }
    });
    let statuses: Vec<_> = futures::stream::iter(calls)
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| s.is_success()));
    // Statistics reach the shared view once a backend has been idle a while.
    let after = poll("the calls' reads in the statistics", PATIENCE, || async {
        let after = scans(&app.pool, &tables).await;
        (after[0].1 >= before[0].1 + 400).then_some(after)
    })
    .await;
    let whole: i64 = after.iter().zip(&before).map(|(a, b)| a.0 - b.0).sum();
    // What is left is the background's (sampler, reconciler, the admin reads), not the calls':
    // before, the calls' cached plans scanned these tables about 250 times.
    assert!(whole < 40, "{whole} scans of whole tables for 400 calls");
}
