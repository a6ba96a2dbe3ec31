//! The last inbound hop: the request, minus hop-by-hop fields and plus `x-forwarded-for`, to
//! the app on 127.0.0.1 over pooled connections (the same [`Endpoint`] pool the outbound side
//! uses for instances).

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

use crate::body::{self, Body, HttpResponse};
use crate::config::AppProtocol;
use crate::endpoint::{self, Conn, Endpoint};
use crate::headers;
use crate::health::error_chain;
use crate::lane::{self, Lanes};
use crate::upgrade;

/// How long connecting to the app may take (it is on loopback: refusals are immediate).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Sends of one request on pooled connections that turned out to be closing (the request was
/// not written, so sending it again is safe).
const MAX_RESENDS: usize = 3;

/// Sends requests to the app.
#[derive(Clone, Debug)]
pub struct Forward {
    app: Arc<Endpoint>,
    authority: Authority,
    /// The client's address as a header value, made once per connection.
    peer: Option<HeaderValue>,
    /// How a request's lane is found, to hand it to the app in both forms.
    lanes: Arc<Lanes>,
}

impl Forward {
    /// A forwarder to the app at `app`.
    pub fn new(app: SocketAddr, protocol: AppProtocol) -> Self {
        let h2 = protocol == AppProtocol::H2c;
        let endpoint = Arc::new(Endpoint::with_idle_timeout(app, h2, 0, endpoint::APP_IDLE_TIMEOUT));
        let authority =
            Authority::try_from(app.to_string()).unwrap_or_else(|_| Authority::from_static("127.0.0.1"));
        Forward { app: endpoint, authority, peer: None, lanes: Arc::default() }
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
        let h2 = self.app.h2 && upgrade.is_none();
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
        Box::pin(send(self.app.clone(), req, upgrade))
    }
}

async fn send(
    app: Arc<Endpoint>,
    mut req: Request<Body>,
    mut upgrade: Option<OnUpgrade>,
) -> Result<HttpResponse, Infallible> {
    let addr = app.addr;
    for _ in 0..MAX_RESENDS {
        let conn = if upgrade.is_some() {
            app.checkout_http1(CONNECT_TIMEOUT).await
        } else {
            app.checkout(CONNECT_TIMEOUT).await
        };
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                return Ok(body::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "app-unavailable",
                    format!(
                        "the app at {addr} is not accepting connections ({}); it may be starting or stopping",
                        e.detail
                    ),
                ));
            }
        };
        let in_flight = app.start();
        let sent = match conn {
            Conn::H1(mut c) => c.try_send_request(req).await.map(|r| (r, Some(c))),
            Conn::H2(mut c) => c.try_send_request(req).await.map(|r| (r, None)),
        };
        match sent {
            Ok((mut resp, conn)) => {
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS
                    && let Some(client) = upgrade.take()
                {
                    upgrade::tunnel(client, hyper::upgrade::on(&mut resp), addr);
                }
                return Ok(endpoint::passthrough(resp, app, conn, in_flight));
            }
            Err(mut e) => match e.take_message() {
                // Never written: the pooled connection was closing. Send it again.
                Some(unsent) => req = unsent,
                None => {
                    return Ok(body::error(
                        StatusCode::BAD_GATEWAY,
                        "app-failed",
                        format!(
                            "the app at {addr} failed before answering ({})",
                            error_chain(&e.into_error())
                        ),
                    ));
                }
            },
        }
    }
    Ok(body::error(
        StatusCode::BAD_GATEWAY,
        "app-failed",
        format!("the app at {addr} kept closing its connections before the request could be sent"),
    ))
}
