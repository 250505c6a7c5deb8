//! `aex tenant create|list|show|update`, through the admin API (operator token).

use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};

use super::agent::set_opt;
use super::client::{AdminClient, Query};
use super::{emit, emit_list, emit_object, text, usd, Cli};

#[derive(Debug, Subcommand)]
pub enum TenantAction {
    /// Create a tenant.
    Create {
        name: String,
        /// A budget every agent of the tenant also draws from, in USD (default: none).
        #[arg(long)]
        budget: Option<String>,
        #[arg(long)]
        rpm: Option<i32>,
        #[arg(long)]
        tpm: Option<i64>,
        /// Default policy (JSON object) the tenant's agents inherit.
        #[arg(long)]
        policy: Option<String>,
    },
    /// List tenants.
    List,
    /// Show one tenant (by name or id) with its books.
    Show { tenant: String },
    /// Change a tenant's name, budget, limits or default policy.
    Update {
        tenant: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        budget: Option<String>,
        /// Remove the tenant budget.
        #[arg(long, conflicts_with = "budget")]
        no_budget: bool,
        #[arg(long)]
        rpm: Option<i32>,
        #[arg(long)]
        tpm: Option<i64>,
        /// A JSON merge patch of the default policy, e.g. '{"allow_vision": true}'.
        #[arg(long)]
        policy_patch: Option<String>,
    },
}

fn json_arg(flag: &str, text: Option<&String>) -> anyhow::Result<Option<Value>> {
    text.map(|t| {
        serde_json::from_str::<Value>(t)
            .ok()
            .filter(Value::is_object)
            .ok_or_else(|| anyhow::anyhow!("{flag} must be a JSON object"))
    })
    .transpose()
}

pub async fn run(cli: &Cli, action: &TenantAction) -> anyhow::Result<()> {
    let settings = super::settings(cli)?;
    let client = AdminClient::from_settings(&settings)?;
    let none = Query::new();
    match action {
        TenantAction::Create {
            name,
            budget,
            rpm,
            tpm,
            policy,
        } => {
            let mut body = json!({"name": name});
            set_opt(&mut body, "budget_usd", budget.clone().map(Value::from));
            set_opt(&mut body, "rpm", rpm.map(Value::from));
            set_opt(&mut body, "tpm", tpm.map(Value::from));
            set_opt(
                &mut body,
                "default_policy",
                json_arg("--policy", policy.as_ref())?,
            );
            let t = client.post(&["admin", "tenants"], &none, &body).await?;
            emit(cli.json, &t, || {
                format!(
                    "tenant {} created (id {})",
                    text(&t, "name"),
                    text(&t, "id")
                )
            });
        }
        TenantAction::List => {
            let list = client.get(&["admin", "tenants"], &none).await?;
            let header = format!(
                "{:<36} {:<24} {:>14} {:>14}",
                "ID", "NAME", "BUDGET_USD", "SPENT_USD"
            );
            emit_list(cli.json, "tenants", &list, &header, |t| {
                format!(
                    "{:<36} {:<24} {:>14} {:>14}",
                    text(t, "id"),
                    text(t, "name"),
                    usd(t, "budget_micro_usd"),
                    usd(t, "spent_micro_usd")
                )
            });
        }
        TenantAction::Show { tenant } => {
            emit_object(
                cli.json,
                &client.get(&["admin", "tenants", tenant], &none).await?,
            );
        }
        TenantAction::Update {
            tenant,
            name,
            budget,
            no_budget,
            rpm,
            tpm,
            policy_patch,
        } => {
            let mut body = json!({});
            set_opt(&mut body, "name", name.clone().map(Value::from));
            set_opt(&mut body, "budget_usd", budget.clone().map(Value::from));
            set_opt(&mut body, "budget_usd", no_budget.then_some(Value::Null));
            set_opt(&mut body, "rpm", rpm.map(Value::from));
            set_opt(&mut body, "tpm", tpm.map(Value::from));
            let patch = json_arg("--policy-patch", policy_patch.as_ref())?;
            set_opt(&mut body, "default_policy", patch);
            let path = ["admin", "tenants", tenant.as_str()];
            let t = client
                .call(Method::PATCH, &path, &none, Some(&body))
                .await?;
            emit(cli.json, &t, || {
                format!("tenant {} updated", text(&t, "name"))
            });
        }
    }
    Ok(())
}
