//! The HTTPS server the API server calls.
//!
//! | route | answer |
//! |---|---|
//! | `POST /mutate` | an AdmissionReview; pods are injected when annotated `berth.io/inject: enabled` |
//! | `POST /mutate/namespace-enabled` | the same, for namespaces labelled `berth.io/inject=enabled`: pods are injected unless annotated `disabled` |
//! | `GET /healthz` | 200 while the process serves |
//! | `GET /metrics` | Prometheus text |
//!
//! Each connection is a TLS handshake (bounded in time) and then HTTP/2 or HTTP/1.1; on
//! shutdown the listener closes and open connections finish their requests.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::config::InjectConfig;
use crate::metrics::Metrics;
use crate::mutate::{Context, Scope};
use crate::review::review;

/// The path for pods of namespaces that opted in by label.
pub const NAMESPACE_ENABLED_PATH: &str = "/mutate/namespace-enabled";
/// The path for every other pod: injected only when annotated.
pub const POD_PATH: &str = "/mutate";
/// The largest review body accepted (the API server's own limit for an object is 3 MiB).
const MAX_BODY: usize = 8 * 1024 * 1024;
/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the routes share.
#[derive(Debug)]
pub struct Webhook {
    pub config: InjectConfig,
    pub own_namespace: Option<String>,
    pub metrics: Metrics,
}

type HttpResponse = Response<Full<Bytes>>;

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> HttpResponse {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn error(status: StatusCode, detail: &str) -> HttpResponse {
    let body = serde_json::json!({ "error": status.canonical_reason().unwrap_or(""), "detail": detail });
    respond(status, "application/json", body.to_string())
}

impl Webhook {
    async fn route(&self, req: Request<Incoming>) -> HttpResponse {
        let scope = match req.uri().path() {
            POD_PATH => Scope::Pod,
            NAMESPACE_ENABLED_PATH => Scope::Namespace,
            "/healthz" if req.method() == Method::GET => {
                return respond(StatusCode::OK, "text/plain", "ok\n");
            }
            "/metrics" if req.method() == Method::GET => {
                return respond(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    self.metrics.render(),
                );
            }
            "/healthz" | "/metrics" => return error(StatusCode::METHOD_NOT_ALLOWED, "use GET"),
            _ => {
                return error(
                    StatusCode::NOT_FOUND,
                    "routes: POST /mutate, POST /mutate/namespace-enabled, GET /healthz, GET /metrics",
                );
            }
        };
        if req.method() != Method::POST {
            return error(StatusCode::METHOD_NOT_ALLOWED, "POST an admission.k8s.io/v1 AdmissionReview");
        }
        let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                self.metrics.injections.with_label_values(&["invalid"]).inc();
                return error(StatusCode::PAYLOAD_TOO_LARGE, &format!("cannot read the body: {e}"));
            }
        };
        let started = Instant::now();
        let ctx = Context { config: &self.config, own_namespace: self.own_namespace.as_deref() };
        let answer = review(ctx, &body, scope);
        self.metrics.review_duration.observe(started.elapsed().as_secs_f64());
        self.metrics.injections.with_label_values(&[answer.result]).inc();
        match serde_json::to_vec(&answer.review) {
            Ok(json) => respond(answer.status, "application/json", json),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &format!("cannot write the review: {e}")),
        }
    }
}

/// Serves `listener` until `stop` resolves, then lets open requests finish (up to 10 s).
pub async fn serve(
    listener: TcpListener,
    tls: TlsAcceptor,
    webhook: Arc<Webhook>,
    stop: impl std::future::Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let (tls, webhook, watcher) = (tls.clone(), webhook.clone(), graceful.watcher());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return tracing::debug!(peer = %peer, error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!(peer = %peer, "TLS handshake timed out"),
            };
            let svc = service_fn(move |req| {
                let webhook = webhook.clone();
                async move { Ok::<_, Infallible>(webhook.route(req).await) }
            });
            let conn = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after 10s; closing them");
    }
}
