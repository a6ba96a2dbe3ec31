//! The gateway's admin port: `/live`, `/ready` (once the exposed services' instances are known,
//! until the drain starts), `/metrics` and `/endpoints`. Nothing on it changes anything.

use std::convert::Infallible;
use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::Gateway;
use crate::body::{HttpResponse, full};

/// Serves the admin port until `stop` fires.
pub async fn serve(listener: TcpListener, gateway: Arc<Gateway>, mut stop: watch::Receiver<bool>) {
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = async { let _ = stop.wait_for(|s| *s).await; } => break,
        };
        let gateway = gateway.clone();
        let svc = service_fn(move |req| {
            let gateway = gateway.clone();
            async move { Ok::<_, Infallible>(route(&gateway, &req)) }
        });
        let conn =
            auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), svc).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
        });
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), graceful.shutdown()).await;
}

fn route(gateway: &Gateway, req: &Request<Incoming>) -> HttpResponse {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".to_owned());
        resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET"));
        return resp;
    }
    match req.uri().path() {
        "/live" => text(StatusCode::OK, "live\n".to_owned()),
        "/ready" => match gateway.ready() {
            Ok(()) => text(StatusCode::OK, "ready\n".to_owned()),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
        },
        "/metrics" => {
            gateway.outbound.refresh_gauges();
            let mut resp = text(StatusCode::OK, gateway.metrics.render());
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp
        }
        "/endpoints" => {
            let mut resp = text(StatusCode::OK, gateway.outbound.describe().to_string());
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            resp
        }
        _ => text(StatusCode::NOT_FOUND, "not found; routes: /live /ready /metrics /endpoints\n".to_owned()),
    }
}

fn text(status: StatusCode, body: String) -> HttpResponse {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}
