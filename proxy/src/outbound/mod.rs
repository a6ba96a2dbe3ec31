//! The outbound side: the app's calls to other services.
//!
//! The app sends to `127.0.0.1:15001` (as an HTTP proxy, by `Host`, or by path prefix,
//! [`target`]). For each request: the service is followed on first use ([`discovery`]), an
//! instance is chosen ([`balance`]), and the request is sent over a pooled connection
//! ([`endpoint`]). A connect failure moves the request to another instance (it was never
//! sent); a connection that dies before any response byte is retried elsewhere only for
//! idempotent requests, within a retry budget. A response carrying the read-only signal takes
//! its instance out of this sidecar's choices at once. Every failure the app sees is a 502, 503
//! or 504 with `x-berth-error` and a body that says why.

pub mod balance;
pub mod discovery;
mod response;
pub mod target;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use berth_core::metadata::{DRAINING, LIFECYCLE_HEADER};
use berth_core::policy::RequestView;
use berth_core::{Lifecycle, Symbol};
use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tower::retry::budget::{Budget, TpsBudget};

use self::balance::{Ask, NoChoice};
use self::discovery::{Discovery, Service};
use crate::body::{self, Body, ERROR_HEADER, HttpResponse};
use crate::endpoint::{self, Conn, Ejection, Endpoint};
use crate::headers;
use crate::health::error_chain;
use crate::metrics::{Metrics, status_class};
use crate::track::Track;
use crate::upgrade;

/// The header that marks a non-idempotent request as safe to retry (`true`).
pub use berth_core::header::RETRYABLE as RETRYABLE_HEADER;
/// The header that pins a request to a symbol.
pub use berth_core::header::SYMBOL as SYMBOL_HEADER;
/// Bodies up to this size of retryable requests are kept for a retry.
const MAX_REPLAY: u64 = 64 * 1024;
/// Instances one request may try.
const MAX_ATTEMPTS: usize = 4;
/// How long a request waits for a service's first instance set.
const DISCOVERY_WAIT: Duration = Duration::from_secs(5);

/// Outbound timeouts and failure handling.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub connect_timeout: Duration,
    /// Until the response headers; `None` for no limit.
    pub request_timeout: Option<Duration>,
    pub ejection: Ejection,
    /// Move failed requests to other instances and heed the read-only signal (off only with
    /// `--no-lifecycle`).
    pub failover: bool,
}

/// The outbound proxy.
#[derive(Debug)]
pub struct Outbound {
    pub discovery: Arc<Discovery>,
    metrics: Metrics,
    settings: Settings,
    budget: TpsBudget,
    used: AtomicBool,
    in_flight: AtomicU64,
}

impl Outbound {
    pub fn new(discovery: Arc<Discovery>, metrics: Metrics, settings: Settings) -> Self {
        Outbound {
            discovery,
            metrics,
            settings,
            // Retries may add 20% to the requests of the last 10 s, and 10 per second besides.
            budget: TpsBudget::new(Duration::from_secs(10), 10, 0.2),
            used: AtomicBool::new(false),
            in_flight: AtomicU64::new(0),
        }
    }

    /// Whether the app ever sent a request through this sidecar.
    pub fn used(&self) -> bool {
        self.used.load(Ordering::Relaxed)
    }

    /// Outbound requests in progress.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// How long the app's connections may take to finish once outbound stops (the app has
/// stopped by then, or the drain was cut short).
const STOP_GRACE: Duration = Duration::from_secs(1);

/// Accepts the app's connections until `stop` (outbound does not drain: apps call out while
/// they finish their work), each served by `handler` behind the tracking layer.
pub async fn serve<S>(
    listener: TcpListener,
    handler: S,
    metrics: Metrics,
    stop: impl std::future::Future<Output = ()>,
) -> crate::serve::Stopped
where
    S: tower::Service<Request<Incoming>, Response = HttpResponse, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    // The metric handles, looked up once for every connection.
    let tracking = crate::track::Tracking::new("outbound", &metrics, None);
    let open = metrics.connections.with_label_values(&["outbound"]);
    crate::serve::serve("outbound", listener, stop, STOP_GRACE, Arc::default(), move |stream, _, this| {
        connection(stream, tracking.wrap(handler.clone()), open.clone(), this)
    })
    .await
}

async fn connection<S>(
    stream: TcpStream,
    stack: Track<S>,
    open: prometheus::IntGauge,
    this: Arc<crate::serve::Connection>,
) where
    S: tower::Service<Request<Incoming>, Response = HttpResponse, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let _open = crate::serve::Open::new(open);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(stack));
    crate::serve::http(conn, &this).await;
}

/// Headers and cookies of a request, for policy rules.
struct View<'a>(&'a HeaderMap);

impl RequestView for View<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(|v| v.to_str().ok())
    }

    fn cookie(&self, name: &str) -> Option<&str> {
        self.0
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }
}

fn is_idempotent(method: &Method, headers: &HeaderMap) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    ) || headers.get(RETRYABLE_HEADER).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"))
}

/// The parts of a request that every attempt sends again.
struct Prepared {
    method: Method,
    headers: HeaderMap,
    host: String,
    path: http::uri::PathAndQuery,
}

impl Prepared {
    fn request(&self, h2: bool, body: Body) -> Result<Request<Body>, http::Error> {
        let (uri, version): (Uri, Version) = if h2 {
            (format!("http://{}{}", self.host, self.path).parse()?, Version::HTTP_2)
        } else {
            (self.path.as_str().parse()?, Version::HTTP_11)
        };
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = uri;
        *req.version_mut() = version;
        *req.headers_mut() = self.headers.clone();
        if !h2 {
            req.headers_mut().insert(HOST, HeaderValue::from_str(&self.host)?);
        }
        Ok(req)
    }
}

/// A request's body, and whether it may be sent again.
struct Payload {
    idempotent: bool,
    /// The whole body, kept for a retry.
    replay: Option<Bytes>,
    /// The body as it streams in, when not kept.
    streamed: Option<Body>,
}

/// What the last failed attempt saw.
enum Failure {
    Connect(String),
    /// An instance's own error answer, passed on if no other instance does better.
    Answered(HttpResponse),
}

impl Outbound {
    /// Routes one request from the app.
    pub async fn handle(&self, req: Request<Incoming>) -> HttpResponse {
        self.used.store(true, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let resp = self.route(req).await;
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        resp
    }

    async fn route(&self, mut req: Request<Incoming>) -> HttpResponse {
        if req.method() == Method::CONNECT {
            return response::connect_unsupported();
        }
        let host_header = req.headers().get(HOST).and_then(|h| h.to_str().ok());
        let target = match target::resolve(req.uri(), host_header) {
            Ok(t) => t,
            Err(e) => return body::error(StatusCode::BAD_REQUEST, "no-service", e),
        };
        let explicit = match req
            .headers()
            .get(SYMBOL_HEADER)
            .map(|v| v.to_str().unwrap_or("").parse::<Symbol>())
        {
            Some(Ok(s)) => Some(s),
            Some(Err(e)) => {
                return body::error(StatusCode::BAD_REQUEST, "bad-symbol", format!("{SYMBOL_HEADER}: {e}"));
            }
            None => target.symbol.clone(),
        };
        let service = match self.discovery.service(&target.service).await {
            Ok(s) => s,
            Err(e) => return body::error(StatusCode::SERVICE_UNAVAILABLE, "too-many-services", e),
        };
        if let Err(e) = service.ready(DISCOVERY_WAIT).await {
            return body::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "registry-unavailable",
                format!(
                    "cannot look up service `{}` in namespace `{}`: {e}",
                    service.name,
                    self.discovery.namespace()
                ),
            );
        }
        let upgrade = upgrade::requested(&req).then(|| hyper::upgrade::on(&mut req));
        let protocol = upgrade.as_ref().and_then(|_| upgrade::protocol(req.headers()));
        let (mut parts, incoming) = req.into_parts();
        let idempotent = is_idempotent(&parts.method, &parts.headers);
        headers::strip_hop_by_hop(&mut parts.headers);
        if let Some(p) = protocol {
            upgrade::restore(&mut parts.headers, p);
        }
        parts.headers.remove(HOST);
        let prepared =
            Prepared { method: parts.method, headers: parts.headers, host: target.host, path: target.path };
        // Keep the body for a retry when it is small enough and the request may be retried.
        let size = incoming.size_hint();
        let (replay, streamed) = if incoming.is_end_stream() || size.exact() == Some(0) {
            (Some(Bytes::new()), None)
        } else if idempotent && size.upper().is_some_and(|u| u <= MAX_REPLAY) {
            match incoming.collect().await {
                Ok(b) => (Some(b.to_bytes()), None),
                Err(e) => {
                    return body::error(
                        StatusCode::BAD_REQUEST,
                        "bad-request",
                        format!("reading the request body: {e}"),
                    );
                }
            }
        } else {
            (None, Some(body::boxed(incoming)))
        };
        self.budget.deposit();
        let body = Payload { idempotent, replay, streamed };
        self.send(&service, prepared, explicit.as_ref(), body, upgrade).await
    }

    async fn send(
        &self,
        service: &Arc<Service>,
        prepared: Prepared,
        explicit: Option<&Symbol>,
        body: Payload,
        mut upgrade: Option<OnUpgrade>,
    ) -> HttpResponse {
        let Payload { idempotent, replay, mut streamed } = body;
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut last: Option<Failure> = None;
        let mut unsent = 0;
        let attempts = if self.settings.failover { MAX_ATTEMPTS } else { 1 };
        while tried.len() < attempts {
            let snapshot = service.snapshot.load();
            let policy = service.policy.load();
            let ask = Ask {
                explicit,
                request: &View(&prepared.headers),
                tried: &tried,
                now_ms: berth_core::now_millis(),
            };
            let (index, symbol) = match balance::choose(&snapshot, &policy.compiled, &ask) {
                Ok(c) => c,
                Err(NoChoice::Exhausted { .. }) if last.is_some() => break,
                Err(no) => return response::no_choice(self, service, no).await,
            };
            let endpoint = snapshot.entries[index].endpoint.clone();
            tried.push(endpoint.addr);
            // An upgrade needs an HTTP/1.1 connection of its own, even to an HTTP/2 instance.
            let h2 = endpoint.h2 && upgrade.is_none();
            let conn = if upgrade.is_some() {
                endpoint.checkout_http1(self.settings.connect_timeout).await
            } else {
                endpoint.checkout(self.settings.connect_timeout).await
            };
            let conn = match conn {
                Ok(c) => c,
                Err(e) => {
                    self.failed(service, &endpoint, "connect");
                    last = Some(Failure::Connect(e.to_string()));
                    continue;
                }
            };
            let Some(body) = replay.clone().map(body::full).or_else(|| streamed.take()) else { break };
            let req = match prepared.request(h2, body) {
                Ok(r) => r,
                Err(e) => return body::error(StatusCode::BAD_REQUEST, "bad-request", e),
            };
            let in_flight = endpoint.start();
            let attempt = async {
                match conn {
                    Conn::H1(mut c) => c.try_send_request(req).await.map(|r| (r, Some(c))),
                    Conn::H2(mut c) => c.try_send_request(req).await.map(|r| (r, None)),
                }
            };
            let outcome = match self.settings.request_timeout {
                Some(t) => match tokio::time::timeout(t, attempt).await {
                    Ok(o) => o,
                    Err(_) => {
                        self.failed(service, &endpoint, "timeout");
                        return response::timeout(service, &endpoint, t);
                    }
                },
                None => attempt.await,
            };
            match outcome {
                Ok((mut resp, conn)) => {
                    in_flight.answered();
                    if resp.status() == StatusCode::SWITCHING_PROTOCOLS
                        && let Some(client) = upgrade.take()
                    {
                        upgrade::tunnel(client, hyper::upgrade::on(&mut resp), endpoint.addr);
                    }
                    let failover = self.settings.failover;
                    if failover && resp.headers().get(LIFECYCLE_HEADER).is_some_and(|v| v == DRAINING) {
                        endpoint.mark_draining();
                        self.metrics.readonly_signals.with_label_values(&[&service.name]).inc();
                        tracing::debug!(service = %service.name, instance = %endpoint.addr, "read-only signal: instance is draining");
                    }
                    // A provider sidecar whose app is down never passed the request on.
                    if resp.status() == StatusCode::SERVICE_UNAVAILABLE
                        && resp.headers().get(ERROR_HEADER).is_some_and(|v| v == "app-unavailable")
                        && replay.is_some()
                        && failover
                    {
                        self.failed(service, &endpoint, "app-unavailable");
                        last =
                            Some(Failure::Answered(endpoint::passthrough(resp, endpoint, conn, in_flight)));
                        continue;
                    }
                    // A provider sidecar whose app dropped the connection unanswered: for the
                    // consumer that is a connection that died before any response byte.
                    if resp.status() == StatusCode::BAD_GATEWAY
                        && resp.headers().get(ERROR_HEADER).is_some_and(|v| v == "app-failed")
                        && failover
                        && idempotent
                        && replay.is_some()
                        && self.budget.withdraw()
                    {
                        self.failed(service, &endpoint, "reset");
                        last =
                            Some(Failure::Answered(endpoint::passthrough(resp, endpoint, conn, in_flight)));
                        continue;
                    }
                    endpoint.success();
                    self.count(service, symbol.as_str(), resp.status());
                    return endpoint::passthrough(resp, endpoint, conn, in_flight);
                }
                Err(mut e) => {
                    if let Some(req) = e.take_message() {
                        // Never written: the pooled connection was closing. Same request, again
                        // (a few times at most: a fresh connection does not do this).
                        streamed = Some(req.into_body());
                        if unsent < MAX_ATTEMPTS {
                            unsent += 1;
                            tried.pop();
                        } else {
                            last = Some(Failure::Connect(
                                "the connection closed before the request was sent".into(),
                            ));
                        }
                        continue;
                    }
                    let error = error_chain(&e.into_error());
                    self.failed(service, &endpoint, "reset");
                    if self.settings.failover && idempotent && replay.is_some() && self.budget.withdraw() {
                        self.metrics.outbound_retries.with_label_values(&[&service.name, "reset"]).inc();
                        last = Some(Failure::Connect(error));
                        continue;
                    }
                    self.count(service, symbol.as_str(), StatusCode::BAD_GATEWAY);
                    return response::reset(service, &endpoint, &error, idempotent);
                }
            }
        }
        match last {
            Some(Failure::Answered(resp)) => resp,
            Some(Failure::Connect(detail)) => response::exhausted(service, &tried, &detail),
            None => response::exhausted(service, &tried, "no instance could be tried"),
        }
    }

    fn failed(&self, service: &Service, endpoint: &Endpoint, reason: &str) {
        if endpoint.failure(self.settings.ejection) {
            self.metrics.outbound_ejections.with_label_values(&[&service.name]).inc();
            tracing::info!(service = %service.name, instance = %endpoint.addr, reason, "instance ejected");
        }
        if reason != "timeout" {
            self.metrics.outbound_retries.with_label_values(&[&service.name, reason]).inc();
        }
    }

    fn count(&self, service: &Service, symbol: &str, status: StatusCode) {
        self.metrics
            .outbound_requests
            .with_label_values(&[&service.name, symbol, status_class(status)])
            .inc();
    }

    /// Updates the per-state instance gauges (before a scrape).
    pub fn refresh_gauges(&self) {
        let now = berth_core::now_millis();
        self.metrics.outbound_instances.reset();
        for service in self.discovery.all().values() {
            let snapshot = service.snapshot.load();
            for e in &snapshot.entries {
                let state = state_of(e, now);
                self.metrics
                    .outbound_instances
                    .with_label_values(&[&service.name, e.symbol.as_str(), state])
                    .inc();
            }
        }
    }

    /// `/endpoints`: every followed service with its instances and policy.
    pub fn describe(&self) -> serde_json::Value {
        let now = berth_core::now_millis();
        let mut services = serde_json::Map::new();
        for (name, service) in self.discovery.all().iter() {
            let snapshot = service.snapshot.load();
            let warmup = snapshot.warmup_applies(now);
            let instances: Vec<serde_json::Value> = snapshot
                .entries
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "addr": e.endpoint.addr,
                        "symbol": e.symbol,
                        "state": state_of(e, now),
                        "in_flight": e.endpoint.in_flight(),
                        "ewma_ms": e.endpoint.ewma_micros() as f64 / 1000.0,
                        "weight": e.weight,
                        "effective_weight": snapshot.effective_weight(e, now, warmup),
                        "nacos_weight": e.nacos_weight,
                        "protocol": if e.endpoint.h2 { "h2c" } else { "http1" },
                    })
                })
                .collect();
            services.insert(
                name.clone(),
                serde_json::json!({
                    "namespace": self.discovery.namespace(),
                    "policy": &**service.policy.load(),
                    "listed": snapshot.listed,
                    "instances": instances,
                }),
            );
        }
        serde_json::json!({ "services": services })
    }
}

/// An instance's state as this sidecar sees it: `serving`, `warming`, `draining` or `ejected`.
fn state_of(e: &balance::Entry, now: u64) -> &'static str {
    if e.endpoint.is_draining() {
        Lifecycle::Draining.as_str()
    } else if e.endpoint.is_ejected() {
        "ejected"
    } else if e.started_at.is_some_and(|s| now < s + e.warmup_ms) {
        Lifecycle::Warming.as_str()
    } else {
        Lifecycle::Serving.as_str()
    }
}
