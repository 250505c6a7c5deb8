//! The providers of the routing table, each checked as the gateway will use it: its key variable
//! set, its base URL answering a short `GET <base_url>/models` with that key, and every
//! `upstream_model` routed to it among the models it lists. A 502 on a first call is almost always
//! one of these.

use std::time::Duration;

use reqwest::StatusCode;

use super::{Check, EnvLookup};
use crate::config::{ProviderRoute, RoutingDocument};

/// How long a provider may take to answer its model list.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(5);

/// One or more findings per provider, in the table's order.
pub async fn check_all(doc: &RoutingDocument, env: EnvLookup<'_>) -> Vec<Check> {
    let http = match reqwest::Client::builder()
        .timeout(PROVIDER_TIMEOUT)
        .connect_timeout(PROVIDER_TIMEOUT)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            return vec![Check::fail(
                "providers",
                format!("cannot build an HTTP client: {e}"),
                "check the machine's TLS roots",
            )]
        }
    };
    let mut checks = Vec::new();
    for (name, provider) in &doc.providers {
        // Alias and upstream model of every model routed to this provider.
        let routed: Vec<(&str, &str)> = doc
            .models
            .iter()
            .filter(|(_, m)| &m.provider == name)
            .map(|(alias, m)| (alias.as_str(), m.upstream_model.as_str()))
            .collect();
        // An entry that does not validate is the routing table check's finding; its URL and
        // auth are not known well enough to call.
        let Ok(provider) = ProviderRoute::from_doc(name, provider) else {
            continue;
        };
        checks.extend(check_one(&http, &provider, &routed, env).await);
    }
    checks
}

async fn check_one(
    http: &reqwest::Client,
    provider: &ProviderRoute,
    routed: &[(&str, &str)],
    env: EnvLookup<'_>,
) -> Vec<Check> {
    let name = provider.name.as_str();
    let label = format!("provider {name}");
    let mut checks = Vec::new();
    let key = match provider.api_key_env.as_deref() {
        None => None,
        Some(var) => match env(var).filter(|v| !v.trim().is_empty()) {
            Some(key) => {
                checks.push(Check::ok(format!("{label} key"), format!("{var} is set")));
                Some(key)
            }
            None => {
                checks.push(Check::fail(
                    format!("{label} key"),
                    format!("environment variable {var} (providers.{name}.api_key_env) is not set or empty: calls to it answer 502"),
                    format!("export {var}=<your provider key> in the server's environment, then restart it"),
                ));
                None
            }
        },
    };
    // Asked as the gateway asks: the key in the provider's header, its fixed headers and query
    // parameters (Azure's api-version, Anthropic's anthropic-version).
    let url = provider.url("/models");
    let request = provider.authorize(http.get(&url), key.as_deref());
    let reach = format!("{label} reachable");
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            checks.push(Check::fail(
                reach,
                format!("GET {url} failed: {}", crate::telemetry::error_chain(&e)),
                format!("check providers.{name}.base_url and that the provider is up and reachable from the server"),
            ));
            return checks;
        }
    };
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        checks.push(Check::fail(
            reach,
            format!("GET {url} answered {status}: the provider refuses the key"),
            match provider.api_key_env.as_deref() {
                Some(var) => format!("put a valid key in {var}"),
                None => format!("set providers.{name}.api_key_env to the variable holding its key"),
            },
        ));
        return checks;
    }
    if !status.is_success() {
        let (fail, why) = if status.is_server_error() {
            (true, "the provider is failing")
        } else {
            (
                false,
                "it does not list its models, so they cannot be checked",
            )
        };
        let message = format!("GET {url} answered {status}: {why}");
        let fix = format!("check providers.{name}.base_url (it should end where the API's /models and /chat/completions are, e.g. .../v1)");
        checks.push(if fail {
            Check::fail(reach, message, fix)
        } else {
            Check::warn(reach, message, fix)
        });
        return checks;
    }
    let listed: Option<Vec<String>> =
        response
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|body| {
                body.get("data")?.as_array().map(|data| {
                    data.iter()
                        .filter_map(|m| m.get("id")?.as_str().map(str::to_owned))
                        .collect()
                })
            });
    let Some(listed) = listed else {
        checks.push(Check::warn(
            reach,
            format!("GET {url} answered {status} but no model list (`data[].id`)"),
            format!("check providers.{name}.base_url points at an OpenAI-compatible API"),
        ));
        return checks;
    };
    checks.push(Check::ok(
        reach,
        format!("{url} lists {} models", listed.len()),
    ));
    for (alias, upstream) in routed {
        let check_name = format!("model {alias}");
        checks.push(if listed.iter().any(|id| id == upstream) {
            Check::ok(check_name, format!("{upstream} is listed by {name}"))
        } else {
            Check::fail(
                check_name,
                format!("{upstream} is not among the {} models {name} lists: calls to {alias} fail upstream", listed.len()),
                format!("set models.\"{alias}\".upstream_model to a model {name} lists (GET {url})"),
            )
        });
    }
    checks
}
