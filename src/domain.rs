//! Domain types shared by every layer: ids, scopes, lifecycle and execution states.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(pub Uuid);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map($name)
            }
        }
    };
}

uuid_id!(
    /// A tenant's id.
    TenantId
);
uuid_id!(
    /// An agent's id.
    AgentId
);
uuid_id!(
    /// A server instance's id.
    ReplicaId
);

/// A state or period stored as its text (`as_str`), decoded once at the store boundary: a row
/// holds the enum, so no logic above the store compares strings. A stored value the enum does
/// not know is a decoding error, not a silent default.
macro_rules! text_enum {
    ($name:ty) => {
        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <str as sqlx::Type<sqlx::Postgres>>::type_info()
            }
            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $name {
            fn decode(
                value: sqlx::postgres::PgValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
                Ok(text.parse::<$name>()?)
            }
        }

        impl sqlx::Encode<'_, sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<sqlx::Postgres>>::encode(self.as_str(), buf)
            }
        }
    };
}

text_enum!(AgentState);
text_enum!(ExecutionState);
text_enum!(BudgetPeriod);

/// The `default` tenant, seeded by the first migration.
pub const DEFAULT_TENANT: TenantId = TenantId(Uuid::from_u128(1));

/// What a token may do (SPEC §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    Execution,
    ReadOnly,
    Admin,
    Operator,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Execution => "execution",
            Scope::ReadOnly => "read-only",
            Scope::Admin => "admin",
            Scope::Operator => "operator",
        }
    }

    pub fn is_agent_scope(self) -> bool {
        matches!(self, Scope::Execution | Scope::ReadOnly)
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "execution" => Ok(Scope::Execution),
            "read-only" => Ok(Scope::ReadOnly),
            "admin" => Ok(Scope::Admin),
            "operator" => Ok(Scope::Operator),
            other => Err(format!("unknown scope {other:?}")),
        }
    }
}

/// Agent lifecycle (SPEC §6). Only `Ready` executes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AgentState {
    Registered,
    Ready,
    Running,
    Paused,
    Stopping,
    Stopped,
    Quarantined,
    ErrorRecovery,
    Decommissioned,
}

impl AgentState {
    pub const ALL: [AgentState; 9] = [
        AgentState::Registered,
        AgentState::Ready,
        AgentState::Running,
        AgentState::Paused,
        AgentState::Stopping,
        AgentState::Stopped,
        AgentState::Quarantined,
        AgentState::ErrorRecovery,
        AgentState::Decommissioned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Registered => "REGISTERED",
            AgentState::Ready => "READY",
            AgentState::Running => "RUNNING",
            AgentState::Paused => "PAUSED",
            AgentState::Stopping => "STOPPING",
            AgentState::Stopped => "STOPPED",
            AgentState::Quarantined => "QUARANTINED",
            AgentState::ErrorRecovery => "ERROR_RECOVERY",
            AgentState::Decommissioned => "DECOMMISSIONED",
        }
    }

    /// The seed's allowed transitions.
    pub fn can_become(self, next: AgentState) -> bool {
        use AgentState::*;
        matches!(
            (self, next),
            (Registered, Ready | Decommissioned)
                | (Ready, Running | Paused | Quarantined | Decommissioned)
                | (Running, Paused | Stopping | ErrorRecovery)
                | (Paused, Ready | Stopping | Decommissioned)
                | (Stopping, Stopped | ErrorRecovery)
                | (Stopped, Ready | Decommissioned)
                | (Quarantined, Ready | Decommissioned)
                | (ErrorRecovery, Ready | Quarantined)
        )
    }
}

impl FromStr for AgentState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let upper = s.to_ascii_uppercase();
        AgentState::ALL
            .into_iter()
            .find(|st| st.as_str() == upper)
            .ok_or_else(|| format!("unknown agent state {s:?}"))
    }
}

/// Execution states (SPEC §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExecutionState {
    Reserving,
    Reserved,
    Dispatched,
    Committed,
    Released,
    Denied,
    Failed,
}

impl ExecutionState {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionState::Reserving => "RESERVING",
            ExecutionState::Reserved => "RESERVED",
            ExecutionState::Dispatched => "DISPATCHED",
            ExecutionState::Committed => "COMMITTED",
            ExecutionState::Released => "RELEASED",
            ExecutionState::Denied => "DENIED",
            ExecutionState::Failed => "FAILED",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ExecutionState::Committed
                | ExecutionState::Released
                | ExecutionState::Denied
                | ExecutionState::Failed
        )
    }
}

impl FromStr for ExecutionState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "RESERVING" => ExecutionState::Reserving,
            "RESERVED" => ExecutionState::Reserved,
            "DISPATCHED" => ExecutionState::Dispatched,
            "COMMITTED" => ExecutionState::Committed,
            "RELEASED" => ExecutionState::Released,
            "DENIED" => ExecutionState::Denied,
            "FAILED" => ExecutionState::Failed,
            other => return Err(format!("unknown execution state {other:?}")),
        })
    }
}

/// Budget periods after which `spent` resets (SPEC §5.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BudgetPeriod {
    Lifetime,
    Daily,
    Monthly,
}

impl BudgetPeriod {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetPeriod::Lifetime => "lifetime",
            BudgetPeriod::Daily => "daily",
            BudgetPeriod::Monthly => "monthly",
        }
    }
}

impl FromStr for BudgetPeriod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "lifetime" => Ok(BudgetPeriod::Lifetime),
            "daily" => Ok(BudgetPeriod::Daily),
            "monthly" => Ok(BudgetPeriod::Monthly),
            other => Err(format!("unknown budget period {other:?}")),
        }
    }
}

/// The northbound routes that create executions, normalised (`/openai/v1/x` ≡ `/v1/x`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CallRoute {
    ChatCompletions,
    Responses,
    Embeddings,
    ToolsExecute,
    /// Anthropic's Messages API, served natively by an `anthropic` provider.
    Messages,
}

impl CallRoute {
    pub fn as_str(self) -> &'static str {
        match self {
            CallRoute::ChatCompletions => "/v1/chat/completions",
            CallRoute::Responses => "/v1/responses",
            CallRoute::Embeddings => "/v1/embeddings",
            CallRoute::ToolsExecute => "/v1/tools/execute",
            CallRoute::Messages => "/v1/messages",
        }
    }

    /// The path below the provider's base URL.
    pub fn upstream_path(self) -> &'static str {
        match self {
            CallRoute::ChatCompletions => "/chat/completions",
            CallRoute::Responses => "/responses",
            CallRoute::Embeddings => "/embeddings",
            CallRoute::ToolsExecute => "/tools/execute",
            CallRoute::Messages => "/messages",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_follows_the_seed_transitions() {
        use AgentState::*;
        assert!(Registered.can_become(Ready));
        assert!(Ready.can_become(Paused));
        assert!(Paused.can_become(Ready));
        assert!(!Decommissioned.can_become(Ready));
        assert!(!Ready.can_become(Stopped));
        assert!(!Running.can_become(Ready));
        for s in AgentState::ALL {
            assert!(!s.can_become(s), "{s:?} -> itself");
            assert_eq!(s.as_str().parse::<AgentState>(), Ok(s));
        }
    }

    #[test]
    fn only_settled_states_are_terminal() {
        assert!(!ExecutionState::Reserved.is_terminal());
        assert!(!ExecutionState::Dispatched.is_terminal());
        assert!(ExecutionState::Committed.is_terminal());
        assert!(ExecutionState::Denied.is_terminal());
    }
}
