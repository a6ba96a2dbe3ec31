//! The last outbound layer: one attempt on a pooled connection to the chosen instance.
//!
//! A request too large for the instance's HTTP/2 server is refused here, before it is sent:
//! the peer would answer it by resetting the connection every other request to that instance
//! shares. A pooled connection that turns out to be closing before the request was written is
//! replaced, and the same request sent again (it never left).

use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::{Request, StatusCode};

use super::Error;
use super::balance::Attempt;
use crate::body::HttpResponse;
use crate::endpoint::{self, Conn};
use crate::health::error_chain;
use crate::upgrade;

/// What an instance's sidecar accepts as a request's header list on HTTP/2 (its
/// SETTINGS_MAX_HEADER_LIST_SIZE: hyper's default, which berth's inbound keeps).
pub const H2_MAX_HEADER_LIST: usize = 16 * 1024;
/// Sends of one request on pooled connections that turned out to be closing.
const MAX_RESENDS: usize = 4;

/// Sends attempts.
#[derive(Clone, Copy, Debug)]
pub struct Send {
    connect_timeout: Duration,
}

impl Send {
    pub fn new(connect_timeout: Duration) -> Self {
        Send { connect_timeout }
    }
}

/// A request's header list size as HTTP/2 counts it (RFC 9113 §6.5.2): every field's name and
/// value plus 32, pseudo-fields included.
pub fn header_list_size<B>(req: &Request<B>) -> usize {
    let pseudo = req.method().as_str().len()
        + req.uri().path_and_query().map_or(1, |p| p.as_str().len())
        + req.uri().authority().map_or(0, |a| a.as_str().len())
        + "http".len()
        + ":method:scheme:authority:path".len()
        + 4 * 32;
    req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 32).sum::<usize>() + pseudo
}

impl tower::Service<Attempt> for Send {
    type Response = HttpResponse;
    type Error = Error;
    type Future = BoxFuture<'static, Result<HttpResponse, Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, attempt: Attempt) -> Self::Future {
        Box::pin(send(attempt, self.connect_timeout))
    }
}

async fn send(attempt: Attempt, connect_timeout: Duration) -> Result<HttpResponse, Error> {
    let Attempt { request, endpoint, upgrade, .. } = attempt;
    let addr = endpoint.addr;
    let upgrade = upgrade.as_ref();
    let mut req = request?;
    if req.version() == http::Version::HTTP_2 {
        let size = header_list_size(&req);
        if size > H2_MAX_HEADER_LIST {
            return Err(Error::HeadersTooLarge { size, limit: H2_MAX_HEADER_LIST });
        }
    }
    // Counted from before the connect: an instance slow to accept is a loaded one.
    let mut in_flight = endpoint.start();
    for _ in 0..MAX_RESENDS {
        let conn = if upgrade.is_some() {
            endpoint.checkout_http1(connect_timeout).await
        } else {
            endpoint.checkout(connect_timeout).await
        };
        let conn = conn.map_err(|e| Error::Connect { addr, detail: e.detail })?;
        let sent = match conn {
            Conn::H1(mut c) => c.try_send_request(req).await.map(|r| (r, Some(c))),
            Conn::H2(mut c) => c.try_send_request(req).await.map(|r| (r, None)),
        };
        match sent {
            Ok((mut resp, conn)) => {
                in_flight.answered();
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS
                    && let Some(client) =
                        upgrade.and_then(|u| u.lock().unwrap_or_else(|e| e.into_inner()).take())
                {
                    upgrade::tunnel(client, hyper::upgrade::on(&mut resp), addr);
                }
                return Ok(endpoint::passthrough(resp, endpoint, conn, in_flight));
            }
            Err(mut e) => match e.take_message() {
                // Never written: the pooled connection was closing. The same request, again.
                Some(unsent) => req = unsent,
                None => return Err(Error::Reset { addr, detail: error_chain(&e.into_error()) }),
            },
        }
    }
    Err(Error::Connect { addr, detail: "every connection closed before the request could be sent".into() })
}
