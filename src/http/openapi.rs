//! The OpenAPI document's frame: info, tags and the bearer security scheme. Paths come from the
//! route table, so a route cannot exist without its entry.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "AEX",
        description = "Governance gateway between AI agents and LLM providers: an OpenAI-compatible API under a hard budget, policy, rate limits and a hash-chained ledger. Every `/v1` route is also served under `/openai/v1`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    tags(
        (name = "openai", description = "OpenAI-compatible routes agents call"),
        (name = "tenants", description = "Tenants (operator; an admin token sees its own)"),
        (name = "agents", description = "Agents of a tenant: budgets, limits, policy, lifecycle, tokens"),
        (name = "tokens", description = "Bearer tokens: issue, list, revoke, rotate"),
        (name = "executions", description = "Governed calls and their ledger timelines"),
        (name = "ledger", description = "The hash-chained ledger: events, verification, replay"),
        (name = "config", description = "Routing-table versions and reloads"),
        (name = "plugins", description = "The tool plugin registry of a tenant"),
        (name = "alerts", description = "Budget and governance alerts of a tenant, and the rules that raise them"),
        (name = "webhooks", description = "Endpoints that receive alerts, signed per Standard Webhooks, and their deliveries"),
        (name = "usage", description = "Usage summaries, the dashboard's metrics and the activity feed"),
        (name = "ops", description = "Health, readiness and metrics (no token)"),
        (name = "dashboard", description = "The live dashboard page (its data needs an admin token)")
    ),
    components(schemas(
        crate::http::error::AdminErrorBody,
        crate::http::error::AdminErrorDetail,
        crate::domain::ExecutionState
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The `/openai/v1/...` aliases share handlers with `/v1/...`; their operation ids get a prefix
/// so that every operation id in the document stays unique.
pub fn dedupe_alias_operation_ids(openapi: &mut utoipa::openapi::OpenApi) {
    for (path, item) in openapi.paths.paths.iter_mut() {
        if !path.starts_with("/openai/") {
            continue;
        }
        for op in [&mut item.get, &mut item.post].into_iter().flatten() {
            if let Some(id) = &op.operation_id {
                op.operation_id = Some(format!("openai_{id}"));
            }
        }
    }
}
