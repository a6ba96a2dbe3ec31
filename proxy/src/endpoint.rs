//! One upstream as this sidecar sees it: its load, its failures, whether it said it is
//! draining, and its pooled connections.
//!
//! Outbound, an [`Endpoint`] is an instance of a service and lives as long as its address is in
//! the service's instance set: when the registry drops the address, the endpoint and its
//! connections go with it, and an address that comes back starts afresh. Inbound, one endpoint
//! is the app. [`passthrough`] hands an upstream's response on and returns its connection to the
//! pool when the body ends.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::body::{self, Body, BoxError, HttpResponse};
use crate::headers;

/// Idle HTTP/1.1 connections kept per endpoint.
const MAX_IDLE: usize = 64;
/// Idle connections older than this are not reused: closing them ourselves first avoids
/// sending on a connection the server is closing (the keep-alive race). Instances (berth
/// sidecars keep idle connections open) and servers with the common 5 s keep-alive timeout.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3);
/// The same for the app on loopback, where a new connection costs tens of microseconds: below
/// the shortest keep-alive timeouts app servers ship with (2 s in gunicorn).
pub const APP_IDLE_TIMEOUT: Duration = Duration::from_secs(1);

/// How failures eject an endpoint.
#[derive(Clone, Copy, Debug)]
pub struct Ejection {
    /// Consecutive failures that eject.
    pub after: u32,
    /// The first ejection's length; each further one doubles it, up to ten times as long.
    pub base: Duration,
}

/// A connection ready for one request.
#[derive(Debug)]
pub enum Conn {
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

/// Why no connection could be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to {addr}: {detail}")]
pub struct ConnectError {
    pub addr: SocketAddr,
    pub detail: String,
}

struct Idle {
    conn: http1::SendRequest<Body>,
    since: Instant,
}

/// An instance's runtime state, shared by every snapshot that lists it.
pub struct Endpoint {
    pub addr: SocketAddr,
    idle_timeout: Duration,
    /// Whether the instance speaks HTTP/2 with prior knowledge (a berth sidecar does).
    pub h2: bool,
    in_flight: AtomicU32,
    ewma_micros: AtomicU64,
    consecutive_failures: AtomicU32,
    ejections: AtomicU32,
    ejected_until: Mutex<Option<Instant>>,
    /// `berth.started_at` of the current registration (0 when unknown).
    registration: AtomicU64,
    /// Registration + 1 when that registration sent the read-only signal; 0 otherwise.
    draining_of: AtomicU64,
    idle: Mutex<Vec<Idle>>,
    shared: Mutex<Option<http2::SendRequest<Body>>>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint").field("addr", &self.addr).field("h2", &self.h2).finish_non_exhaustive()
    }
}

impl Endpoint {
    pub fn new(addr: SocketAddr, h2: bool, registration: u64) -> Self {
        Endpoint::with_idle_timeout(addr, h2, registration, IDLE_TIMEOUT)
    }

    /// An endpoint whose pooled connections are reused only while idle less than `idle_timeout`.
    pub fn with_idle_timeout(addr: SocketAddr, h2: bool, registration: u64, idle_timeout: Duration) -> Self {
        Endpoint {
            addr,
            h2,
            idle_timeout,
            in_flight: AtomicU32::new(0),
            ewma_micros: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until: Mutex::new(None),
            registration: AtomicU64::new(registration),
            draining_of: AtomicU64::new(0),
            idle: Mutex::new(Vec::new()),
            shared: Mutex::new(None),
        }
    }

    /// Notes the registration the registry now lists (a new one clears a draining mark).
    pub fn set_registration(&self, started_at: u64) {
        self.registration.store(started_at, Ordering::Relaxed);
    }

    /// Requests sent and not yet finished.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Exponentially weighted response latency, in microseconds (0 before the first answer).
    pub fn ewma_micros(&self) -> u64 {
        self.ewma_micros.load(Ordering::Relaxed)
    }

    /// Whether this registration of the instance said it is leaving.
    pub fn is_draining(&self) -> bool {
        let of = self.draining_of.load(Ordering::Relaxed);
        of != 0 && of == self.registration.load(Ordering::Relaxed).wrapping_add(1)
    }

    /// The read-only signal arrived: no more requests, no pooled connection reused.
    pub fn mark_draining(&self) {
        self.draining_of.store(self.registration.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
        *self.shared.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Whether failures have ejected the endpoint for now.
    pub fn is_ejected(&self) -> bool {
        self.ejected_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|until| Instant::now() < until)
    }

    /// Counts a failure; returns `true` when it ejected the endpoint.
    pub fn failure(&self, ejection: Ejection) -> bool {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < ejection.after {
            return false;
        }
        self.consecutive_failures.store(0, Ordering::Relaxed);
        let n = self.ejections.fetch_add(1, Ordering::Relaxed);
        let length = ejection.base.saturating_mul(1 << n.min(3)).min(ejection.base * 10);
        *self.ejected_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + length);
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
        *self.shared.lock().unwrap_or_else(|e| e.into_inner()) = None;
        true
    }

    /// Counts a success: failures and back-off start over.
    pub fn success(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        if self.ejections.load(Ordering::Relaxed) != 0 {
            self.ejections.store(0, Ordering::Relaxed);
            *self.ejected_until.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }

    /// Starts a request: counted in flight until the guard drops.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight { endpoint: self.clone(), started: Instant::now() }
    }

    fn observe(&self, latency: Duration) {
        let sample = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let old = self.ewma_micros.load(Ordering::Relaxed);
        // α = 1/4: recent answers dominate within a handful of requests.
        let new = if old == 0 { sample } else { old - old / 4 + sample / 4 };
        self.ewma_micros.store(new, Ordering::Relaxed);
    }

    /// A connection: a pooled one if one is ready, else a new one.
    pub async fn checkout(&self, connect_timeout: Duration) -> Result<Conn, ConnectError> {
        match self.pooled().await {
            Some(conn) => Ok(conn),
            None => self.connect(connect_timeout, self.h2).await,
        }
    }

    /// A pooled connection ready for a request, if there is one.
    pub async fn pooled(&self) -> Option<Conn> {
        if self.h2 {
            let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner()).clone();
            return shared.filter(|c| c.is_ready()).map(Conn::H2);
        }
        loop {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
            if idle.since.elapsed() >= self.idle_timeout {
                continue;
            }
            // Usually ready at once: then without a timer (and a clock read) for the wait.
            if idle.conn.is_ready()
                || tokio::time::timeout(Duration::from_millis(20), idle.conn.ready())
                    .await
                    .is_ok_and(|r| r.is_ok())
            {
                return Some(Conn::H1(idle.conn));
            }
        }
    }

    /// A new connection in the endpoint's protocol.
    pub async fn open(&self, connect_timeout: Duration) -> Result<Conn, ConnectError> {
        self.connect(connect_timeout, self.h2).await
    }

    /// An HTTP/1.1 connection of its own, even to an endpoint that speaks HTTP/2: for an
    /// upgrade, which HTTP/2 cannot carry.
    pub async fn checkout_http1(&self, connect_timeout: Duration) -> Result<Conn, ConnectError> {
        self.connect(connect_timeout, false).await
    }

    async fn connect(&self, timeout: Duration, h2: bool) -> Result<Conn, ConnectError> {
        let err = |detail: String| ConnectError { addr: self.addr, detail };
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(self.addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(err(e.to_string())),
            Err(_) => {
                return Err(err(format!("no connection within {}", humantime::format_duration(timeout))));
            }
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(stream);
        let handshake = async {
            if h2 {
                let (send, conn) = http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .handshake(io)
                    .await
                    .map_err(|e| err(e.to_string()))?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                *self.shared.lock().unwrap_or_else(|e| e.into_inner()) = Some(send.clone());
                Ok(Conn::H2(send))
            } else {
                let (send, conn) = http1::handshake(io).await.map_err(|e| err(e.to_string()))?;
                tokio::spawn(async move {
                    let _ = conn.with_upgrades().await;
                });
                Ok(Conn::H1(send))
            }
        };
        tokio::time::timeout(timeout, handshake)
            .await
            .unwrap_or_else(|_| Err(err("handshake timed out".into())))
    }

    /// Returns an HTTP/1.1 connection whose exchange finished cleanly to the pool.
    pub fn checkin(&self, conn: http1::SendRequest<Body>) {
        if self.is_draining() || conn.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(Idle { conn, since: Instant::now() });
        }
    }
}

/// A request in flight to an endpoint.
#[derive(Debug)]
pub struct InFlight {
    endpoint: Arc<Endpoint>,
    started: Instant,
}

impl InFlight {
    /// The response headers arrived: feed the latency average.
    pub fn answered(&self) {
        self.endpoint.observe(self.started.elapsed());
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The provider's response, minus hop-by-hop fields, with a body that returns the connection
/// to the pool when it ends and keeps the request in flight until then.
pub fn passthrough(
    resp: Response<Incoming>,
    endpoint: Arc<Endpoint>,
    conn: Option<http1::SendRequest<Body>>,
    in_flight: InFlight,
) -> HttpResponse {
    let (mut parts, incoming) = resp.into_parts();
    // A 101 keeps its upgrade fields, and its connection now belongs to the tunnel.
    let switching = parts.status == http::StatusCode::SWITCHING_PROTOCOLS;
    let protocol = switching.then(|| crate::upgrade::protocol(&parts.headers)).flatten();
    headers::strip_hop_by_hop(&mut parts.headers);
    if let Some(p) = protocol {
        crate::upgrade::restore(&mut parts.headers, p);
    }
    let conn = conn.filter(|_| !switching);
    let body = Pooled { inner: incoming, conn, endpoint, _in_flight: in_flight };
    Response::from_parts(parts, body::boxed(body))
}

/// A provider's response body: keeps the request in flight until it ends, then gives an
/// HTTP/1.1 connection back to the pool if the exchange finished cleanly.
struct Pooled {
    inner: Incoming,
    conn: Option<http1::SendRequest<Body>>,
    endpoint: Arc<Endpoint>,
    _in_flight: InFlight,
}

impl http_body::Body for Pooled {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        // Only a body read to its end leaves the connection ready for another request.
        if let Some(conn) = self.conn.take().filter(|_| self.inner.is_end_stream()) {
            self.endpoint.checkin(conn);
        }
    }
}
