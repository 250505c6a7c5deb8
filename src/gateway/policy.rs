//! The policy engine (SPEC §6): pure functions from an agent's effective policy and the facts of
//! a request to allow or deny (naming the rule), and the output cap the request may use.

use serde::{Deserialize, Serialize};
use serde_json::Value;

mod facts;
pub use facts::RequestFacts;

/// Policy fields as stored on an agent or as a tenant's defaults. `None` means "inherit".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_models: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_streaming: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_tools: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_tool_names: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_function_calling: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_vision: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens_per_request: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_passthrough: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clamp_max_tokens: Option<bool>,
}

/// A policy with every field decided: agent, else tenant default, else the built-in default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct EffectivePolicy {
    pub allowed_models: Option<Vec<String>>,
    pub allow_streaming: bool,
    pub allow_tools: bool,
    pub allowed_tool_names: Option<Vec<String>>,
    pub allow_function_calling: bool,
    pub allow_vision: bool,
    pub max_input_tokens: Option<u64>,
    pub max_output_tokens: Option<u64>,
    pub max_tokens_per_request: Option<u64>,
    pub allow_passthrough: bool,
    pub clamp_max_tokens: bool,
}

impl Policy {
    /// Parses a stored policy object (without copying it). One that does not parse is an
    /// error, never the permissive built-in defaults: callers refuse, failing closed.
    pub fn from_json(value: &Value) -> Result<Policy, serde_json::Error> {
        Policy::deserialize(value)
    }

    /// The effective policy of an agent from its stored policy and its tenant's default one.
    pub fn effective(agent: &Value, tenant: &Value) -> Result<EffectivePolicy, serde_json::Error> {
        Ok(Policy::from_json(agent)?.resolve(&Policy::from_json(tenant)?))
    }

    /// This policy with `defaults` filling the fields it leaves unset.
    pub fn resolve(&self, defaults: &Policy) -> EffectivePolicy {
        EffectivePolicy {
            allowed_models: self
                .allowed_models
                .clone()
                .or_else(|| defaults.allowed_models.clone()),
            allow_streaming: self
                .allow_streaming
                .or(defaults.allow_streaming)
                .unwrap_or(true),
            allow_tools: self.allow_tools.or(defaults.allow_tools).unwrap_or(true),
            allowed_tool_names: self
                .allowed_tool_names
                .clone()
                .or_else(|| defaults.allowed_tool_names.clone()),
            allow_function_calling: self
                .allow_function_calling
                .or(defaults.allow_function_calling)
                .unwrap_or(true),
            allow_vision: self.allow_vision.or(defaults.allow_vision).unwrap_or(false),
            max_input_tokens: self.max_input_tokens.or(defaults.max_input_tokens),
            max_output_tokens: self.max_output_tokens.or(defaults.max_output_tokens),
            max_tokens_per_request: self
                .max_tokens_per_request
                .or(defaults.max_tokens_per_request),
            allow_passthrough: self
                .allow_passthrough
                .or(defaults.allow_passthrough)
                .unwrap_or(false),
            clamp_max_tokens: self
                .clamp_max_tokens
                .or(defaults.clamp_max_tokens)
                .unwrap_or(false),
        }
    }
}

/// A policy refusal: the rule that refused and a message for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDenial {
    pub rule: &'static str,
    pub message: String,
}

fn deny<T>(rule: &'static str, message: String) -> Result<T, PolicyDenial> {
    Err(PolicyDenial {
        rule,
        message: format!("policy rule `{rule}` denied this request: {message}"),
    })
}

/// Checks every rule in a fixed order; on success returns the output cap to use, given the cap
/// that would apply without policy (`default_cap`: the model's maximum or the configured default).
pub fn evaluate(
    policy: &EffectivePolicy,
    facts: &RequestFacts,
    default_cap: u64,
) -> Result<u64, PolicyDenial> {
    check_allowed(policy, facts)?;
    output_cap(policy, facts, default_cap)
}

/// What the request uses: the model, streaming, tools, function calling, images, a key of its
/// own.
fn check_allowed(policy: &EffectivePolicy, facts: &RequestFacts) -> Result<(), PolicyDenial> {
    if let (Some(models), Some(alias)) = (&policy.allowed_models, &facts.model_alias) {
        if !models.iter().any(|m| m == alias) {
            return deny(
                "allowed_models",
                format!("model `{alias}` is not allowed for this agent"),
            );
        }
    }
    if facts.stream && !policy.allow_streaming {
        return deny(
            "allow_streaming",
            "streaming is not allowed for this agent".into(),
        );
    }
    if !facts.tool_names.is_empty() && !policy.allow_tools {
        return deny("allow_tools", "tools are not allowed for this agent".into());
    }
    if let Some(allowed) = &policy.allowed_tool_names {
        if let Some(bad) = facts.tool_names.iter().find(|t| !allowed.contains(t)) {
            return deny(
                "allowed_tool_names",
                format!("tool `{bad}` is not allowed for this agent"),
            );
        }
    }
    if facts.function_calling && !policy.allow_function_calling {
        return deny(
            "allow_function_calling",
            "function calling is not allowed for this agent".into(),
        );
    }
    if facts.images > 0 && !policy.allow_vision {
        return deny(
            "allow_vision",
            "image input is not allowed for this agent".into(),
        );
    }
    if facts.passthrough && !policy.allow_passthrough {
        return deny(
            "allow_passthrough",
            "X-AEX-Provider-Key is not allowed for this agent".into(),
        );
    }
    Ok(())
}

/// The token limits: the input's, then the output cap's. They apply to the bound: every choice
/// at the cap, whichever field set it.
fn output_cap(
    policy: &EffectivePolicy,
    facts: &RequestFacts,
    default_cap: u64,
) -> Result<u64, PolicyDenial> {
    if let Some(max) = policy.max_input_tokens {
        if facts.prompt_tokens > max {
            return deny(
                "max_input_tokens",
                format!(
                    "the input is about {} tokens; the limit is {max}",
                    facts.prompt_tokens
                ),
            );
        }
    }
    let n = facts.choices.max(1);
    let mut cap = facts.requested_output_cap.unwrap_or(default_cap);
    if let Some(max) = policy.max_output_tokens {
        let per_choice = max / n;
        if per_choice == 0 || facts.requested_output_cap.is_some_and(|c| c > per_choice) {
            return deny(
                "max_output_tokens",
                format!(
                    "the output bound ({n} choice(s) × the output cap) exceeds the limit of {max}"
                ),
            );
        }
        cap = cap.min(per_choice);
    }
    if let Some(max) = policy.max_tokens_per_request {
        let room = max.saturating_sub(facts.prompt_tokens) / n;
        if facts.requested_output_cap.is_some_and(|c| c > room) || room == 0 {
            return deny(
                "max_tokens_per_request",
                format!(
                    "input plus {n} choice(s) × the output cap exceeds the limit of {max} tokens"
                ),
            );
        }
        cap = cap.min(room);
    }
    Ok(cap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::CallRoute;
    use serde_json::json;

    fn open() -> EffectivePolicy {
        Policy {
            allow_vision: Some(true),
            ..Policy::default()
        }
        .resolve(&Policy::default())
    }

    fn facts() -> RequestFacts {
        RequestFacts {
            model_alias: Some("m".into()),
            prompt_tokens: 10,
            ..RequestFacts::default()
        }
    }

    fn rule(p: &EffectivePolicy, f: &RequestFacts) -> Option<&'static str> {
        evaluate(p, f, 100).err().map(|d| d.rule)
    }

    #[test]
    fn agent_values_override_tenant_defaults_which_override_built_ins() {
        let tenant = Policy {
            allow_streaming: Some(false),
            max_input_tokens: Some(5),
            ..Policy::default()
        };
        let agent = Policy {
            allow_streaming: Some(true),
            ..Policy::default()
        };
        let p = agent.resolve(&tenant);
        assert!(p.allow_streaming);
        assert_eq!(p.max_input_tokens, Some(5));
        assert!(!p.allow_vision && !p.allow_passthrough && p.allow_tools);
    }

    #[test]
    fn allowed_models() {
        let p = EffectivePolicy {
            allowed_models: Some(vec!["a".into()]),
            ..open()
        };
        assert_eq!(rule(&p, &facts()), Some("allowed_models"));
        assert_eq!(
            rule(
                &p,
                &RequestFacts {
                    model_alias: Some("a".into()),
                    ..facts()
                }
            ),
            None
        );
    }

    #[test]
    fn streaming_tools_function_calling_vision_passthrough() {
        let stream = RequestFacts {
            stream: true,
            ..facts()
        };
        assert_eq!(
            rule(
                &EffectivePolicy {
                    allow_streaming: false,
                    ..open()
                },
                &stream
            ),
            Some("allow_streaming")
        );
        assert_eq!(rule(&open(), &stream), None);

        let tools = RequestFacts {
            tool_names: vec!["get_weather".into()],
            function_calling: true,
            ..facts()
        };
        assert_eq!(
            rule(
                &EffectivePolicy {
                    allow_tools: false,
                    ..open()
                },
                &tools
            ),
            Some("allow_tools")
        );
        assert_eq!(
            rule(
                &EffectivePolicy {
                    allowed_tool_names: Some(vec!["search".into()]),
                    ..open()
                },
                &tools
            ),
            Some("allowed_tool_names")
        );
        assert_eq!(
            rule(
                &EffectivePolicy {
                    allowed_tool_names: Some(vec!["get_weather".into()]),
                    ..open()
                },
                &tools
            ),
            None
        );
        assert_eq!(
            rule(
                &EffectivePolicy {
                    allow_function_calling: false,
                    ..open()
                },
                &tools
            ),
            Some("allow_function_calling")
        );

        let image = RequestFacts {
            images: 1,
            ..facts()
        };
        assert_eq!(
            rule(
                &EffectivePolicy {
                    allow_vision: false,
                    ..open()
                },
                &image
            ),
            Some("allow_vision")
        );

        let byok = RequestFacts {
            passthrough: true,
            ..facts()
        };
        assert_eq!(rule(&open(), &byok), Some("allow_passthrough"));
        assert_eq!(
            rule(
                &EffectivePolicy {
                    allow_passthrough: true,
                    ..open()
                },
                &byok
            ),
            None
        );
    }

    #[test]
    fn token_limits_and_the_default_cap() {
        let p = EffectivePolicy {
            max_input_tokens: Some(9),
            ..open()
        };
        assert_eq!(rule(&p, &facts()), Some("max_input_tokens"));

        let p = EffectivePolicy {
            max_output_tokens: Some(50),
            ..open()
        };
        assert_eq!(
            evaluate(&p, &facts(), 100),
            Ok(50),
            "the default cap is lowered"
        );
        let asks = RequestFacts {
            requested_output_cap: Some(60),
            ..facts()
        };
        assert_eq!(rule(&p, &asks), Some("max_output_tokens"));
        let asks = RequestFacts {
            requested_output_cap: Some(40),
            ..facts()
        };
        assert_eq!(evaluate(&p, &asks, 100), Ok(40));

        let p = EffectivePolicy {
            max_tokens_per_request: Some(30),
            ..open()
        };
        assert_eq!(evaluate(&p, &facts(), 100), Ok(20));
        let asks = RequestFacts {
            requested_output_cap: Some(25),
            ..facts()
        };
        assert_eq!(rule(&p, &asks), Some("max_tokens_per_request"));
    }

    #[test]
    fn token_limits_apply_to_every_choice() {
        let p = EffectivePolicy {
            max_output_tokens: Some(50),
            ..open()
        };
        let n = |choices, cap| RequestFacts {
            choices,
            requested_output_cap: cap,
            ..facts()
        };
        assert_eq!(rule(&p, &n(100, Some(7))), Some("max_output_tokens"));
        assert_eq!(evaluate(&p, &n(5, Some(10)), 100), Ok(10));
        assert_eq!(
            evaluate(&p, &n(5, None), 100),
            Ok(10),
            "the default cap is shared"
        );
        assert_eq!(rule(&p, &n(51, None)), Some("max_output_tokens"));

        let p = EffectivePolicy {
            max_tokens_per_request: Some(30),
            ..open()
        };
        // 10 prompt tokens leave 20 for the output: 4 choices get 5 each.
        assert_eq!(evaluate(&p, &n(4, None), 100), Ok(5));
        assert_eq!(rule(&p, &n(4, Some(6))), Some("max_tokens_per_request"));
        assert_eq!(rule(&p, &n(21, None)), Some("max_tokens_per_request"));
    }

    #[test]
    fn facts_are_read_from_chat_and_responses_bodies() {
        let body = json!({
            "stream": true,
            "tools": [{"type": "function", "function": {"name": "f"}}, {"type": "web_search"}],
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]
        });
        let f = RequestFacts::from_body(
            CallRoute::ChatCompletions,
            body.as_object().unwrap(),
            Some("m"),
            1,
            1,
            None,
            false,
        );
        assert!(f.stream && f.function_calling);
        assert_eq!(f.tool_names, vec!["f".to_owned(), "web_search".to_owned()]);
        assert_eq!(f.images, 1);

        let body = json!({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}], "tool_choice": "none"});
        let f = RequestFacts::from_body(
            CallRoute::Responses,
            body.as_object().unwrap(),
            Some("m"),
            1,
            1,
            None,
            false,
        );
        assert_eq!(f.images, 1);
        assert!(!f.function_calling);
    }
}
