//! The route table: paths to handlers, nothing else.

use axum::middleware;
use axum::Router;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::{dedupe_alias_operation_ids, ApiDoc};
use super::{admin, anthropic, dashboard, observe, openai, ops};
use crate::app_state::AppState;

/// The OpenAI-compatible routes, served at `/v1` and again under `/openai`.
fn openai_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(openai::create_chat_completion))
        .routes(routes!(openai::create_response))
        .routes(routes!(openai::create_embedding))
        .routes(routes!(openai::execute_tool))
        .routes(routes!(openai::list_models))
        .routes(routes!(openai::get_model))
}

/// Anthropic's Messages routes: the agent token also as `x-api-key`, errors in Anthropic's shape.
fn anthropic_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(anthropic::create_message))
        .routes(routes!(anthropic::count_tokens))
        .route_layer(middleware::from_fn(anthropic::x_api_key))
        .route_layer(middleware::from_fn(anthropic::error_shape))
}

fn admin_routes() -> OpenApiRouter<AppState> {
    use admin::{
        agents, alerts, config, executions, ledger, metrics, plugins, tenants, tokens, usage,
        webhooks,
    };
    OpenApiRouter::new()
        .routes(routes!(tenants::create_tenant, tenants::list_tenants))
        .routes(routes!(tenants::get_tenant, tenants::update_tenant))
        .routes(routes!(agents::create_agent, agents::list_agents))
        .routes(routes!(agents::get_agent, agents::update_agent))
        .routes(routes!(agents::set_agent_state))
        .routes(routes!(agents::decommission_agent))
        .routes(routes!(agents::top_up_agent))
        .routes(routes!(agents::set_agent_budget))
        .routes(routes!(agents::rotate_agent_token))
        .routes(routes!(agents::revoke_agent_tokens))
        .routes(routes!(tokens::issue_token, tokens::list_tokens))
        .routes(routes!(tokens::revoke_token))
        .routes(routes!(tokens::rotate_token))
        .routes(routes!(executions::list_executions))
        .routes(routes!(executions::get_execution))
        .routes(routes!(ledger::list_ledger_events))
        .routes(routes!(ledger::verify_ledger))
        .routes(routes!(ledger::write_checkpoint))
        .routes(routes!(ledger::get_latest_checkpoint))
        .routes(routes!(ledger::get_replay))
        .routes(routes!(config::get_config))
        .routes(routes!(config::list_config_versions))
        .routes(routes!(config::reload_config))
        .routes(routes!(plugins::install_plugin, plugins::list_plugins))
        .routes(routes!(plugins::enable_plugin))
        .routes(routes!(plugins::disable_plugin))
        .routes(routes!(usage::get_usage))
        .routes(routes!(usage::get_activity))
        .routes(routes!(metrics::get_admin_metrics))
        .routes(routes!(alerts::list_alerts))
        .routes(routes!(alerts::ack_alert))
        .routes(routes!(alerts::list_alert_rules))
        .routes(routes!(alerts::set_alert_rule))
        .routes(routes!(webhooks::create_webhook, webhooks::list_webhooks))
        .routes(routes!(
            webhooks::get_webhook,
            webhooks::update_webhook,
            webhooks::delete_webhook
        ))
        .routes(routes!(webhooks::rotate_webhook_secret))
        .routes(routes!(webhooks::test_webhook))
        .routes(routes!(webhooks::list_webhook_deliveries))
}

fn dashboard_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(dashboard::get_dashboard))
        .routes(routes!(dashboard::get_dashboard_asset))
}

fn ops_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(ops::get_health))
        .routes(routes!(ops::get_ready))
        .routes(routes!(ops::get_metrics))
}

/// Every route with its OpenAPI entry.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(openai_routes())
        .nest("/openai", openai_routes())
        .merge(anthropic_routes())
        .merge(admin_routes())
        .merge(ops_routes())
        .merge(dashboard_routes())
        .split_for_parts();
    dedupe_alias_operation_ids(&mut openapi);
    (router, openapi)
}

/// The OpenAPI document as committed at `openapi/openapi.json`.
pub fn openapi_json() -> String {
    let (_, openapi) = api();
    openapi.to_pretty_json().unwrap_or_default()
}

/// The complete application: routes, Swagger UI, and the request span and metrics.
pub fn app(state: AppState) -> Router {
    let (router, openapi) = api();
    router
        .merge(utoipa_swagger_ui::SwaggerUi::new("/docs").url("/openapi.json", openapi))
        .layer(middleware::from_fn(observe::observe_request))
        .with_state(state)
}

/// The separate metrics port (`metrics.listen`): `/metrics` only.
pub fn metrics_app(state: AppState) -> Router {
    let (router, _) = OpenApiRouter::new()
        .routes(routes!(ops::get_metrics))
        .split_for_parts();
    router.with_state(state)
}
