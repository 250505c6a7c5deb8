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
        "/health",
        "/ready",
        "/metrics",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} is not documented");
    }
}
