//! Rows of the money transactions' pool (`store::hot`) decoded into the store's row types, as
//! sqlx's `FromRow` decodes them on the other pool.

use std::str::FromStr;

use sqlx::types::Json;
use tokio_postgres::Row;

use super::agents::AgentRow;
use super::hot::pg_error;
use crate::domain::{AgentId, TenantId};

/// A text column decoded into its enum; an unknown value is a decoding error.
fn text_enum<T: FromStr>(row: &Row, column: &str) -> Result<T, sqlx::Error> {
    let text: &str = row.try_get(column).map_err(pg_error)?;
    text.parse().map_err(|_| sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: format!("unknown value {text:?}").into(),
    })
}

/// The columns of `agents::agent_columns!()`, by name.
pub fn agent_row(row: &Row) -> Result<AgentRow, sqlx::Error> {
    let get = |e| pg_error(e);
    Ok(AgentRow {
        id: AgentId(row.try_get("id").map_err(get)?),
        tenant_id: TenantId(row.try_get("tenant_id").map_err(get)?),
        name: row.try_get("name").map_err(get)?,
        budget_micro_usd: row.try_get("budget_micro_usd").map_err(get)?,
        spent_micro_usd: row.try_get("spent_micro_usd").map_err(get)?,
        reserved_micro_usd: row.try_get("reserved_micro_usd").map_err(get)?,
        budget_period: text_enum(row, "budget_period")?,
        period_started_at: row.try_get("period_started_at").map_err(get)?,
        rpm_limit: row.try_get("rpm_limit").map_err(get)?,
        tpm_limit: row.try_get("tpm_limit").map_err(get)?,
        policy: Json(row.try_get("policy").map_err(get)?),
        state: text_enum(row, "state")?,
        prompt_tokens_total: row.try_get("prompt_tokens_total").map_err(get)?,
        completion_tokens_total: row.try_get("completion_tokens_total").map_err(get)?,
        requests_total: row.try_get("requests_total").map_err(get)?,
        created_at: row.try_get("created_at").map_err(get)?,
        updated_at: row.try_get("updated_at").map_err(get)?,
    })
}
