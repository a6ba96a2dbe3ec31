//! The last inbound hop: the request, minus hop-by-hop fields and plus `x-forwarded-for`, to
//! the app on 127.0.0.1 over pooled connections.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::header::HOST;
use http::{HeaderValue, Request, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::body::{self, HttpResponse};
use crate::config::AppProtocol;
use crate::headers;
use crate::health::error_chain;

/// How long connecting to the app may take (it is on loopback: refusals are immediate).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Pooled connections idle longer than this are closed by us first, well before common app
/// servers' keep-alive timeouts (5 s in Node.js), so we never send on a connection the app is
/// closing.
const POOL_IDLE: Duration = Duration::from_secs(3);

/// Sends requests to the app.
#[derive(Clone, Debug)]
pub struct Forward {
    client: Client<HttpConnector, Incoming>,
    app: SocketAddr,
    protocol: AppProtocol,
    peer: Option<SocketAddr>,
}

impl Forward {
    /// A forwarder to the app at `app`.
    pub fn new(app: SocketAddr, protocol: AppProtocol) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .http2_only(protocol == AppProtocol::H2c)
            .build(connector);
        Forward { client, app, protocol, peer: None }
    }

    /// The same forwarder for requests from `peer`.
    pub fn for_peer(&self, peer: SocketAddr) -> Self {
        Forward { peer: Some(peer), ..self.clone() }
    }
}

impl tower::Service<Request<Incoming>> for Forward {
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<HttpResponse, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        // An HTTP/2 request names its host in :authority; an HTTP/1.1 app needs a Host field.
        if !parts.headers.contains_key(HOST)
            && let Some(authority) =
                parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            parts.headers.insert(HOST, authority);
        }
        headers::strip_hop_by_hop(&mut parts.headers);
        if let Some(peer) = self.peer {
            headers::add_forwarded(&mut parts.headers, peer.ip());
        }
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let app = self.app;
        parts.uri = match format!("http://{app}{path}").parse() {
            Ok(uri) => uri,
            Err(e) => {
                let resp =
                    body::error(StatusCode::BAD_REQUEST, "bad-request", format!("bad request target: {e}"));
                return Box::pin(async move { Ok(resp) });
            }
        };
        parts.version = match self.protocol {
            AppProtocol::H2c => Version::HTTP_2,
            AppProtocol::Http1 => Version::HTTP_11,
        };
        let fut = self.client.request(Request::from_parts(parts, body));
        Box::pin(async move {
            Ok(match fut.await {
                Ok(resp) => {
                    let (mut parts, body) = resp.into_parts();
                    headers::strip_hop_by_hop(&mut parts.headers);
                    http::Response::from_parts(parts, body::boxed(body))
                }
                Err(e) if e.is_connect() => body::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "app-unavailable",
                    format!(
                        "the app at {app} is not accepting connections ({}); it may be starting or stopping",
                        error_chain(&e)
                    ),
                ),
                Err(e) => body::error(
                    StatusCode::BAD_GATEWAY,
                    "app-failed",
                    format!("the app at {app} failed before answering ({})", error_chain(&e)),
                ),
            })
        })
    }
}
