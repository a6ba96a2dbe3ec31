//! Watches each attempt's outcome: the read-only signal takes a draining instance out of this
//! sidecar's choices at once; a provider sidecar's own failure answers become errors the retry
//! layer can act on; failures count towards ejection, answers reset it. (Answer times feed
//! the instance's and the service's latency where they are measured, in the in-flight guard.)

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use berth_core::metadata::DRAINING;
use http::StatusCode;

use super::balance::Attempt;
use super::discovery::Service;
use super::{Error, RetryClass};
use crate::body::{ERROR_HEADER, HttpResponse};
use crate::endpoint::Endpoint;

/// The observer layer.
#[derive(Clone, Debug)]
pub struct Observe<S> {
    inner: S,
    /// Heed the read-only signal and the provider's failure answers (off with `--no-lifecycle`).
    failover: bool,
}

impl<S> Observe<S> {
    pub fn new(inner: S, failover: bool) -> Self {
        Observe { inner, failover }
    }
}

impl<S> tower::Service<Attempt> for Observe<S>
where
    S: tower::Service<Attempt, Response = HttpResponse, Error = Error>,
{
    type Response = HttpResponse;
    type Error = Error;
    type Future = Observed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, attempt: Attempt) -> Self::Future {
        let endpoint = attempt.endpoint.clone();
        let service = attempt.service.clone();
        let inner = self.inner.call(attempt);
        Observed { inner, endpoint, service, failover: self.failover }
    }
}

pin_project_lite::pin_project! {
    /// An attempt whose outcome is watched.
    pub struct Observed<F> {
        #[pin]
        inner: F,
        endpoint: Arc<Endpoint>,
        service: Arc<Service>,
        failover: bool,
    }
}

impl<F: Future<Output = Result<HttpResponse, Error>>> Future for Observed<F> {
    type Output = Result<HttpResponse, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let outcome = match std::task::ready!(this.inner.poll(cx)) {
            Ok(resp) if *this.failover => judge(resp, this.endpoint.addr),
            other => other,
        };
        let (endpoint, service) = (&**this.endpoint, &**this.service);
        match &outcome {
            Ok(resp) => {
                if *this.failover && resp.headers().get(&super::LIFECYCLE).is_some_and(|v| v == DRAINING) {
                    endpoint.mark_draining();
                    service.metrics.readonly_signals.with_label_values(&[&service.name]).inc();
                    tracing::debug!(service = %service.name, instance = %endpoint.addr, "read-only signal: instance is draining");
                }
                endpoint.success();
            }
            Err(e) if e.instance().is_some() && e.class() != RetryClass::Never => {
                if endpoint.failure() {
                    tracing::info!(service = %service.name, instance = %endpoint.addr, reason = e.reason(), "instance ejected");
                }
            }
            Err(_) => {}
        }
        Poll::Ready(outcome)
    }
}

/// A provider sidecar's own failure answers, as errors: `503 app-unavailable` (its app never
/// saw the request) and `502 app-failed` (its app dropped the connection unanswered).
fn judge(resp: HttpResponse, addr: std::net::SocketAddr) -> Result<HttpResponse, Error> {
    let class = match resp.status() {
        StatusCode::SERVICE_UNAVAILABLE
            if resp.headers().get(ERROR_HEADER).is_some_and(|v| v == "app-unavailable") =>
        {
            RetryClass::Unsent
        }
        StatusCode::BAD_GATEWAY if resp.headers().get(ERROR_HEADER).is_some_and(|v| v == "app-failed") => {
            RetryClass::Idempotent
        }
        _ => return Ok(resp),
    };
    Err(Error::Answered { addr, class, response: Box::new(resp) })
}
