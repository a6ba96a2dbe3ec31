//! The read-only signal: while the sidecar drains, every inbound response says so.
//!
//! The response carries `x-berth-lifecycle: draining`, so a berth consumer drops this instance
//! at once; on HTTP/1.1 also `Connection: close`, and the connection is asked to close after
//! this response (on HTTP/2 that is a graceful GOAWAY).

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use berth_core::header::{DRAINING, LIFECYCLE as LIFECYCLE_HEADER};
use http::header::CONNECTION;
use http::{HeaderValue, Request, Version};

use crate::drain::Drain;
use crate::serve::Connection;

/// Marks responses while draining.
#[derive(Clone, Debug)]
pub struct Signal<S> {
    inner: S,
    drain: Arc<Drain>,
    conn: Arc<Connection>,
    enabled: bool,
    /// The connection's peer, for the drain's count of who ignores the signal.
    peer: Option<IpAddr>,
}

impl<S> Signal<S> {
    /// Marks `inner`'s responses on the connection `conn` (unless not `enabled`:
    /// `--no-lifecycle`).
    pub fn new(inner: S, drain: Arc<Drain>, conn: Arc<Connection>, enabled: bool) -> Self {
        Signal { inner, drain, conn, enabled, peer: None }
    }

    /// Tells the drain who was sent the signal and who kept coming ([`crate::drain::heed`]).
    pub fn with_peer(self, peer: IpAddr) -> Self {
        Signal { peer: Some(peer), ..self }
    }
}

impl<S, B, RB> tower::Service<Request<B>> for Signal<S>
where
    S: tower::Service<Request<B>, Response = http::Response<RB>, Error = Infallible>,
{
    type Response = http::Response<RB>;
    type Error = Infallible;
    type Future = Signalled<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let h2 = req.version() == Version::HTTP_2;
        // What the drain's phases close the connection by (see `inbound::close_on_phases`).
        self.conn.request(h2);
        if let Some(peer) = self.peer.filter(|_| self.enabled && self.drain.is_draining()) {
            self.drain.heed().arrived(peer);
        }
        let mark = self.enabled.then(|| Mark {
            drain: self.drain.clone(),
            conn: self.conn.clone(),
            h2,
            peer: self.peer,
        });
        Signalled { inner: self.inner.call(req), mark }
    }
}

/// What marking one response takes.
#[derive(Debug)]
struct Mark {
    drain: Arc<Drain>,
    conn: Arc<Connection>,
    h2: bool,
    peer: Option<IpAddr>,
}

pin_project_lite::pin_project! {
    /// A response on its way out; marked if the drain has started by the time it leaves.
    pub struct Signalled<F> {
        #[pin]
        inner: F,
        mark: Option<Mark>,
    }
}

impl<F, RB> Future for Signalled<F>
where
    F: Future<Output = Result<http::Response<RB>, Infallible>>,
{
    type Output = Result<http::Response<RB>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut resp = std::task::ready!(this.inner.poll(cx))?;
        // Decided when the response leaves, so a request in flight when the drain starts
        // carries the signal too.
        if let Some(mark) = this.mark.take()
            && mark.drain.is_draining()
        {
            let headers = resp.headers_mut();
            headers.insert(LIFECYCLE_HEADER, HeaderValue::from_static(DRAINING));
            if !mark.h2 {
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            if let Some(peer) = mark.peer {
                mark.drain.heed().signalled(peer);
            }
            mark.conn.close();
        }
        Poll::Ready(Ok(resp))
    }
}
