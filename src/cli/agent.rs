//! `aex agent create|list|show`.

use clap::Subcommand;
use serde_json::{json, Map, Value};

use super::client::AdminClient;
use super::{emit, Cli};

#[derive(Debug, Subcommand)]
pub enum AgentAction {
    /// Create an agent: NAME BUDGET_USD RPM. Prints its token (shown once).
    Create(Box<CreateArgs>),
    /// List agents.
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Show one agent (by name or id) with its financials.
    Show {
        agent: String,
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    pub name: String,
    /// Budget in USD, e.g. 5.00.
    pub budget_usd: String,
    /// Requests per minute.
    pub rpm: i32,
    #[arg(long)]
    pub tpm: Option<i64>,
    /// Tenant id (operator tokens only).
    #[arg(long)]
    pub tenant: Option<String>,
    #[arg(long)]
    pub allow_passthrough: bool,
    /// Allowed model aliases, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub models: Option<Vec<String>>,
    #[arg(long)]
    pub no_streaming: bool,
    #[arg(long)]
    pub no_tools: bool,
    /// Allowed tool names, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub tools: Option<Vec<String>>,
    #[arg(long)]
    pub no_function_calling: bool,
    #[arg(long)]
    pub allow_vision: bool,
    #[arg(long)]
    pub max_input_tokens: Option<u64>,
    #[arg(long)]
    pub max_output_tokens: Option<u64>,
    #[arg(long)]
    pub max_tokens_per_request: Option<u64>,
    /// Token lifetime in hours (default: no expiry).
    #[arg(long)]
    pub ttl: Option<u32>,
    #[arg(long, value_parser = ["execution", "read-only"])]
    pub scope: Option<String>,
    #[arg(long, value_parser = ["lifetime", "daily", "monthly"])]
    pub period: Option<String>,
    #[arg(long)]
    pub clamp_max_tokens: bool,
}

impl CreateArgs {
    /// The request body of `POST /admin/agents`; flags not given leave the policy field unset
    /// (inherited from the tenant).
    pub fn body(&self) -> Value {
        let mut policy = Map::new();
        let mut set = |k: &str, v: Value| {
            policy.insert(k.to_owned(), v);
        };
        if self.allow_passthrough {
            set("allow_passthrough", json!(true));
        }
        if let Some(m) = &self.models {
            set("allowed_models", json!(m));
        }
        if self.no_streaming {
            set("allow_streaming", json!(false));
        }
        if self.no_tools {
            set("allow_tools", json!(false));
        }
        if let Some(t) = &self.tools {
            set("allowed_tool_names", json!(t));
        }
        if self.no_function_calling {
            set("allow_function_calling", json!(false));
        }
        if self.allow_vision {
            set("allow_vision", json!(true));
        }
        if let Some(n) = self.max_input_tokens {
            set("max_input_tokens", json!(n));
        }
        if let Some(n) = self.max_output_tokens {
            set("max_output_tokens", json!(n));
        }
        if let Some(n) = self.max_tokens_per_request {
            set("max_tokens_per_request", json!(n));
        }
        if self.clamp_max_tokens {
            set("clamp_max_tokens", json!(true));
        }
        let mut body = json!({
            "name": self.name,
            "budget_usd": self.budget_usd,
            "rpm": self.rpm,
            "policy": policy,
        });
        let mut opt = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                body[k] = v;
            }
        };
        opt("tpm", self.tpm.map(Value::from));
        opt("token_ttl_hours", self.ttl.map(Value::from));
        opt("token_scope", self.scope.clone().map(Value::from));
        opt("period", self.period.clone().map(Value::from));
        body
    }
}

fn tenant_query(tenant: Option<&String>) -> String {
    tenant
        .map(|t| format!("?tenant_id={t}"))
        .unwrap_or_default()
}

pub async fn run(cli: &Cli, action: &AgentAction) -> anyhow::Result<()> {
    let settings = super::settings(cli)?;
    let client = AdminClient::from_settings(&settings)?;
    match action {
        AgentAction::Create(args) => {
            let created = client
                .post(
                    &format!("/admin/agents{}", tenant_query(args.tenant.as_ref())),
                    &args.body(),
                )
                .await?;
            emit(cli.json, &created, || {
                format!(
                    "agent {} created (id {})\ntoken: {}",
                    created
                        .pointer("/agent/name")
                        .and_then(Value::as_str)
                        .unwrap_or("?"),
                    created
                        .pointer("/agent/id")
                        .and_then(Value::as_str)
                        .unwrap_or("?"),
                    created.get("token").and_then(Value::as_str).unwrap_or("?"),
                )
            });
        }
        AgentAction::List { tenant } => {
            let agents = client
                .get(&format!("/admin/agents{}", tenant_query(tenant.as_ref())))
                .await?;
            emit(cli.json, &json!({"agents": agents}), || {
                let mut lines = vec![format!(
                    "{:<24} {:<14} {:>14} {:>14} {:>14}",
                    "NAME", "STATE", "BUDGET_USD", "SPENT_USD", "RESERVED_USD"
                )];
                for a in agents.as_array().into_iter().flatten() {
                    let usd = |k: &str| {
                        crate::money::MicroUsd(a.get(k).and_then(Value::as_i64).unwrap_or(0))
                            .to_string()
                    };
                    lines.push(format!(
                        "{:<24} {:<14} {:>14} {:>14} {:>14}",
                        a.get("name").and_then(Value::as_str).unwrap_or(""),
                        a.get("state").and_then(Value::as_str).unwrap_or(""),
                        usd("budget_micro_usd"),
                        usd("spent_micro_usd"),
                        usd("reserved_micro_usd"),
                    ));
                }
                lines.join("\n")
            });
        }
        AgentAction::Show { agent, tenant } => {
            let a = client
                .get(&format!(
                    "/admin/agents/{agent}{}",
                    tenant_query(tenant.as_ref())
                ))
                .await?;
            emit(cli.json, &a, || {
                serde_json::to_string_pretty(&a).unwrap_or_default()
            });
        }
    }
    Ok(())
}
