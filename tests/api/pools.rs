//! The money transactions' pool (`store::hot`) gives idle connections back to Postgres, whose
//! connection slots every replica shares, as the sqlx pool does.

use std::time::Duration;

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
