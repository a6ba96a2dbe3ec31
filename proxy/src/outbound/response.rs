//! The responses the app gets: the provider's, passed through, or berth's own errors, each
//! with `x-berth-error` and a body that says what happened and what to do.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;

use super::Outbound;
use super::balance::NoChoice;
use super::discovery::Service;
use super::endpoint::{Endpoint, InFlight};
use crate::body::{self, Body, BoxError, HttpResponse};
use crate::headers;

pub(super) fn connect_unsupported() -> HttpResponse {
    body::error(
        StatusCode::METHOD_NOT_ALLOWED,
        "connect-unsupported",
        "the outbound port routes plain HTTP by service name; CONNECT (HTTPS through a proxy) is not supported — \
         exclude TLS destinations with NO_PROXY",
    )
}

pub(super) async fn no_choice(outbound: &Outbound, service: &Service, why: NoChoice) -> HttpResponse {
    let ns = outbound.discovery.namespace();
    let name = &service.name;
    let (code, message) = match why {
        NoChoice::NoInstances { listed: 0 } if outbound.discovery.exists(name).await == Some(false) => (
            "unknown-service",
            format!("service `{name}` is unknown in namespace `{ns}`: no such service is registered"),
        ),
        NoChoice::NoInstances { listed: 0 } => {
            ("no-instances", format!("service `{name}` in namespace `{ns}` has no registered instance"))
        }
        NoChoice::NoInstances { listed } => (
            "no-instances",
            format!(
                "service `{name}` in namespace `{ns}` has {listed} instances, none healthy, enabled and weighted"
            ),
        ),
        NoChoice::StrictSymbol { symbol } => (
            "no-symbol-instances",
            format!(
                "service `{name}` in namespace `{ns}` has no usable instance of symbol `{symbol}`, and its policy is strict"
            ),
        ),
        NoChoice::Exhausted { tried } => (
            "connect-failed",
            format!("service `{name}` in namespace `{ns}`: all {tried} usable instances failed"),
        ),
    };
    body::error(StatusCode::SERVICE_UNAVAILABLE, code, message)
}

pub(super) fn timeout(service: &Service, endpoint: &Endpoint, after: Duration) -> HttpResponse {
    body::error(
        StatusCode::GATEWAY_TIMEOUT,
        "timeout",
        format!(
            "instance {} of service `{}` did not answer within {}",
            endpoint.addr,
            service.name,
            humantime::format_duration(after)
        ),
    )
}

pub(super) fn reset(service: &Service, endpoint: &Endpoint, error: &str, idempotent: bool) -> HttpResponse {
    let why = if idempotent {
        "not retried: the retry budget is spent or the body was too large to keep"
    } else {
        "not retried: the request is not idempotent (send `x-berth-retryable: true` if it is safe to repeat)"
    };
    body::error(
        StatusCode::BAD_GATEWAY,
        "upstream-reset",
        format!(
            "instance {} of service `{}` failed before answering ({error}); {why}",
            endpoint.addr, service.name
        ),
    )
}

pub(super) fn exhausted(service: &Service, tried: &[SocketAddr], detail: &str) -> HttpResponse {
    let tried: Vec<String> = tried.iter().map(ToString::to_string).collect();
    body::error(
        StatusCode::SERVICE_UNAVAILABLE,
        "connect-failed",
        format!("could not reach service `{}`: tried {} ({detail})", service.name, tried.join(", ")),
    )
}

/// The provider's response, minus hop-by-hop fields, with a body that returns the connection
/// to the pool when it ends and keeps the request in flight until then.
pub(super) fn passthrough(
    resp: Response<Incoming>,
    endpoint: Arc<Endpoint>,
    conn: Option<http1::SendRequest<Body>>,
    in_flight: InFlight,
) -> HttpResponse {
    let (mut parts, incoming) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    let body = Pooled { inner: incoming, conn, endpoint, _in_flight: in_flight };
    Response::from_parts(parts, body::boxed(body))
}

/// A provider's response body: keeps the request in flight until it ends, then gives an
/// HTTP/1.1 connection back to the pool if the exchange finished cleanly.
struct Pooled {
    inner: Incoming,
    conn: Option<http1::SendRequest<Body>>,
    endpoint: Arc<Endpoint>,
    _in_flight: InFlight,
}

impl http_body::Body for Pooled {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        // Only a body read to its end leaves the connection ready for another request.
        if let Some(conn) = self.conn.take().filter(|_| self.inner.is_end_stream()) {
            self.endpoint.checkin(conn);
        }
    }
}
