//! The HTTP API: the routes, the shared state, JSON errors.
//!
//! Every route is added through [`Routes`], which records its method and path: that table is
//! what the OpenAPI test compares with `openapi.json`, so a route cannot be added without
//! being documented. Handlers take [`Reader`](crate::auth::Reader) or
//! [`Writer`](crate::auth::Writer) when they need a token; the extractor answers 401/403
//! before the handler runs.

mod error;
mod instances;
mod live;
mod page;
mod policy;
mod services;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::handler::Handler;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use berth_core::registry::Registry;
use http::{HeaderValue, Method, header};

pub use self::error::ApiError;
pub(crate) use self::error::json_body;
use tokio::sync::watch;

use crate::auth::Tokens;
use crate::events::Events;
use crate::fleet::Fleet;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::traffic::Traffic;

/// The largest request body accepted: a policy is a few kilobytes.
const BODY_LIMIT: usize = 256 * 1024;

/// What every handler shares. Admin keeps no state of its own: everything is in the registry.
#[derive(Clone, Debug)]
pub struct AppState {
    pub registry: Arc<dyn Registry>,
    pub store: Store,
    pub tokens: Arc<Tokens>,
    pub metrics: Metrics,
    /// How long after registration an instance counts as warming.
    pub warmup: Duration,
    /// How long a zombie probe waits.
    pub probe_timeout: Duration,
    /// The latest scan of the sidecars.
    pub fleet: Fleet,
    /// The sidecars' counters of the last minute.
    pub traffic: Traffic,
    /// Where traffic numbers come from instead, with `--prometheus`.
    pub prometheus: Option<crate::traffic::prometheus::Prometheus>,
    pub events: Events,
    /// Turns `true` when admin shuts down: event streams end.
    pub stopping: watch::Receiver<bool>,
}

/// The router under construction and the table of its routes.
struct Routes {
    router: Router<AppState>,
    table: Vec<(Method, &'static str)>,
}

impl Routes {
    fn add<H, T>(mut self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        // Only GET, PUT and POST are routed, each with its filter; a method without one would
        // be routed as GET and then fail the OpenAPI test.
        let filter =
            axum::routing::MethodFilter::try_from(method.clone()).unwrap_or(axum::routing::MethodFilter::GET);
        self.router = self.router.route(path, axum::routing::on(filter, handler));
        self.table.push((method, path));
        self
    }
}

/// Every route: `(method, path)` and the router serving them.
fn routes() -> Routes {
    let r = Routes { router: Router::new(), table: Vec::new() };
    let s = "/api/v1/services/{service}";
    r.add(Method::GET, "/", page::index)
        .add(Method::GET, "/assets/{file}", page::asset)
        .add(Method::GET, "/healthz", healthz)
        .add(Method::GET, "/metrics", metrics)
        .add(Method::GET, "/api/v1/openapi.json", openapi)
        .add(Method::GET, "/api/v1/whoami", live::whoami)
        .add(Method::GET, "/api/v1/events", live::events)
        .add(Method::GET, "/api/v1/services", services::list)
        .add(Method::GET, s, services::show)
        .add(Method::GET, "/api/v1/services/{service}/zombies", services::zombies)
        .add(Method::GET, "/api/v1/services/{service}/traffic", live::traffic)
        .add(Method::GET, "/api/v1/services/{service}/policy", policy::get)
        .add(Method::PUT, "/api/v1/services/{service}/policy", policy::put)
        .add(Method::PUT, "/api/v1/services/{service}/weights", policy::weights)
        .add(Method::PUT, "/api/v1/services/{service}/rules", policy::rules)
        .add(Method::PUT, "/api/v1/services/{service}/symbols/{address}", policy::symbol)
        .add(Method::POST, "/api/v1/services/{service}/promote", policy::promote)
        .add(Method::POST, "/api/v1/services/{service}/rollback", policy::rollback)
        .add(Method::POST, "/api/v1/services/{service}/symbols/{symbol}/retire", policy::retire)
        .add(Method::GET, "/api/v1/services/{service}/history", policy::history)
}

/// The `(method, path)` of every route, for the OpenAPI check.
pub fn route_table() -> Vec<(Method, &'static str)> {
    routes().table
}

/// The API's router, with its layers.
pub fn router(state: AppState) -> Router {
    routes()
        .router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Outermost: metrics see every answer, including the extractors' 401s and 413s.
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

impl AppState {
    /// `service`'s traffic over the last minute, from the sidecars or Prometheus.
    pub async fn window(&self, service: &str, policy: &berth_core::policy::Policy) -> crate::traffic::Window {
        let targets = crate::traffic::targets(policy);
        match &self.prometheus {
            Some(p) => p.window(service, &targets).await,
            None => self.traffic.window(service, berth_core::now_millis(), &targets),
        }
    }
}

/// Counts and times every request by its route template (never the raw path).
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let method = req.method().clone();
    let started = Instant::now();
    let resp = next.run(req).await;
    state.metrics.observe(&route, &method, resp.status(), started.elapsed());
    resp
}

async fn healthz() -> Response {
    axum::Json(serde_json::json!({"status": "ok", "version": berth_core::VERSION})).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut resp = state.metrics.render().into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    resp
}

async fn openapi() -> Response {
    let mut resp = crate::openapi::DOCUMENT.into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!(
        "no route {} {}; the API is described at /api/v1/openapi.json",
        req.method(),
        req.uri().path()
    ))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        http::StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed",
        format!("{} does not take {}; see /api/v1/openapi.json", req.uri().path(), req.method()),
    )
}
