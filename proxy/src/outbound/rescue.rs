//! The outermost outbound layer: every [`Error`] becomes the response the README documents —
//! an HTTP status with `x-berth-error` and a body that says what happened and what to do, or,
//! for a gRPC request, a gRPC status (HTTP 200, `grpc-status`, `grpc-message`) as Linkerd
//! answers. An instance's own failure answer that nothing better replaced is passed on.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Request;
use hyper::body::Incoming;

use super::Error;
use crate::body::{self, GrpcStatus, HttpResponse};

/// The rescue layer.
#[derive(Clone, Debug)]
pub struct Rescue<S> {
    inner: S,
}

impl<S> Rescue<S> {
    pub fn new(inner: S) -> Self {
        Rescue { inner }
    }
}

impl<S> tower::Service<Request<Incoming>> for Rescue<S>
where
    S: tower::Service<Request<Incoming>, Response = HttpResponse, Error = Error>,
{
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = Rescued<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        match self.inner.poll_ready(cx) {
            Poll::Ready(_) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let grpc = body::is_grpc(req.headers());
        Rescued { inner: self.inner.call(req), grpc }
    }
}

pin_project_lite::pin_project! {
    /// A request whose failure becomes its answer.
    pub struct Rescued<F> {
        #[pin]
        inner: F,
        grpc: bool,
    }
}

impl<F: Future<Output = Result<HttpResponse, Error>>> Future for Rescued<F> {
    type Output = Result<HttpResponse, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let grpc = *this.grpc;
        this.inner.poll(cx).map(|r| Ok(r.unwrap_or_else(|e| respond(e, grpc))))
    }
}

/// The response for an error; `grpc` for a gRPC client.
pub fn respond(error: Error, grpc: bool) -> HttpResponse {
    let (status, code) = error.status_and_code();
    tracing::debug!(code, error = %error, "outbound request failed");
    // An instance's own answer, even after other attempts, is what the app gets.
    let error = match error {
        Error::Exhausted { last, .. } if matches!(*last, Error::Answered { .. }) => *last,
        error => error,
    };
    let answered = match error {
        Error::Answered { response, .. } => *response,
        error if grpc => return body::grpc_error(GrpcStatus::for_http(status), code, error),
        error => return body::error(status, code, error),
    };
    if grpc && !body::is_grpc(answered.headers()) {
        let message = format!("an instance answered {status} {code}");
        return body::grpc_error(GrpcStatus::for_http(status), code, message);
    }
    answered
}

#[cfg(test)]
mod tests;
