//! The agent row's rules, enforced by Postgres whatever writes the row: since
//! migrations/20261210000002 they are domains of its columns rather than CHECK constraints of
//! its table, and a write that breaks one still fails as a check violation and changes nothing.

use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn a_write_that_breaks_an_agents_rule_fails_and_changes_nothing() {
    let app = spawn_app().await;
    let agent = app.create_agent("ruled", "1.00", json!({})).await;
    let before = app.books(agent.id).await;
    for set in [
        "budget_micro_usd = -1",
        "spent_micro_usd = spent_micro_usd - 1",
        "reserved_micro_usd = -5",
        "lifetime_spent_micro_usd = -1",
        "state = 'SLEEPING'",
        "budget_period = 'weekly'",
        "rpm_limit = 0",
        "tpm_limit = -1",
        "name = '   '",
    ] {
        let error = sqlx::query(&format!("UPDATE agents SET {set} WHERE id = $1"))
            .bind(agent.id)
            .execute(&app.pool)
            .await
            .expect_err(set);
        let code = error.as_database_error().and_then(|e| e.code());
        assert_eq!(code.as_deref(), Some("23514"), "{set}: {error}");
    }
    assert_eq!(app.books(agent.id).await, before);
    app.assert_books_audit().await;
}
