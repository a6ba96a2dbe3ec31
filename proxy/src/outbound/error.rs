//! The one error type of the outbound path. Every layer fails with an [`Error`]; the error
//! carries its own retry class (the idea of pingora's `RetryType`: the decision travels with
//! the failure), so the retry layer decides from the error alone, and the rescue layer
//! ([`super::rescue`]) turns whatever is left into the documented response.

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;

use super::target::TargetError;
use crate::body::HttpResponse;

/// Whether and how a failed attempt may be sent again, to another instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryClass {
    /// The instance's app never saw the request (a refused or timed-out connect, a provider
    /// sidecar's `503 app-unavailable`): any request may go elsewhere if its body can be sent
    /// again. Costs nothing from the retry budget: nothing was done twice.
    Unsent,
    /// The app may have seen it (a connection that broke before the response, an attempt that
    /// timed out, a provider sidecar's `502 app-failed`): only idempotent requests, within the
    /// retry budget.
    Idempotent,
    /// Sending again cannot help (a bad request, no instance, the request's own deadline).
    Never,
}

/// Why an outbound request failed. The `Display` text is what the app reads in the body.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NoService(TargetError),
    #[error("{0}")]
    BadSymbol(String),
    #[error(
        "the outbound port routes plain HTTP by service name; CONNECT (HTTPS through a proxy) is not supported — \
         exclude TLS destinations with NO_PROXY"
    )]
    ConnectUnsupported,
    #[error(
        "the request's header list is {size} bytes, over the {limit} bytes an instance's sidecar accepts on a \
         shared HTTP/2 connection; send less in headers (cookies, tokens) or put it in the body"
    )]
    HeadersTooLarge { size: usize, limit: usize },
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    TooManyServices(#[source] super::discovery::DiscoveryError),
    #[error("cannot look up service `{service}` in namespace `{namespace}`: {detail}")]
    RegistryUnavailable { service: String, namespace: String, detail: String },
    #[error("service `{service}` is unknown in namespace `{namespace}`: no such service is registered")]
    UnknownService { service: String, namespace: String },
    #[error("service `{service}` in namespace `{namespace}` has {}", listed_text(*listed))]
    NoInstances { service: String, namespace: String, listed: usize },
    #[error(
        "service `{service}` in namespace `{namespace}` has no usable instance of symbol `{symbol}`, and its policy is strict"
    )]
    NoSymbolInstances { service: String, namespace: String, symbol: String },
    /// No connection to the instance: the request was never sent.
    #[error("cannot connect to instance {addr}: {detail}")]
    Connect { addr: SocketAddr, detail: String },
    /// The instance or its connection failed before the response headers.
    #[error("instance {addr} failed before answering ({detail})")]
    Reset { addr: SocketAddr, detail: String },
    /// One attempt took longer than the per-attempt timeout.
    #[error("instance {addr} did not answer within {}", humantime::format_duration(*after))]
    AttemptTimeout { addr: SocketAddr, after: Duration },
    /// The whole request (every attempt) took longer than the request timeout.
    #[error("service `{service}` did not answer within {}", humantime::format_duration(*after))]
    RequestTimeout { service: String, after: Duration },
    /// An instance's own error answer that says how it failed (a provider sidecar's
    /// `app-unavailable` or `app-failed`): passed on as it is when no other instance does better.
    #[error("instance {addr} answered {}", .response.status())]
    Answered { addr: SocketAddr, class: RetryClass, response: Box<HttpResponse> },
    /// The request was not sent again: `last` is what its last attempt saw, `why` why it
    /// stopped there (empty when the failure says it all).
    #[error("{}", exhausted_text(service, tried, last, why))]
    Exhausted {
        service: String,
        tried: Vec<SocketAddr>,
        last: Box<Error>,
        why: &'static str,
        /// The symbol of the last instance tried.
        symbol: Option<berth_core::Symbol>,
    },
}

fn listed_text(listed: usize) -> String {
    match listed {
        0 => "no registered instance".to_owned(),
        n => format!("{n} instances, none healthy, enabled and weighted"),
    }
}

fn exhausted_text(service: &str, tried: &[SocketAddr], last: &Error, why: &str) -> String {
    let what = match last {
        Error::Connect { .. } => {
            let tried: Vec<String> = tried.iter().map(ToString::to_string).collect();
            format!("could not reach service `{service}`: tried {} ({last})", tried.join(", "))
        }
        _ => format!("service `{service}`: {last}"),
    };
    if why.is_empty() { what } else { format!("{what}; {why}") }
}

impl Error {
    /// How this failure may be retried.
    pub fn class(&self) -> RetryClass {
        match self {
            Error::Connect { .. } => RetryClass::Unsent,
            Error::Reset { .. } | Error::AttemptTimeout { .. } => RetryClass::Idempotent,
            Error::Answered { class, .. } => *class,
            _ => RetryClass::Never,
        }
    }

    /// The instance the failure happened on, if any.
    pub fn instance(&self) -> Option<SocketAddr> {
        match self {
            Error::Connect { addr, .. }
            | Error::Reset { addr, .. }
            | Error::AttemptTimeout { addr, .. }
            | Error::Answered { addr, .. } => Some(*addr),
            _ => None,
        }
    }

    /// The metric reason of a failed attempt (`berth_outbound_retries_total{reason}`).
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Connect { .. } => "connect",
            Error::Reset { .. } => "reset",
            Error::AttemptTimeout { .. } => "timeout",
            Error::Answered { response, .. } if response.status() == StatusCode::SERVICE_UNAVAILABLE => {
                "app-unavailable"
            }
            Error::Answered { .. } => "app-failed",
            _ => "other",
        }
    }

    /// The HTTP status and `x-berth-error` code the app gets (for [`Error::Answered`], the
    /// instance's own).
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        use StatusCode as S;
        match self {
            Error::NoService(_) => (S::BAD_REQUEST, "no-service"),
            Error::BadSymbol(_) => (S::BAD_REQUEST, "bad-symbol"),
            Error::ConnectUnsupported => (S::METHOD_NOT_ALLOWED, "connect-unsupported"),
            Error::HeadersTooLarge { .. } => (S::REQUEST_HEADER_FIELDS_TOO_LARGE, "headers-too-large"),
            Error::BadRequest(_) => (S::BAD_REQUEST, "bad-request"),
            Error::TooManyServices(_) => (S::SERVICE_UNAVAILABLE, "too-many-services"),
            Error::RegistryUnavailable { .. } => (S::SERVICE_UNAVAILABLE, "registry-unavailable"),
            Error::UnknownService { .. } => (S::SERVICE_UNAVAILABLE, "unknown-service"),
            Error::NoInstances { .. } => (S::SERVICE_UNAVAILABLE, "no-instances"),
            Error::NoSymbolInstances { .. } => (S::SERVICE_UNAVAILABLE, "no-symbol-instances"),
            Error::Connect { .. } => (S::SERVICE_UNAVAILABLE, "connect-failed"),
            Error::Reset { .. } => (S::BAD_GATEWAY, "upstream-reset"),
            Error::AttemptTimeout { .. } | Error::RequestTimeout { .. } => (S::GATEWAY_TIMEOUT, "timeout"),
            Error::Answered { response, .. } => (
                response.status(),
                match response.status() {
                    S::SERVICE_UNAVAILABLE => "app-unavailable",
                    _ => "app-failed",
                },
            ),
            Error::Exhausted { last, .. } => last.status_and_code(),
        }
    }
}
