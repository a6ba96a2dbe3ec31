//! The read-only signal: while the sidecar drains, every inbound response says so.
//!
//! The response carries `x-berth-lifecycle: draining`, so a berth consumer drops this instance
//! at once; on HTTP/1.1 also `Connection: close`, and the connection is asked to close after
//! this response (on HTTP/2 that is a graceful GOAWAY).

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use berth_core::metadata::{DRAINING, LIFECYCLE_HEADER};
use futures_util::future::BoxFuture;
use http::header::CONNECTION;
use http::{HeaderValue, Request, Version};
use tokio::sync::Notify;

use crate::body::HttpResponse;
use crate::drain::Drain;

/// What a connection's requests tell the connection.
#[derive(Debug, Default)]
pub struct ConnectionControl {
    /// Set by the first HTTP/2 request: such connections get GOAWAY as soon as a drain starts.
    pub h2: AtomicBool,
    /// Notified when a response carried the signal: close after it.
    pub close: Notify,
    /// The peer, for the drain's count of who ignores the signal.
    pub peer: Option<IpAddr>,
}

/// Marks responses while draining.
#[derive(Clone, Debug)]
pub struct Signal<S> {
    inner: S,
    drain: Arc<Drain>,
    conn: Arc<ConnectionControl>,
    enabled: bool,
}

impl<S> Signal<S> {
    /// Marks `inner`'s responses on the connection `conn` (unless not `enabled`:
    /// `--no-lifecycle`).
    pub fn new(inner: S, drain: Arc<Drain>, conn: Arc<ConnectionControl>, enabled: bool) -> Self {
        Signal { inner, drain, conn, enabled }
    }
}

impl<S, B> tower::Service<Request<B>> for Signal<S>
where
    S: tower::Service<Request<B>, Response = HttpResponse, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<HttpResponse, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let h2 = req.version() == Version::HTTP_2;
        if h2 {
            self.conn.h2.store(true, Ordering::Relaxed);
        }
        let (drain, conn, enabled) = (self.drain.clone(), self.conn.clone(), self.enabled);
        if let Some(peer) = conn.peer.filter(|_| enabled && drain.is_draining()) {
            drain.heed().arrived(peer);
        }
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            // Decided when the response leaves, so a request in flight when the drain starts
            // carries the signal too.
            if enabled && drain.is_draining() {
                let headers = resp.headers_mut();
                headers.insert(LIFECYCLE_HEADER, HeaderValue::from_static(DRAINING));
                if !h2 {
                    headers.insert(CONNECTION, HeaderValue::from_static("close"));
                }
                if let Some(peer) = conn.peer {
                    drain.heed().signalled(peer);
                }
                conn.close.notify_one();
            }
            Ok(resp)
        })
    }
}
