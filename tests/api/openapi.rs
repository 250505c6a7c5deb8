//! The committed OpenAPI document is the one the code generates.

#[test]
fn the_committed_openapi_document_matches_the_code() {
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .expect("openapi/openapi.json is committed");
    let generated = aex::http::router::openapi_json();
    assert!(
        committed.trim_end() == generated.trim_end(),
        "openapi/openapi.json is stale: regenerate it with `cargo run -- openapi > openapi/openapi.json`"
    );
}

#[test]
fn every_operation_id_is_unique_and_every_route_is_documented() {
    let doc: serde_json::Value = serde_json::from_str(&aex::http::router::openapi_json()).unwrap();
    let mut ids = Vec::new();
    for (_, item) in doc["paths"].as_object().unwrap() {
        for (_, op) in item.as_object().unwrap() {
            if let Some(id) = op.get("operationId").and_then(|v| v.as_str()) {
                ids.push(id.to_owned());
            }
        }
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(ids.len(), unique.len(), "duplicate operation ids: {ids:?}");
    for path in [
        "/v1/chat/completions",
        "/openai/v1/chat/completions",
        "/admin/agents",
        "/admin/replay",
        "/admin/activity",
        "/admin/reload_config",
        "/admin/tenants/{tenant}",
        "/admin/agents/{agent}/decommission",
        "/admin/tokens/{token_id}/rotate",
        "/admin/executions/{execution}",
        "/admin/ledger/events",
        "/admin/config/versions",
        "/admin/plugins/{plugin}/disable",
        "/admin/usage",
        "/health",
        "/ready",
        "/metrics",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} is not documented");
    }
}

#[test]
fn every_admin_operation_needs_a_bearer_token_and_answers_errors_in_the_admin_shape() {
    let doc: serde_json::Value = serde_json::from_str(&aex::http::router::openapi_json()).unwrap();
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/admin") {
            continue;
        }
        for (method, op) in item.as_object().unwrap() {
            let security = &op["security"][0];
            assert!(
                security.get("bearer").is_some(),
                "{method} {path} has no bearer security"
            );
            for status in ["400", "401", "403", "404"] {
                let schema = &op["responses"][status]["content"]["application/json"]["schema"];
                assert_eq!(
                    schema["$ref"], "#/components/schemas/AdminErrorBody",
                    "{method} {path} {status}"
                );
            }
        }
    }
}
