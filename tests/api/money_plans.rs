//! The money path looks its rows up by key, whatever Postgres's statistics say
//! (migrations/20261210000001). On a new database (tables empty, never analyzed) the planner
//! used to settle a hold by scanning the partial index of open holds (whose entries outlive the
//! holds until vacuum: every settled hold since) or, without it, the whole table; a plpgsql
//! function keeps that plan for as long as its connection lives. Proven by what the settlement
//! functions scanned in a transaction of this test's own (`pg_stat_get_xact_*`), on the same
//! empty-table database where the planner chose those scans.

use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::helpers::spawn_app;
use crate::settle_batch::{committing, held, owner};

/// `(sequential scans of table, index scans of each of its indexes)` in this transaction.
async fn scans(conn: &mut PgConnection, table: &str) -> (i64, Vec<(String, i64)>) {
    let seq: i64 = sqlx::query_scalar("SELECT pg_stat_get_xact_numscans($1::regclass)")
        .bind(table)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    let indexes = sqlx::query_as(
        "SELECT c.relname::text, pg_stat_get_xact_numscans(i.indexrelid) \
         FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         WHERE i.indrelid = $1::regclass ORDER BY 1",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    (seq, indexes)
}

#[tokio::test]
async fn settlement_finds_its_hold_by_key_on_a_new_database() {
    let app = spawn_app().await;
    let a = app.create_agent("keyed", "1.00", json!({})).await;
    let who = owner(&app, a.id).await;
    let lone = committing(held(&app, who, "lone", 1_000).await, 500);
    let pair = [
        committing(held(&app, who, "pair-1", 1_000).await, 500),
        committing(held(&app, who, "pair-2", 1_000).await, 500),
    ];

    let mut tx = app.pool.begin().await.unwrap();
    let (tenant, agent) = who;
    let (chain, lock_key) = (&lone.chain_id, lone.chain_lock_key);
    let settled: Option<i64> = sqlx::query_scalar(
        "SELECT estimate_micro_usd FROM aex_settle_books($1, 1, $2, $3, $4, $5, $6, \
         'COMMITTED', 500, 10, 20, 'reported', NULL, 200, '\\x7b7d', false, 'usage.commit', \
         'gpt-4o-mini', 5, $7)",
    )
    .bind(lone.execution_id)
    .bind(tenant.0)
    .bind(agent.0)
    .bind(&lone.execution_key)
    .bind(chain)
    .bind(lock_key)
    .bind(&lone.rate_subjects[..])
    .fetch_optional(&mut *tx)
    .await
    .unwrap();
    assert_eq!(settled, Some(1_000), "the lone hold settles");

    let ids: Vec<Uuid> = pair.iter().map(|j| j.execution_id).collect();
    let keys: Vec<String> = pair.iter().map(|j| j.execution_key.clone()).collect();
    let settled: Vec<i32> = sqlx::query_scalar(
        "SELECT member FROM aex_settle_batch($1, '{1,1}', ARRAY[$2, $2]::uuid[], \
         ARRAY[$3, $3]::uuid[], $4, ARRAY[$5, $5], ARRAY[$6, $6]::bigint[], \
         '{COMMITTED,COMMITTED}', '{500,500}', '{10,10}', '{20,20}', '{reported,reported}', \
         '{NULL,NULL}', '{200,200}', ARRAY['\\x7b7d', '\\x7b7d']::bytea[], '{f,f}', \
         '{usage.commit,usage.commit}', '{gpt-4o-mini,gpt-4o-mini}', '{5,5}', \
         ARRAY[$7, $7], ARRAY[$8, $8])",
    )
    .bind(&ids)
    .bind(tenant.0)
    .bind(agent.0)
    .bind(&keys)
    .bind(chain)
    .bind(lock_key)
    .bind(&lone.rate_subjects[0])
    .bind(&lone.rate_subjects[1])
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    assert_eq!(settled, vec![1, 2], "the batch settles both holds");

    // Three compare-and-sets, each one lookup of the unique key: no other index of the
    // reservations, no scan of the table.
    let (seq, indexes) = scans(&mut tx, "reservations").await;
    assert_eq!(seq, 0, "no sequential scan of reservations");
    for (index, n) in &indexes {
        match index.as_str() {
            "reservations_one_per_attempt" => assert_eq!(*n, 3, "{indexes:?}"),
            _ => assert_eq!(*n, 0, "{index} was scanned: {indexes:?}"),
        }
    }
    for table in ["agents", "executions", "event_log", "tenants"] {
        let (seq, indexes) = scans(&mut tx, table).await;
        assert_eq!(seq, 0, "a sequential scan of {table}: {indexes:?}");
    }
    tx.rollback().await.unwrap();
}

/// The functions the replica calls for money, and those they call (migrations/20261210000001).
const MONEY_FUNCTIONS: [&str; 8] = [
    "aex_lock_agent_chains",
    "aex_hold_batch",
    "aex_settle_batch",
    "aex_settle_books",
    "aex_settle_linked",
    "aex_lock_agent_chain",
    "aex_hold_hashed",
    "aex_upsert_execution",
];

#[tokio::test]
async fn every_money_function_is_planned_without_scans() {
    // A migration that replaces one of them (CREATE OR REPLACE) must state the settings again:
    // a replaced function keeps only the ones its new definition states.
    let app = spawn_app().await;
    let unpinned: Vec<String> = sqlx::query_scalar(
        "SELECT p.oid::regprocedure::text FROM pg_proc p \
         WHERE p.proname = ANY ($1) \
           AND NOT (p.proconfig @> ARRAY['enable_seqscan=off', 'enable_bitmapscan=off', \
                                         'enable_hashjoin=off', 'enable_mergejoin=off']) \
         ORDER BY 1",
    )
    .bind(&MONEY_FUNCTIONS[..])
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(unpinned.is_empty(), "planned with scans: {unpinned:?}");
    let functions: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_proc WHERE proname = ANY ($1)")
            .bind(&MONEY_FUNCTIONS[..])
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(functions, 9, "the money functions (aex_hold_batch twice)");
}
