//! `aex agent create|list|show|update|state|topup|rotate-token|revoke-token|decommission`, all
//! through the admin API.

use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Map, Value};

use super::client::AdminClient;
use super::{emit, emit_list, emit_object, text, usd, Cli};

#[derive(Debug, Subcommand)]
pub enum AgentAction {
    /// Create an agent: NAME BUDGET_USD RPM. Prints its token (shown once).
    Create(Box<CreateArgs>),
    /// List agents.
    List {
        #[arg(long)]
        tenant: Option<String>,
        /// Only agents in this state (READY, PAUSED, …).
        #[arg(long)]
        state: Option<String>,
        /// Only agents whose name contains this text.
        #[arg(long)]
        name_contains: Option<String>,
        #[arg(long)]
        limit: Option<i64>,
        /// The next page: agents after this id.
        #[arg(long)]
        after: Option<String>,
    },
    /// Show one agent (by name or id) with its financials.
    Show {
        agent: String,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Change an agent's limits, budget period or policy.
    Update(Box<UpdateArgs>),
    /// Move an agent to another lifecycle state (READY, PAUSED, QUARANTINED, …).
    State {
        agent: String,
        state: String,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Add USD to an agent's budget (or, with --set, set the budget to it).
    Topup {
        agent: String,
        usd: String,
        #[arg(long)]
        set: bool,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke the agent's tokens and issue a new one (printed once).
    RotateToken {
        agent: String,
        #[arg(long, value_parser = ["execution", "read-only"])]
        scope: Option<String>,
        /// Lifetime of the new token in hours (default: no expiry).
        #[arg(long)]
        ttl: Option<u32>,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke the agent's tokens (all, or the one given with --token).
    RevokeToken {
        agent: String,
        /// Only this token id.
        #[arg(long)]
        token: Option<String>,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Decommission an agent: it never executes again and its tokens are revoked.
    Decommission {
        agent: String,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
    },
}

/// Policy flags shared by `create` and `update`; flags not given leave the field unset.
#[derive(Debug, clap::Args)]
pub struct PolicyFlags {
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
    #[arg(long)]
    pub clamp_max_tokens: bool,
}

impl PolicyFlags {
    /// The policy fields these flags set.
    pub fn fields(&self) -> Map<String, Value> {
        let flags = [
            (
                "allow_passthrough",
                self.allow_passthrough.then_some(json!(true)),
            ),
            ("allowed_models", self.models.as_ref().map(|m| json!(m))),
            ("allow_streaming", self.no_streaming.then_some(json!(false))),
            ("allow_tools", self.no_tools.then_some(json!(false))),
            ("allowed_tool_names", self.tools.as_ref().map(|t| json!(t))),
            (
                "allow_function_calling",
                self.no_function_calling.then_some(json!(false)),
            ),
            ("allow_vision", self.allow_vision.then_some(json!(true))),
            ("max_input_tokens", self.max_input_tokens.map(Value::from)),
            ("max_output_tokens", self.max_output_tokens.map(Value::from)),
            (
                "max_tokens_per_request",
                self.max_tokens_per_request.map(Value::from),
            ),
            (
                "clamp_max_tokens",
                self.clamp_max_tokens.then_some(json!(true)),
            ),
        ];
        flags
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
            .collect()
    }
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
    /// Tenant (name or id; operator tokens only).
    #[arg(long)]
    pub tenant: Option<String>,
    #[command(flatten)]
    pub policy: PolicyFlags,
    /// Token lifetime in hours (default: no expiry).
    #[arg(long)]
    pub ttl: Option<u32>,
    #[arg(long, value_parser = ["execution", "read-only"])]
    pub scope: Option<String>,
    #[arg(long, value_parser = ["lifetime", "daily", "monthly"])]
    pub period: Option<String>,
}

impl CreateArgs {
    /// The request body of `POST /admin/agents`.
    pub fn body(&self) -> Value {
        let mut body = json!({
            "name": self.name,
            "budget_usd": self.budget_usd,
            "rpm": self.rpm,
            "policy": self.policy.fields(),
        });
        set_opt(&mut body, "tpm", self.tpm.map(Value::from));
        set_opt(&mut body, "token_ttl_hours", self.ttl.map(Value::from));
        set_opt(
            &mut body,
            "token_scope",
            self.scope.clone().map(Value::from),
        );
        set_opt(&mut body, "period", self.period.clone().map(Value::from));
        body
    }
}

#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    pub agent: String,
    #[arg(long)]
    pub rpm: Option<i32>,
    #[arg(long)]
    pub tpm: Option<i64>,
    /// Remove the requests-per-minute limit.
    #[arg(long, conflicts_with = "rpm")]
    pub no_rpm: bool,
    /// Remove the tokens-per-minute limit.
    #[arg(long, conflicts_with = "tpm")]
    pub no_tpm: bool,
    #[arg(long, value_parser = ["lifetime", "daily", "monthly"])]
    pub period: Option<String>,
    #[command(flatten)]
    pub policy: PolicyFlags,
    /// A JSON merge patch of the policy, e.g. '{"allowed_models": null}'.
    #[arg(long)]
    pub policy_patch: Option<String>,
    #[arg(long)]
    pub tenant: Option<String>,
}

impl UpdateArgs {
    /// The request body of `PATCH /admin/agents/{agent}`.
    pub fn body(&self) -> anyhow::Result<Value> {
        let mut policy = self.policy.fields();
        if let Some(patch) = &self.policy_patch {
            let patch: Map<String, Value> = serde_json::from_str(patch)
                .map_err(|e| anyhow::anyhow!("--policy-patch is not a JSON object: {e}"))?;
            policy.extend(patch);
        }
        let mut body = json!({});
        set_opt(&mut body, "rpm", self.rpm.map(Value::from));
        set_opt(&mut body, "tpm", self.tpm.map(Value::from));
        set_opt(&mut body, "rpm", self.no_rpm.then_some(Value::Null));
        set_opt(&mut body, "tpm", self.no_tpm.then_some(Value::Null));
        set_opt(&mut body, "period", self.period.clone().map(Value::from));
        set_opt(
            &mut body,
            "policy",
            (!policy.is_empty()).then_some(Value::Object(policy)),
        );
        Ok(body)
    }
}

/// Sets `body[key]` when `value` is given.
pub fn set_opt(body: &mut Value, key: &str, value: Option<Value>) {
    if let (Some(v), Some(obj)) = (value, body.as_object_mut()) {
        obj.insert(key.to_owned(), v);
    }
}

fn agent_line(a: &Value) -> String {
    format!(
        "{:<24} {:<14} {:>14} {:>14} {:>14}",
        text(a, "name"),
        text(a, "state"),
        usd(a, "budget_micro_usd"),
        usd(a, "spent_micro_usd"),
        usd(a, "reserved_micro_usd"),
    )
}

/// Prints a response that carries a new token, which is shown this once.
fn emit_token(json: bool, v: &Value, what: &str) {
    emit(json, v, || {
        format!(
            "{what}\ntoken (shown once): {}",
            v.get("token").and_then(Value::as_str).unwrap_or("?")
        )
    });
}

pub async fn run(cli: &Cli, action: &AgentAction) -> anyhow::Result<()> {
    let settings = super::settings(cli)?;
    let client = AdminClient::from_settings(&settings)?;
    match action {
        AgentAction::Create(args) => {
            let q = client.tenant_query(args.tenant.as_deref()).await?;
            let created = client.post(&["admin", "agents"], &q, &args.body()).await?;
            let agent = &created["agent"];
            let what = format!(
                "agent {} created (id {})",
                text(agent, "name"),
                text(agent, "id")
            );
            emit_token(cli.json, &created, &what);
        }
        AgentAction::List {
            tenant,
            state,
            name_contains,
            limit,
            after,
        } => {
            let q = client
                .tenant_query(tenant.as_deref())
                .await?
                .add("state", state.as_ref())
                .add("name_contains", name_contains.as_ref())
                .add("limit", *limit)
                .add("after", after.as_ref());
            let agents = client.get(&["admin", "agents"], &q).await?;
            let header = format!(
                "{:<24} {:<14} {:>14} {:>14} {:>14}",
                "NAME", "STATE", "BUDGET_USD", "SPENT_USD", "RESERVED_USD"
            );
            emit_list(cli.json, "agents", &agents, &header, agent_line);
        }
        AgentAction::Show { agent, tenant } => {
            let q = client.tenant_query(tenant.as_deref()).await?;
            emit_object(
                cli.json,
                &client.get(&["admin", "agents", agent], &q).await?,
            );
        }
        AgentAction::Update(args) => {
            let q = client.tenant_query(args.tenant.as_deref()).await?;
            let body = args.body()?;
            let path = ["admin", "agents", args.agent.as_str()];
            let a = client.call(Method::PATCH, &path, &q, Some(&body)).await?;
            emit(cli.json, &a, || {
                format!("agent {} updated", text(&a, "name"))
            });
        }
        AgentAction::State {
            agent,
            state,
            reason,
            tenant,
        } => {
            let q = client.tenant_query(tenant.as_deref()).await?;
            let body = json!({"state": state.to_ascii_uppercase(), "reason": reason});
            let done = client
                .post(&["admin", "agents", agent, "state"], &q, &body)
                .await?;
            let a = &done["agent"];
            emit(cli.json, &done, || {
                format!("agent {} is {}", text(a, "name"), text(a, "state"))
            });
        }
        AgentAction::Topup {
            agent,
            usd: amount,
            set,
            tenant,
        } => {
            let q = client.tenant_query(tenant.as_deref()).await?;
            let a = match set {
                true => {
                    let body = json!({"budget_usd": amount});
                    let path = ["admin", "agents", agent.as_str(), "budget"];
                    client.call(Method::PUT, &path, &q, Some(&body)).await?
                }
                false => {
                    let body = json!({"amount_usd": amount});
                    client
                        .post(&["admin", "agents", agent, "topup"], &q, &body)
                        .await?
                }
            };
            emit(cli.json, &a, || {
                format!(
                    "agent {}: budget {} USD, remaining {} USD",
                    text(&a, "name"),
                    usd(&a, "budget_micro_usd"),
                    usd(&a, "remaining_micro_usd")
                )
            });
        }
        AgentAction::RotateToken {
            agent,
            scope,
            ttl,
            tenant,
        } => {
            let q = client.tenant_query(tenant.as_deref()).await?;
            let body = json!({"scope": scope, "ttl_hours": ttl});
            let path = ["admin", "agents", agent.as_str(), "rotate_token"];
            let rotated = client.post(&path, &q, &body).await?;
            let what = format!(
                "agent {agent}: {} token(s) revoked",
                rotated["revoked_tokens"].as_array().map_or(0, Vec::len)
            );
            emit_token(cli.json, &rotated, &what);
        }
        AgentAction::RevokeToken {
            agent,
            token,
            reason,
            tenant,
        } => {
            let q = client.tenant_query(tenant.as_deref()).await?;
            let body = json!({"reason": reason});
            let revoked = match token {
                Some(id) => {
                    let mine = q
                        .clone()
                        .add("agent", Some(agent))
                        .add("include_revoked", Some(true));
                    let tokens = client.get(&["admin", "tokens"], &mine).await?;
                    let owned = tokens
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|t| t["id"] == *id);
                    anyhow::ensure!(owned, "token {id} is not a token of agent {agent}");
                    let t = client
                        .post(&["admin", "tokens", id, "revoke"], &q, &body)
                        .await?;
                    json!({"revoked_tokens": [t["id"]]})
                }
                None => {
                    let path = ["admin", "agents", agent.as_str(), "revoke_tokens"];
                    client.post(&path, &q, &body).await?
                }
            };
            emit(cli.json, &revoked, || {
                format!("agent {agent}: revoked {}", revoked["revoked_tokens"])
            });
        }
        AgentAction::Decommission {
            agent,
            reason,
            tenant,
        } => {
            let q = client.tenant_query(tenant.as_deref()).await?;
            let body = json!({"reason": reason});
            let path = ["admin", "agents", agent.as_str(), "decommission"];
            let done = client.post(&path, &q, &body).await?;
            emit(cli.json, &done, || {
                format!(
                    "agent {agent} decommissioned; revoked {}",
                    done["revoked_tokens"]
                )
            });
        }
    }
    Ok(())
}
