//! `GET /dashboard`: the live dashboard, a static page compiled into the binary (no CDN, no
//! build step). The page itself is open; everything it shows comes from the admin API with the
//! admin token the user gives it, which stays in the browser's session storage.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const STYLE_CSS: &str = include_str!("dashboard/style.css");

/// Only this origin's script, style and API; no inline script, no framing, no referrer. (`data:`
/// images: the page's empty favicon, so that the browser does not ask for `/favicon.ico`.)
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset_response(content_type: &'static str, body: &'static str) -> impl IntoResponse {
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
    asset_response("text/html; charset=utf-8", INDEX_HTML)
}

/// The dashboard's script (`app.js`) and style sheet (`style.css`).
#[utoipa::path(
    get,
    path = "/dashboard/{asset}",
    tag = "dashboard",
    params(("asset" = String, Path, description = "`app.js` or `style.css`")),
    responses(
        (status = 200, description = "JavaScript or CSS", content_type = "text/plain", body = String),
        (status = 404, description = "No such asset"),
    )
)]
pub async fn get_dashboard_asset(Path(asset): Path<String>) -> Response {
    match asset.as_str() {
        "app.js" => asset_response("text/javascript; charset=utf-8", APP_JS).into_response(),
        "style.css" => asset_response("text/css; charset=utf-8", STYLE_CSS).into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}
