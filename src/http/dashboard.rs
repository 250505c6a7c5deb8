//! `GET /dashboard`: the live dashboard, a static page compiled into the binary (no CDN, no
//! build step). The page itself is open; everything it shows comes from the admin API with the
//! admin token the user gives it, which stays in the browser's session storage.

use axum::http::header;
use axum::response::IntoResponse;

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const STYLE_CSS: &str = include_str!("dashboard/style.css");

/// Only this origin's script, style and API; no inline script, no framing, no referrer. (`data:`
/// images: the page's empty favicon, so that the browser does not ask for `/favicon.ico`.)
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// The dashboard page (it asks for an admin token; `#token=…` logs in directly).
#[utoipa::path(
    get,
    path = "/dashboard",
    tag = "dashboard",
    responses((status = 200, description = "The dashboard page", content_type = "text/html", body = String))
)]
pub async fn get_dashboard() -> impl IntoResponse {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// The dashboard's script.
#[utoipa::path(
    get,
    path = "/dashboard/app.js",
    tag = "dashboard",
    responses((status = 200, description = "JavaScript", content_type = "text/javascript", body = String))
)]
pub async fn get_dashboard_script() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// The dashboard's style sheet.
#[utoipa::path(
    get,
    path = "/dashboard/style.css",
    tag = "dashboard",
    responses((status = 200, description = "CSS", content_type = "text/css", body = String))
)]
pub async fn get_dashboard_style() -> impl IntoResponse {
    asset("text/css; charset=utf-8", STYLE_CSS)
}
