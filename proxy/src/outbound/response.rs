//! The responses the app gets: the provider's, passed through, or berth's own errors, each
//! with `x-berth-error` and a body that says what happened and what to do.

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;

use super::Outbound;
use super::balance::NoChoice;
use super::discovery::Service;
use crate::body::{self, HttpResponse};
use crate::endpoint::Endpoint;

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
