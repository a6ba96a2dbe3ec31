//! Watches each attempt's outcome: the read-only signal takes a draining instance out of this
//! sidecar's choices at once; a provider sidecar's own failure answers become errors the retry
//! layer can act on; failures count towards ejection, answers reset it and feed the service's
//! latency (the hedging delay).

use std::task::{Context, Poll};

use berth_core::metadata::{DRAINING, LIFECYCLE_HEADER};
use futures_util::future::BoxFuture;
use http::StatusCode;
use tokio::time::Instant;

use super::balance::Attempt;
use super::{Error, RetryClass};
use crate::body::{ERROR_HEADER, HttpResponse};
use crate::metrics::Metrics;

/// The observer layer.
#[derive(Clone, Debug)]
pub struct Observe<S> {
    inner: S,
    metrics: Metrics,
    /// Heed the read-only signal and the provider's failure answers (off with `--no-lifecycle`).
    failover: bool,
}

impl<S> Observe<S> {
    pub fn new(inner: S, metrics: Metrics, failover: bool) -> Self {
        Observe { inner, metrics, failover }
    }
}

impl<S> tower::Service<Attempt> for Observe<S>
where
    S: tower::Service<Attempt, Response = HttpResponse, Error = Error>,
    S::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = Error;
    type Future = BoxFuture<'static, Result<HttpResponse, Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, attempt: Attempt) -> Self::Future {
        let endpoint = attempt.endpoint.clone();
        let service = attempt.service.clone();
        let metrics = self.metrics.clone();
        let failover = self.failover;
        let started = Instant::now();
        let fut = self.inner.call(attempt);
        Box::pin(async move {
            let outcome = match fut.await {
                Ok(resp) if failover => judge(resp, endpoint.addr),
                other => other,
            };
            match &outcome {
                Ok(resp) => {
                    if failover && resp.headers().get(LIFECYCLE_HEADER).is_some_and(|v| v == DRAINING) {
                        endpoint.mark_draining();
                        metrics.readonly_signals.with_label_values(&[&service.name]).inc();
                        tracing::debug!(service = %service.name, instance = %endpoint.addr, "read-only signal: instance is draining");
                    }
                    endpoint.success();
                    service.latency.observe(started.elapsed());
                }
                Err(e) if e.instance().is_some() && e.class() != RetryClass::Never => {
                    if endpoint.failure() {
                        tracing::info!(service = %service.name, instance = %endpoint.addr, reason = e.reason(), "instance ejected");
                    }
                }
                Err(_) => {}
            }
            outcome
        })
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
