//! The tracking layer: counts each request by status class, times it to its response headers,
//! and keeps it in flight until its response body ends. On the inbound side it also tells the
//! drain that a request arrived.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Request;
use http_body::{Frame, SizeHint};
use prometheus::{Histogram, IntCounter, IntGauge};
use tokio::time::Instant;

use crate::body::{Body, BoxError, HttpResponse};
use crate::drain::{Drain, InFlight};
use crate::metrics::{Metrics, STATUS_CLASSES, class_index};
use crate::serve::{Active, Connection};

/// Wraps a service with request tracking for `direction` (`inbound` or `outbound`).
#[derive(Clone, Debug)]
pub struct Track<S> {
    inner: S,
    handles: Arc<Handles>,
    drain: Option<Arc<Drain>>,
    /// The connection its requests are counted on, for the listener's idle sweep.
    conn: Option<Arc<Connection>>,
}

/// The metrics one direction updates, looked up once rather than on every request.
#[derive(Debug)]
struct Handles {
    in_flight: IntGauge,
    duration: Histogram,
    /// Requests by status class: 1xx to 5xx.
    by_class: [IntCounter; 5],
    drain_requests: IntCounter,
}

/// What [`Track`] needs, with every metric handle looked up once per listener rather than on
/// each connection.
#[derive(Clone, Debug)]
pub struct Tracking {
    handles: Arc<Handles>,
    drain: Option<Arc<Drain>>,
}

impl Tracking {
    /// Tracking for `direction`; with `drain`, arrivals count towards it.
    pub fn new(direction: &'static str, metrics: &Metrics, drain: Option<Arc<Drain>>) -> Self {
        let by_class = STATUS_CLASSES.map(|class| metrics.requests.with_label_values(&[direction, class]));
        let handles = Arc::new(Handles {
            in_flight: metrics.in_flight.with_label_values(&[direction]),
            duration: metrics.request_duration.with_label_values(&[direction]),
            by_class,
            drain_requests: metrics.drain_requests.clone(),
        });
        Tracking { handles, drain }
    }

    /// Tracks `inner`.
    pub fn wrap<S>(&self, inner: S) -> Track<S> {
        Track { inner, handles: self.handles.clone(), drain: self.drain.clone(), conn: None }
    }

    /// Tracks `inner` serving `conn`: each request also counts as activity on the connection
    /// until its response body ends ([`Connection::start`]).
    pub fn wrap_on<S>(&self, inner: S, conn: &Arc<Connection>) -> Track<S> {
        Track { conn: Some(conn.clone()), ..self.wrap(inner) }
    }
}

impl<S> Track<S> {
    /// Tracks `inner`; with `drain`, arrivals count towards it. (A listener makes one
    /// [`Tracking`] and wraps each connection's service with it.)
    pub fn new(inner: S, direction: &'static str, metrics: Metrics, drain: Option<Arc<Drain>>) -> Self {
        Tracking::new(direction, &metrics, drain).wrap(inner)
    }
}

/// Decrements the in-flight gauge when the response body is done.
#[derive(Debug)]
struct Guard {
    gauge: IntGauge,
    _drain: Option<InFlight>,
    _active: Option<Active>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl<S, B> tower::Service<Request<B>> for Track<S>
where
    S: tower::Service<Request<B>, Response = HttpResponse, Error = Infallible> + Send,
    S::Future: Send + 'static,
{
    type Response = http::Response<Guarded>;
    type Error = Infallible;
    type Future = Tracked<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let start = Instant::now();
        let drain_guard = self.drain.as_ref().map(|d| {
            if d.is_draining() {
                self.handles.drain_requests.inc();
            }
            d.request()
        });
        self.handles.in_flight.inc();
        // Made before the inner call: a request whose future is dropped unpolled (its client
        // hung up) is counted out all the same.
        let guard = Guard {
            gauge: self.handles.in_flight.clone(),
            _drain: drain_guard,
            _active: self.conn.as_ref().map(Connection::start),
        };
        Tracked { inner: self.inner.call(req), start, handles: self.handles.clone(), guard: Some(guard) }
    }
}

pin_project_lite::pin_project! {
    /// A tracked request until its response headers; then its guard moves into the body.
    pub struct Tracked<F> {
        #[pin]
        inner: F,
        start: Instant,
        handles: Arc<Handles>,
        guard: Option<Guard>,
    }
}

impl<F> Future for Tracked<F>
where
    F: Future<Output = Result<HttpResponse, Infallible>>,
{
    type Output = Result<http::Response<Guarded>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let resp = std::task::ready!(this.inner.poll(cx))?;
        this.handles.duration.observe(this.start.elapsed().as_secs_f64());
        this.handles.by_class[class_index(resp.status())].inc();
        // Not boxed again: the body is already one box, and this wrapper is the response's
        // type (one allocation fewer per request).
        let guard = this.guard.take();
        Poll::Ready(Ok(resp.map(|b| Guarded { inner: b, _guard: guard })))
    }
}

pin_project_lite::pin_project! {
    /// A response body that holds its request's guard until it is dropped (after its last
    /// frame, or abandoned).
    pub struct Guarded {
        #[pin]
        inner: Body,
        _guard: Option<Guard>,
    }
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use tower::{Service, ServiceExt};

    use super::*;
    use crate::body;

    #[tokio::test]
    async fn a_request_is_active_on_its_connection_until_its_body_ends() {
        let conn = Arc::new(Connection::default());
        let app = tower::service_fn(|_: Request<()>| async {
            Ok::<_, Infallible>(http::Response::new(body::full("x")))
        });
        let mut track = Tracking::new("inbound", &Metrics::new(), None).wrap_on(app, &conn);
        assert!(!conn.is_active());
        let resp = track.ready().await.unwrap().call(Request::new(())).await.unwrap();
        assert!(conn.is_active(), "answered, but its body has not ended");
        drop(resp);
        assert!(!conn.is_active(), "the body is gone");
        // Without a connection nothing is counted on one.
        let app = tower::service_fn(|_: Request<()>| async {
            Ok::<_, Infallible>(http::Response::new(body::empty()))
        });
        let resp = Tracking::new("inbound", &Metrics::new(), None).wrap(app).call(Request::new(())).await;
        assert!(resp.is_ok() && !conn.is_active());
    }
}
