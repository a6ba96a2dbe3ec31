//! The two timeouts of the outbound path: the request's (every attempt together, above the
//! retry layer) and each attempt's (below the balancer). Both end at the response headers: a
//! response that streams for long is not cut.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::Error;
use super::balance::Attempt;
use super::discovery::Service;
use super::retry::Answer;
use super::route::Routed;
use crate::body::HttpResponse;
use crate::endpoint::Endpoint;

/// Bounds a whole request.
#[derive(Clone, Debug)]
pub struct RequestTimeout<S> {
    inner: S,
    after: Option<Duration>,
}

impl<S> RequestTimeout<S> {
    pub fn new(inner: S, after: Option<Duration>) -> Self {
        RequestTimeout { inner, after }
    }
}

impl<S> tower::Service<Routed> for RequestTimeout<S>
where
    S: tower::Service<Routed, Response = Answer, Error = Error>,
{
    type Response = Answer;
    type Error = Error;
    type Future = Bounded<S::Future, tokio::time::Timeout<S::Future>, Arc<Service>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, routed: Routed) -> Self::Future {
        let service = routed.service.clone();
        let inner = self.inner.call(routed);
        match self.after {
            None => Bounded::Unbounded { inner },
            Some(after) => {
                Bounded::Timed { inner: tokio::time::timeout(after, inner), after, expiry: service }
            }
        }
    }
}

/// Bounds one attempt: past it the attempt fails as one the app may have seen (retried
/// elsewhere only when idempotent), and counts as its instance's failure (the observer below,
/// dropped with the attempt, cannot count it).
#[derive(Clone, Debug)]
pub struct AttemptTimeout<S> {
    inner: S,
    after: Option<Duration>,
}

impl<S> AttemptTimeout<S> {
    pub fn new(inner: S, after: Option<Duration>) -> Self {
        AttemptTimeout { inner, after }
    }
}

impl<S> tower::Service<Attempt> for AttemptTimeout<S>
where
    S: tower::Service<Attempt, Response = HttpResponse, Error = Error>,
{
    type Response = HttpResponse;
    type Error = Error;
    // Boxed when bounded, so that an attempt stays `Unpin` for the retry layer that races it.
    type Future = Bounded<S::Future, Pin<Box<tokio::time::Timeout<S::Future>>>, Arc<Endpoint>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, attempt: Attempt) -> Self::Future {
        let endpoint = attempt.endpoint.clone();
        let inner = self.inner.call(attempt);
        match self.after {
            None => Bounded::Unbounded { inner },
            Some(after) => Bounded::Timed {
                inner: Box::pin(tokio::time::timeout(after, inner)),
                after,
                expiry: endpoint,
            },
        }
    }
}

/// What a timeout says when it expires.
pub trait Expiry {
    fn expired(&self, after: Duration) -> Error;
}

impl Expiry for Arc<Service> {
    fn expired(&self, after: Duration) -> Error {
        Error::RequestTimeout { service: self.name.clone(), after }
    }
}

impl Expiry for Arc<Endpoint> {
    fn expired(&self, after: Duration) -> Error {
        if self.failure() {
            tracing::info!(instance = %self.addr, reason = "timeout", "instance ejected");
        }
        Error::AttemptTimeout { addr: self.addr, after }
    }
}

pin_project_lite::pin_project! {
    /// A future with a deadline (`T`, a [`tokio::time::Timeout`] of `F`), or without one.
    #[project = BoundedProj]
    pub enum Bounded<F, T, E> {
        Unbounded { #[pin] inner: F },
        Timed { #[pin] inner: T, after: Duration, expiry: E },
    }
}

impl<F, T, E, R> Future for Bounded<F, T, E>
where
    F: Future<Output = Result<R, Error>>,
    T: Future<Output = Result<Result<R, Error>, tokio::time::error::Elapsed>>,
    E: Expiry,
{
    type Output = Result<R, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            BoundedProj::Unbounded { inner } => inner.poll(cx),
            BoundedProj::Timed { inner, after, expiry } => {
                inner.poll(cx).map(|r| r.unwrap_or_else(|_| Err(expiry.expired(*after))))
            }
        }
    }
}
