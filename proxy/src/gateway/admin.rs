//! The gateway's admin port: `/live`, `/ready` (once the exposed services' instances are known,
//! until the drain starts), `/metrics` and `/endpoints`. Nothing on it changes anything.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::{Ready, ready};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};

use super::Gateway;
use crate::body::{HttpResponse, full};
use crate::serve::{self, Connection, Stopped};

/// How long open admin requests may take to finish once the gateway stops.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Serves the admin port until `stop` resolves.
pub async fn serve(listener: TcpListener, gateway: Arc<Gateway>, stop: impl Future<Output = ()>) -> Stopped {
    serve::serve("admin", listener, stop, STOP_GRACE, Arc::default(), move |stream, _, this| {
        connection(stream, gateway.clone(), this)
    })
    .await
}

async fn connection(stream: TcpStream, gateway: Arc<Gateway>, this: Arc<Connection>) {
    let svc = TowerToHyperService::new(Routes(gateway));
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    serve::http(conn, &this).await;
}

/// The admin routes, as a named service (a closure's anonymous future cannot be proven `Send`
/// inside hyper's generic connection).
#[derive(Clone, Debug)]
struct Routes(Arc<Gateway>);

impl tower::Service<Request<Incoming>> for Routes {
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = Ready<Result<HttpResponse, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        ready(Ok(route(&self.0, &req)))
    }
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
