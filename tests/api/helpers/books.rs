//! The books as the database holds them: balances, execution states and ledger events read back,
//! waits for what a settlement writes after the client has its answer, the full audit, and the
//! forgeries tamper tests need.

use serde_json::Value;

use super::poll::{poll, PATIENCE};
use super::server::TestApp;

/// The cost the gateway must charge for a response's usage, at gpt-4o-mini's prices.
pub fn mini_cost(usage: &Value) -> i64 {
    let p = usage["prompt_tokens"].as_i64().expect("prompt_tokens");
    let c = usage["completion_tokens"]
        .as_i64()
        .expect("completion_tokens");
    (p * 150_000 + 999_999) / 1_000_000 + (c * 600_000 + 999_999) / 1_000_000
}

impl TestApp {
    /// `(spent, reserved, budget)` of an agent, read from the database.
    pub async fn books(&self, agent: uuid::Uuid) -> (i64, i64, i64) {
        sqlx::query_as("SELECT spent_micro_usd, reserved_micro_usd, budget_micro_usd FROM agents WHERE id = $1")
            .bind(agent)
            .fetch_one(&self.pool)
            .await
            .expect("agent books")
    }

    pub async fn execution_states(&self, agent: uuid::Uuid) -> Vec<String> {
        sqlx::query_scalar("SELECT state FROM executions WHERE agent_id = $1 ORDER BY created_at")
            .bind(agent)
            .fetch_all(&self.pool)
            .await
            .expect("states")
    }

    /// Waits until an agent's execution states (oldest first) are `expected`: for an execution
    /// that moves on its own time (in flight, or settled after its client went away).
    pub async fn await_execution_states(&self, agent: uuid::Uuid, expected: &[&str]) {
        let what = format!("the executions of agent {agent} to be {expected:?}");
        poll(&what, PATIENCE, || async {
            (self.execution_states(agent).await == expected).then_some(())
        })
        .await;
    }

    pub async fn event_types(&self, agent: uuid::Uuid) -> Vec<String> {
        sqlx::query_scalar("SELECT event_type FROM event_log WHERE agent_id = $1 ORDER BY seq")
            .bind(agent)
            .fetch_all(&self.pool)
            .await
            .expect("events")
    }

    /// A count (or any one `bigint`) read from the test database.
    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .expect("count query")
    }

    /// The latest ledger event of one type for an execution, its payload parsed.
    pub async fn ledger_event(&self, execution_id: &str, event_type: &str) -> Value {
        self.find_ledger_event(execution_id, event_type)
            .await
            .unwrap_or_else(|| panic!("no {event_type} event for {execution_id}"))
    }

    /// Waits for a ledger event that is written after the client has its answer (or has gone
    /// away), and returns its payload.
    pub async fn await_ledger_event(&self, execution_id: &str, event_type: &str) -> Value {
        let what = format!("a {event_type} event for {execution_id}");
        poll(&what, PATIENCE, || {
            self.find_ledger_event(execution_id, event_type)
        })
        .await
    }

    async fn find_ledger_event(&self, execution_id: &str, event_type: &str) -> Option<Value> {
        let payload: Option<String> = sqlx::query_scalar(
            "SELECT payload FROM event_log WHERE execution_id = $1 AND event_type = $2 \
             ORDER BY id DESC LIMIT 1",
        )
        .bind(execution_id)
        .bind(event_type)
        .fetch_optional(&self.pool)
        .await
        .expect("ledger event query");
        payload.map(|p| serde_json::from_str(&p).expect("canonical JSON"))
    }

    /// The ledger events of one type, payloads parsed, in append order.
    /// Waits until nothing is held any more: a stream's settlement may still be committing when
    /// its client has read the last byte.
    pub async fn settled(&self) {
        poll("every reservation to be settled", PATIENCE, || async {
            let held = self
                .count("SELECT count(*) FROM reservations WHERE state = 'RESERVED'")
                .await;
            (held == 0).then_some(())
        })
        .await;
    }

    /// The payload of the newest `usage.commit`, once nothing is held any more.
    pub async fn last_commit(&self) -> Value {
        self.settled().await;
        self.ledger_payloads("usage.commit")
            .await
            .pop()
            .expect("a commit")
    }

    pub async fn ledger_payloads(&self, event_type: &str) -> Vec<Value> {
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT payload FROM event_log WHERE event_type = $1 ORDER BY id")
                .bind(event_type)
                .fetch_all(&self.pool)
                .await
                .expect("ledger payloads");
        rows.iter()
            .map(|p| serde_json::from_str(p).expect("canonical JSON"))
            .collect()
    }

    /// Runs the full audit (SPEC §15) and fails the test on any violation.
    pub async fn assert_books_audit(&self) {
        let report = aex::admin::audit::audit(&self.pool, 5, &self.settings.auth.keys)
            .await
            .expect("audit runs");
        assert!(
            report.ok,
            "audit failed: {}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
        self.assert_payloads_canonical().await;
    }

    /// Every ledger payload is stored in the one canonical form, whether the gateway wrote it or
    /// a SQL function (settlement) composed it: re-serialising it changes nothing.
    pub async fn assert_payloads_canonical(&self) {
        let payloads: Vec<(i64, String)> = sqlx::query_as("SELECT id, payload FROM event_log")
            .fetch_all(&self.pool)
            .await
            .expect("payloads");
        for (id, text) in payloads {
            let value: Value = serde_json::from_str(&text).expect("payload is JSON");
            assert_eq!(
                aex::ledger::encoding::canonical_json(&value),
                text,
                "event {id}"
            );
        }
    }

    /// Rewrites an event's stored payload (`regexp_replace(payload, pattern, replacement)`) as a
    /// superuser would to forge the books: with the append-only trigger disabled for the edit.
    pub async fn forge_event(&self, id: i64, pattern: &str, replacement: &str) {
        let mut tx = self.pool.begin().await.expect("begin");
        sqlx::query("ALTER TABLE event_log DISABLE TRIGGER event_log_append_only")
            .execute(&mut *tx)
            .await
            .expect("disable trigger");
        sqlx::query("UPDATE event_log SET payload = regexp_replace(payload, $2, $3) WHERE id = $1")
            .bind(id)
            .bind(pattern)
            .bind(replacement)
            .execute(&mut *tx)
            .await
            .expect("edit event");
        sqlx::query("ALTER TABLE event_log ENABLE TRIGGER event_log_append_only")
            .execute(&mut *tx)
            .await
            .expect("enable trigger");
        tx.commit().await.expect("commit");
    }
}
