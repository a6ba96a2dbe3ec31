//! The last inbound hop: the request, minus hop-by-hop fields and plus `x-forwarded-for`, to
//! the app on 127.0.0.1 through the [`AppPool`] (bounded, pooled connections), answered within
//! the request timeout.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::header::HOST;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use tokio::sync::OwnedSemaphorePermit;

use super::app::{AppPool, Deadline};
use crate::body::{self, Body, HttpResponse};
use crate::endpoint::{self, Conn};
use crate::headers;
use crate::health::error_chain;
use crate::lane::{self, Lanes};
use crate::upgrade;

/// How long connecting to the app for an upgrade may take (on loopback: refusals are
/// immediate).
const UPGRADE_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Sends of one request on pooled connections that turned out to be closing (the request was
/// not written, so sending it again is safe).
const MAX_RESENDS: usize = 3;

/// Sends requests to the app.
#[derive(Clone, Debug)]
pub struct Forward {
    app: Arc<AppPool>,
    authority: Authority,
    /// The client's address as a header value, made once per connection.
    peer: Option<HeaderValue>,
    /// How a request's lane is found, to hand it to the app in both forms.
    lanes: Arc<Lanes>,
}

impl Forward {
    /// A forwarder to the app behind `app`.
    pub fn new(app: Arc<AppPool>) -> Self {
        let authority = Authority::try_from(app.endpoint.addr.to_string())
            .unwrap_or_else(|_| Authority::from_static("127.0.0.1"));
        Forward { app, authority, peer: None, lanes: Arc::default() }
    }

    /// The same forwarder, finding lanes in the headers `lanes` names (its own symbol aside:
    /// that is for the app's outbound calls).
    pub fn with_lanes(self, lanes: &Lanes) -> Self {
        Forward { lanes: Arc::new(lanes.without_own()), ..self }
    }

    /// The same forwarder for requests from `peer`.
    pub fn for_peer(&self, peer: SocketAddr) -> Self {
        Forward { peer: HeaderValue::try_from(peer.ip().to_string()).ok(), ..self.clone() }
    }
}

impl tower::Service<Request<Incoming>> for Forward {
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<HttpResponse, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Incoming>) -> Self::Future {
        let upgrade = upgrade::requested(&req).then(|| hyper::upgrade::on(&mut req));
        let protocol = upgrade.as_ref().and_then(|_| upgrade::protocol(req.headers()));
        let (mut parts, incoming) = req.into_parts();
        // An HTTP/2 request names its host in :authority; an HTTP/1.1 app needs a Host field.
        if !parts.headers.contains_key(HOST)
            && let Some(authority) =
                parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            parts.headers.insert(HOST, authority);
        }
        headers::strip_hop_by_hop(&mut parts.headers);
        if let Some(p) = protocol {
            upgrade::restore(&mut parts.headers, p);
        }
        if let Some(peer) = &self.peer {
            headers::add_forwarded(&mut parts.headers, peer);
        }
        lane::hand_to_app(&mut parts.headers, &self.lanes);
        let path = parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        // HTTP/1.1 takes the origin form (`/path`, with Host); HTTP/2 needs scheme and authority.
        let h2 = self.app.endpoint.h2 && upgrade.is_none();
        parts.uri = if h2 {
            let mut uri = http::uri::Parts::default();
            uri.scheme = Some(Scheme::HTTP);
            uri.authority = Some(self.authority.clone());
            uri.path_and_query = Some(path);
            Uri::from_parts(uri).unwrap_or_default()
        } else {
            Uri::from(path)
        };
        parts.version = if h2 { Version::HTTP_2 } else { Version::HTTP_11 };
        let req = Request::from_parts(parts, body::boxed(incoming));
        let app = self.app.clone();
        Box::pin(async move { Ok(send(app, req, upgrade).await) })
    }
}

async fn send(app: Arc<AppPool>, mut req: Request<Body>, upgrade: Option<OnUpgrade>) -> HttpResponse {
    let addr = app.endpoint.addr;
    if let Some(client) = upgrade {
        // A tunnel gets a connection of its own, outside the pool's bounds: it is not a request.
        return match app.endpoint.checkout_http1(UPGRADE_CONNECT_TIMEOUT).await {
            Ok(conn) => match exchange(&app, conn, req, Some(client), &mut None).await {
                Sent::Answered(resp) => resp,
                Sent::Unsent(_) => app_failed(addr, "closed the connection before the upgrade was sent"),
            },
            Err(e) => unavailable(addr, &e),
        };
    }
    let mut deadline = Deadline::after(app.settings().queue_timeout);
    let mut permit = match app.lend(&mut deadline).await {
        Ok(p) => Some(p),
        Err(e) => return unavailable(addr, &e),
    };
    for _ in 0..MAX_RESENDS {
        let conn = match app.checkout(&mut deadline).await {
            Ok(c) => c,
            Err(e) => return unavailable(addr, &e),
        };
        match exchange(&app, conn, req, None, &mut permit).await {
            Sent::Answered(resp) => return resp,
            // Never written: the pooled connection was closing. Send it again.
            Sent::Unsent(unsent) => req = unsent,
        }
    }
    app_failed(addr, "kept closing its connections before the request could be sent")
}

/// What one send on one connection gave.
enum Sent {
    Answered(HttpResponse),
    /// The connection was closing and the request was not written.
    Unsent(Request<Body>),
}

/// Sends `req` on `conn` and waits for the response headers, up to the request timeout. An
/// answered request takes `permit` into its body: the connection stays lent until the body
/// ends.
async fn exchange(
    app: &Arc<AppPool>,
    conn: Conn,
    req: Request<Body>,
    mut upgrade: Option<OnUpgrade>,
    permit: &mut Option<OwnedSemaphorePermit>,
) -> Sent {
    let addr = app.endpoint.addr;
    let in_flight = app.endpoint.start_untimed();
    let sending = async {
        match conn {
            Conn::H1(mut c) => c.try_send_request(req).await.map(|r| (r, Some(c))),
            Conn::H2(mut c) => c.try_send_request(req).await.map(|r| (r, None)),
        }
    };
    let sent = match app.settings().request_timeout {
        Some(limit) => match tokio::time::timeout(limit, sending).await {
            Ok(sent) => sent,
            Err(_) => return Sent::Answered(app_timeout(addr, limit)),
        },
        None => sending.await,
    };
    match sent {
        Ok((mut resp, conn)) => {
            if resp.status() == StatusCode::SWITCHING_PROTOCOLS
                && let Some(client) = upgrade.take()
            {
                upgrade::tunnel(client, hyper::upgrade::on(&mut resp), addr);
            }
            // The connection stays lent until the body ends.
            Sent::Answered(endpoint::passthrough_lent(
                resp,
                app.endpoint.clone(),
                conn,
                in_flight,
                permit.take(),
            ))
        }
        Err(mut e) => match e.take_message() {
            Some(unsent) => Sent::Unsent(unsent),
            None => Sent::Answered(app_failed(
                addr,
                &format!("failed before answering ({})", error_chain(&e.into_error())),
            )),
        },
    }
}

fn unavailable(addr: SocketAddr, e: &dyn std::fmt::Display) -> HttpResponse {
    body::error(
        StatusCode::SERVICE_UNAVAILABLE,
        "app-unavailable",
        format!("the app at {addr} is not accepting connections ({e}); it may be starting or stopping"),
    )
}

fn app_failed(addr: SocketAddr, what: &str) -> HttpResponse {
    body::error(StatusCode::BAD_GATEWAY, "app-failed", format!("the app at {addr} {what}"))
}

fn app_timeout(addr: SocketAddr, limit: Duration) -> HttpResponse {
    body::error(
        StatusCode::GATEWAY_TIMEOUT,
        "app-timeout",
        format!(
            "the app at {addr} did not answer within {} (--app-request-timeout)",
            humantime::format_duration(limit)
        ),
    )
}
