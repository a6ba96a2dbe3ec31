//! The page at `/`: plain HTML, CSS and JavaScript built into the binary (no CDN, nothing
//! fetched at run time). It carries no data and needs no token; the script asks the API with
//! the token the person typed, or gave in the URL fragment (`/#token=…`, which browsers never
//! send), kept in `sessionStorage`. No cookies, so no cross-site request can act as them.

use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use super::ApiError;

const INDEX: &str = include_str!("../../page/index.html");
const SCRIPT: &str = include_str!("../../page/page.js");
const STYLE: &str = include_str!("../../page/page.css");

/// Only our own files, no inline script, no framing; the token must not leak in a Referer.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
    img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn file(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// `GET /`: the page.
pub async fn index() -> Response {
    file(INDEX, "text/html; charset=utf-8")
}

/// `GET /assets/{file}`: its script and style.
pub async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    match name.as_str() {
        "page.js" => Ok(file(SCRIPT, "text/javascript; charset=utf-8")),
        "page.css" => Ok(file(STYLE, "text/css; charset=utf-8")),
        _ => Err(ApiError::not_found(format!("no asset `{name}`; the page is at /"))),
    }
}
