//! The two timeouts of the outbound path: the request's (every attempt together, above the
//! retry layer) and each attempt's (below the balancer). Both end at the response headers: a
//! response that streams for long is not cut.

use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::{BoxFuture, Either};

use super::Error;
use super::balance::Attempt;
use super::retry::Answer;
use super::route::Routed;
use crate::body::HttpResponse;

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
    S::Future: Send + 'static,
{
    type Response = Answer;
    type Error = Error;
    type Future = Either<S::Future, BoxFuture<'static, Result<Answer, Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, routed: Routed) -> Self::Future {
        let Some(after) = self.after else { return Either::Left(self.inner.call(routed)) };
        let service = routed.service.clone();
        let fut = self.inner.call(routed);
        Either::Right(Box::pin(async move {
            tokio::time::timeout(after, fut)
                .await
                .unwrap_or_else(|_| Err(Error::RequestTimeout { service: service.name.clone(), after }))
        }))
    }
}

/// Bounds one attempt: past it the attempt fails as one the app may have seen (retried
/// elsewhere only when idempotent).
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
    S::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = Error;
    type Future = Either<S::Future, BoxFuture<'static, Result<HttpResponse, Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, attempt: Attempt) -> Self::Future {
        let Some(after) = self.after else { return Either::Left(self.inner.call(attempt)) };
        let endpoint = attempt.endpoint.clone();
        let fut = self.inner.call(attempt);
        Either::Right(Box::pin(async move {
            match tokio::time::timeout(after, fut).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    if endpoint.failure() {
                        tracing::info!(instance = %endpoint.addr, reason = "timeout", "instance ejected");
                    }
                    Err(Error::AttemptTimeout { addr: endpoint.addr, after })
                }
            }
        }))
    }
}
