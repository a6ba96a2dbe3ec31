//! The admin port: probes, metrics, state and the drain trigger.
//!
//! | route | answer |
//! |---|---|
//! | `GET /live` | 200 while the process runs |
//! | `GET /ready` | 200 once registered and healthy, else 503 saying why |
//! | `GET /metrics` | Prometheus text |
//! | `GET /state` | JSON: lifecycle, since when, instance, health, in flight, drain progress |
//! | `GET /endpoints` | JSON: every followed service's instances (symbol, state, load, weight) and policy |
//! | `POST /drain[?wait=true]` | starts the drain; with `wait`, answers once stopped |
//!
//! `/drain` also answers `GET`, because a Kubernetes `preStop` `httpGet` hook can only GET. It
//! is the one route that changes anything: from anywhere but loopback it needs the pod's token
//! in `x-berth-drain-token`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::body::{HttpResponse, full};
use crate::config::DrainToken;
use crate::drain::Drain;
use crate::lifecycle::State;
use crate::metrics::Metrics;
use crate::serve::{self, Connection, Stopped};

/// The header carrying the drain token.
pub use berth_core::header::DRAIN_TOKEN as DRAIN_TOKEN_HEADER;

/// What the admin routes read.
#[derive(Debug)]
pub struct Admin {
    pub service: String,
    pub symbol: String,
    pub state: watch::Receiver<State>,
    pub drain: Arc<Drain>,
    pub metrics: Metrics,
    pub token: Option<DrainToken>,
    pub outbound: Arc<crate::outbound::Outbound>,
}

/// How long open admin requests may take to finish once the port stops.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Serves the admin port until `stop` resolves, then lets open requests (a
/// `/drain?wait=true` answering "stopped") finish.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, stop: impl Future<Output = ()>) -> Stopped {
    serve::serve("admin", listener, stop, STOP_GRACE, Arc::default(), move |stream, peer, this| {
        connection(stream, peer, admin.clone(), this)
    })
    .await
}

async fn connection(stream: TcpStream, peer: SocketAddr, admin: Arc<Admin>, this: Arc<Connection>) {
    let svc = TowerToHyperService::new(Routes { admin, peer });
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    serve::http(conn, &this).await;
}

/// The admin routes for one connection's peer.
// A named service rather than a closure: with a closure's anonymous future, rustc cannot
// prove the connection's future `Send` inside hyper's generic connection.
#[derive(Clone, Debug)]
struct Routes {
    admin: Arc<Admin>,
    peer: SocketAddr,
}

impl tower::Service<Request<Incoming>> for Routes {
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<HttpResponse, Infallible>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let (admin, peer) = (self.admin.clone(), self.peer);
        Box::pin(async move { Ok(admin.route(req, peer).await) })
    }
}

impl Admin {
    async fn route(&self, req: Request<Incoming>, peer: SocketAddr) -> HttpResponse {
        let path = req.uri().path();
        let get = matches!(*req.method(), Method::GET | Method::HEAD);
        match path {
            "/live" if get => text(StatusCode::OK, "live\n"),
            "/ready" if get => self.ready(),
            "/endpoints" if get => json_response(StatusCode::OK, &self.outbound.describe()),
            "/metrics" if get => {
                self.outbound.refresh_gauges();
                let mut resp = text(StatusCode::OK, self.metrics.render());
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                resp
            }
            "/state" if get => json_response(StatusCode::OK, &self.state_json()),
            "/drain" if get || req.method() == Method::POST => self.drain(&req, peer).await,
            "/live" | "/ready" | "/metrics" | "/state" | "/endpoints" => method_not_allowed("GET"),
            "/drain" => method_not_allowed("POST"),
            _ => json_response(
                StatusCode::NOT_FOUND,
                &json!({"error": "not found", "detail": "routes: /live /ready /metrics /state /endpoints /drain"}),
            ),
        }
    }

    fn ready(&self) -> HttpResponse {
        let state = self.state.borrow();
        if state.is_ready() {
            return text(StatusCode::OK, format!("ready: {}\n", state.lifecycle));
        }
        let why = if !state.healthy {
            format!("not ready: {}\n", state.failing.join("; "))
        } else {
            format!("not ready: {}\n", state.lifecycle)
        };
        text(StatusCode::SERVICE_UNAVAILABLE, why)
    }

    fn state_json(&self) -> serde_json::Value {
        let state = self.state.borrow().clone();
        json!({
            "service": self.service,
            "symbol": self.symbol,
            "lifecycle": state.lifecycle,
            "since_ms": state.since_ms,
            "ready": state.is_ready(),
            "healthy": state.healthy,
            "failing": state.failing,
            "instance": state.instance,
            "in_flight": self.drain.in_flight(),
            "drain": self.drain.progress(),
        })
    }

    async fn drain(&self, req: &Request<Incoming>, peer: SocketAddr) -> HttpResponse {
        if !self.may_drain(req, peer) {
            return json_response(
                StatusCode::FORBIDDEN,
                &json!({
                    "error": "forbidden",
                    "detail": format!("a drain from {} needs the pod's drain token in {DRAIN_TOKEN_HEADER}", peer.ip()),
                }),
            );
        }
        self.drain.start(&format!("{} /drain from {}", req.method(), peer.ip()));
        let wait =
            req.uri().query().is_some_and(|q| q.split('&').any(|kv| kv == "wait=true" || kv == "wait"));
        if !wait {
            return json_response(StatusCode::ACCEPTED, &self.state_json());
        }
        let mut state = self.state.clone();
        let _ = state.wait_for(|s| s.lifecycle == berth_core::Lifecycle::Stopped).await;
        json_response(StatusCode::OK, &self.state_json())
    }

    fn may_drain(&self, req: &Request<Incoming>, peer: SocketAddr) -> bool {
        let given = req.headers().get(DRAIN_TOKEN_HEADER).map(HeaderValue::as_bytes);
        match (&self.token, given) {
            (Some(token), Some(given)) if bool::from(token.0.as_bytes().ct_eq(given)) => true,
            _ => peer.ip().is_loopback(),
        }
    }
}

fn text(status: StatusCode, body: impl Into<bytes::Bytes>) -> HttpResponse {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> HttpResponse {
    let mut resp = Response::new(full(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn method_not_allowed(allow: &'static str) -> HttpResponse {
    let mut resp = json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &json!({"error": "method not allowed", "detail": format!("use {allow}")}),
    );
    resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}
