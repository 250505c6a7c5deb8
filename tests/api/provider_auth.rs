//! Provider auth and shape: every provider recipe in README loads through the real routing
//! loader, and the Azure and Anthropic recipes are driven against loopback mocks that refuse any
//! other auth (a Bearer key, a key in the wrong header, a missing api-version or
//! anthropic-version) — through the gateway and through `aex doctor`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use aex::cli::doctor::{self, Report, Status};
use aex::config::{KeyHeader, RoutingTable};
use aex::dev::mock_auth::RequiredAuth;
use aex::dev::mock_upstream::{self, MockControl};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{mini_cost, spawn_app_with_models};

/// The key the Azure recipe's `AZURE_OPENAI_API_KEY` holds in these tests.
pub const AZURE_KEY: &str = "azure-test-key";
/// The key the Anthropic recipe's `ANTHROPIC_API_KEY` holds in these tests.
pub const ANTHROPIC_KEY: &str = "anthropic-test-key";

/// The TOML blocks of README's provider recipes, by provider name.
pub fn readme_recipes() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let start = readme
        .find("### Providers and their recipes")
        .expect("README has the recipes section");
    let section = &readme[start..];
    let section = &section[..section[4..].find("\n## ").map_or(section.len(), |i| i + 4)];
    let mut recipes = Vec::new();
    let mut rest = section;
    while let Some(open) = rest.find("```toml\n") {
        let body = &rest[open + 8..];
        let close = body.find("```").expect("closed block");
        let block = body[..close].to_owned();
        let doc: toml::Value = toml::from_str(&block).expect("recipe is TOML");
        let names: Vec<String> = doc["providers"]
            .as_table()
            .expect("a recipe has providers")
            .keys()
            .cloned()
            .collect();
        assert_eq!(names.len(), 1, "one provider per recipe: {block}");
        recipes.push((names[0].clone(), block));
        rest = &body[close + 3..];
    }
    recipes
}

/// README's recipe for `provider`, its public base URL replaced by the mock's.
pub fn recipe_on_mock(provider: &str, public: &str, mock: SocketAddr) -> String {
    let (_, block) = readme_recipes()
        .into_iter()
        .find(|(name, _)| name == provider)
        .expect("recipe");
    assert!(block.contains(public), "{block}");
    block.replace(public, &format!("http://{mock}"))
}

pub async fn spawn_mock(required: RequiredAuth) -> (Arc<MockControl>, SocketAddr) {
    let mock = Arc::new(MockControl::default());
    mock.auth.require(required);
    let addr = mock_upstream::spawn("127.0.0.1:0".parse().unwrap(), Arc::clone(&mock))
        .await
        .unwrap();
    (mock, addr)
}

#[test]
fn every_readme_recipe_loads_through_the_routing_loader() {
    let recipes = readme_recipes();
    let names: BTreeSet<&str> = recipes.iter().map(|(n, _)| n.as_str()).collect();
    let expected: BTreeSet<&str> = [
        "openai",
        "azure",
        "anthropic",
        "gemini",
        "groq",
        "vllm",
        "ollama",
        "llamacpp",
    ]
    .into();
    assert_eq!(names, expected);
    for (name, block) in &recipes {
        let table = RoutingTable::parse(block, 1).unwrap_or_else(|e| panic!("{name}: {e}"));
        let aliases = table.aliases();
        assert!(!aliases.is_empty(), "{name} routes no model");
        let provider = &table.model(aliases[0]).unwrap().provider;
        let expected_auth = match name.as_str() {
            "azure" => KeyHeader::ApiKey,
            "anthropic" => KeyHeader::XApiKey,
            _ => KeyHeader::Bearer,
        };
        assert_eq!(provider.auth, expected_auth, "{name}");
    }
    let all: String = recipes
        .iter()
        .map(|(_, b)| b.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    RoutingTable::parse(&all, 1).expect("the recipes combine into one table");
}

/// The Azure recipe: `api-key` and `?api-version=` reach the deployment, JSON and stream, billed
/// exactly; a Bearer key, or no api-version, is refused by the provider and costs nothing.
#[tokio::test]
async fn azure_recipe_sends_api_key_and_api_version_and_nothing_else() {
    std::env::set_var("AZURE_OPENAI_API_KEY", AZURE_KEY);
    let (azure, addr) = spawn_mock(RequiredAuth::azure(AZURE_KEY, "2024-10-21")).await;
    let recipe = recipe_on_mock("azure", "https://YOUR-RESOURCE.openai.azure.com", addr)
        .replace("YOUR-DEPLOYMENT", "gpt-4o-mini");
    let wrong = format!(
        r#"
[providers.azure-bearer]
kind = "openai"
base_url = "http://{addr}/openai/deployments/gpt-4o-mini"
api_key_env = "AZURE_OPENAI_API_KEY"
query = {{ "api-version" = "2024-10-21" }}

[providers.azure-no-version]
kind = "openai"
base_url = "http://{addr}/openai/deployments/gpt-4o-mini"
api_key_env = "AZURE_OPENAI_API_KEY"
auth = "api-key"

[models."azure-bearer"]
provider = "azure-bearer"
upstream_model = "gpt-4o-mini"
input_usd_per_million = "0.15"
output_usd_per_million = "0.60"
capabilities = ["chat"]

[models."azure-no-version"]
provider = "azure-no-version"
upstream_model = "gpt-4o-mini"
input_usd_per_million = "0.15"
output_usd_per_million = "0.60"
capabilities = ["chat"]
"#
    );
    let app = spawn_app_with_models(&format!("{recipe}\n{wrong}")).await;
    let agent = app.create_agent("azure-user", "1.00", json!({})).await;
    let body = json!({"model": "azure-gpt-4o-mini", "messages": [{"role": "user", "content": "hello azure"}]});

    let ok = app.chat(&agent.token, body.clone()).await;
    assert_eq!(ok.status(), StatusCode::OK);
    let v: Value = ok.json().await.unwrap();
    let first = mini_cost(&v["usage"]);
    assert_eq!(azure.calls(), 1);

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let s = app.chat(&agent.token, streamed).await;
    assert_eq!(s.status(), StatusCode::OK);
    let text = s.text().await.unwrap();
    assert!(text.contains("[DONE]"), "{text}");
    assert_eq!(azure.calls(), 2);
    let (spent_after_two, reserved, _) = app.books(agent.id).await;
    assert_eq!(reserved, 0);
    assert!(spent_after_two > first, "the stream was billed too");

    for alias in ["azure-bearer", "azure-no-version"] {
        let mut b = body.clone();
        b["model"] = json!(alias);
        // The provider's own client error goes back as it is.
        let refused = app.chat(&agent.token, b).await;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "{alias}");
    }
    assert_eq!(azure.auth.refused(), 2);
    assert_eq!(azure.calls(), 2, "refused calls never reach a handler");
    let (spent, reserved, _) = app.books(agent.id).await;
    assert_eq!(
        (spent, reserved),
        (spent_after_two, 0),
        "a refused call costs nothing"
    );
    app.assert_books_audit().await;
}

/// `aex doctor` asks an Anthropic provider as the gateway does: `x-api-key` and
/// `anthropic-version`; the wrong key, or a Bearer key, is named as refused.
#[tokio::test]
async fn doctor_asks_anthropic_with_x_api_key_and_anthropic_version() {
    let (anthropic, addr) = spawn_mock(RequiredAuth::anthropic(ANTHROPIC_KEY, "2023-06-01")).await;
    *anthropic.models.lock().unwrap() = vec!["claude-sonnet-4-5".to_owned()];
    let recipe = recipe_on_mock("anthropic", "https://api.anthropic.com", addr);
    let bearer = format!(
        r#"
[providers.anthropic-bearer]
kind = "anthropic"
base_url = "http://{addr}/v1"
api_key_env = "ANTHROPIC_API_KEY"
auth = "bearer"
"#
    );
    let app = spawn_app_with_models(&format!("{recipe}\n{bearer}")).await;
    let right = |name: &str| (name == "ANTHROPIC_API_KEY").then(|| ANTHROPIC_KEY.to_owned());
    let report = Report::new(doctor::diagnose(&app.settings, &right).await);
    let find = |report: &Report, name: &str| report.find(name).unwrap().clone();
    assert_eq!(
        find(&report, "provider anthropic reachable").status,
        Status::Ok
    );
    assert_eq!(find(&report, "model claude-sonnet-4-5").status, Status::Ok);
    let refused = find(&report, "provider anthropic-bearer reachable");
    assert_eq!(refused.status, Status::Fail, "{}", refused.line());
    assert!(
        refused.message.contains("refuses the key"),
        "{}",
        refused.line()
    );

    // An Anthropic model is served at /v1/messages, not on OpenAI's routes.
    let agent = app.create_agent("chatty", "1.00", json!({})).await;
    let chat = app
        .chat(
            &agent.token,
            json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(chat.status(), StatusCode::BAD_REQUEST);
    let v: Value = chat.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/v1/messages"),
        "{v}"
    );
    assert_eq!(anthropic.calls(), 0);

    let wrong = |name: &str| (name == "ANTHROPIC_API_KEY").then(|| "sk-wrong".to_owned());
    let report = Report::new(doctor::diagnose(&app.settings, &wrong).await);
    let refused = find(&report, "provider anthropic reachable");
    assert_eq!(refused.status, Status::Fail, "{}", refused.line());
    assert!(refused.fix.unwrap().contains("ANTHROPIC_API_KEY"));
}
