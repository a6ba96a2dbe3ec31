//! One upstream as this sidecar sees it: its load, its failures, whether it said it is
//! draining, and its pooled connections.
//!
//! Load is peak-EWMA latency (linkerd2-proxy's and `tower::load::PeakEwma`'s measure): the
//! estimate jumps to any slower answer at once and decays towards faster ones over about 10 s,
//! so an instance that stops answering is avoided from its first slow request. Ejection is
//! failure accrual: consecutive failures eject for a back-off that doubles on each ejection.
//! Both are atomics: the request path takes no lock to read them.
//!
//! Outbound, an [`Endpoint`] is an instance of a service and lives as long as its address is in
//! the service's instance set: when the registry drops the address, the endpoint and its
//! connections go with it, and an address that comes back starts afresh. Inbound, one endpoint
//! is the app. [`passthrough`] hands an upstream's response on and returns its connection to the
//! pool when the body ends.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
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

/// How long the latency estimate takes to forget a slow answer (by a factor of e). Short, so
/// that an instance avoided after a slow answer is tried again within seconds, and a hung one
/// is found by its PINGs on that try.
const EWMA_DECAY_MS: f64 = 1_000.0;
/// The latency an endpoint is taken to have before its first answer.
const DEFAULT_RTT_MICROS: f64 = 1_000.0;
/// The longest ejection, in multiples of the first.
pub const MAX_EJECTION_FACTOR: u32 = 10;

/// How failures eject an endpoint.
#[derive(Clone, Copy, Debug)]
pub struct Ejection {
    /// Consecutive failures that eject.
    pub after: u32,
    /// The first ejection's length; each further one doubles it, up to
    /// [`MAX_EJECTION_FACTOR`] times as long.
    pub base: Duration,
}

impl Ejection {
    /// The length of the ejection after `previous` ejections in a row: base, 2×, 4×, 8×, then
    /// 10× for every further one.
    pub fn length(&self, previous: u32) -> Duration {
        let doubled = self.base.saturating_mul(1 << previous.min(4));
        doubled.min(self.base.saturating_mul(MAX_EJECTION_FACTOR))
    }
}

/// HTTP/2 keep-alive PINGs on connections to an instance: a connection whose PING is not
/// answered within `timeout` is closed, and its instance ejected.
#[derive(Clone, Copy, Debug)]
pub struct KeepAlive {
    /// Quiet time on a connection with requests in flight after which a PING is sent.
    pub interval: Duration,
    pub timeout: Duration,
}

/// One service's answer times (RFC 6298's smoothed estimate and deviation), in µs.
#[derive(Debug, Default)]
pub struct Latency {
    srtt: AtomicU64,
    rttvar: AtomicU64,
}

impl Latency {
    /// Adds one answer time.
    pub fn observe(&self, sample: Duration) {
        let r = u64::try_from(sample.as_micros()).unwrap_or(u64::MAX).max(1);
        let srtt = self.srtt.load(Ordering::Relaxed);
        let (srtt, rttvar) = if srtt == 0 {
            (r, r / 2)
        } else {
            let rttvar = self.rttvar.load(Ordering::Relaxed);
            (srtt - srtt / 8 + r / 8, rttvar - rttvar / 4 + srtt.abs_diff(r) / 4)
        };
        // Racing updates may lose a sample; the estimate stays a fair one.
        self.srtt.store(srtt, Ordering::Relaxed);
        self.rttvar.store(rttvar, Ordering::Relaxed);
    }

    /// Four deviations of the answer time, in µs (0 before any answer).
    pub fn jitter_micros(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let v = 4.0 * self.rttvar.load(Ordering::Relaxed) as f64;
        v
    }

    /// The usual answer time, once something was answered.
    pub fn usual(&self) -> Option<Duration> {
        let srtt = self.srtt.load(Ordering::Relaxed);
        (srtt != 0).then(|| Duration::from_micros(srtt + 4 * self.rttvar.load(Ordering::Relaxed)))
    }
}

/// What an outbound endpoint needs besides its address.
#[derive(Clone, Debug)]
pub struct PeerSettings {
    pub ejection: Ejection,
    pub keepalive: Option<KeepAlive>,
    /// Counts ejections (`berth_outbound_ejections_total{service}`).
    pub ejections: Option<prometheus::IntCounter>,
    /// The service's answer times, which every answer of the endpoint feeds too.
    pub service_latency: Option<Arc<Latency>>,
}

impl Default for PeerSettings {
    fn default() -> Self {
        PeerSettings {
            ejection: Ejection { after: u32::MAX, base: Duration::ZERO },
            keepalive: None,
            ejections: None,
            service_latency: None,
        }
    }
}

/// Milliseconds on a monotonic clock (tokio's, so paused-time tests move it), never 0.
pub fn clock_ms() -> u64 {
    clock_ms_at(Instant::now())
}

/// [`clock_ms`] at `now`.
fn clock_ms_at(now: Instant) -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(|| now - Duration::from_millis(1));
    u64::try_from(now.saturating_duration_since(base).as_millis()).unwrap_or(u64::MAX)
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
    settings: PeerSettings,
    in_flight: AtomicU32,
    /// The peak-EWMA latency estimate in µs (f64 bits), and when it was last updated.
    rtt_micros: AtomicU64,
    rtt_at_ms: AtomicU64,
    consecutive_failures: AtomicU32,
    ejections: AtomicU32,
    /// [`clock_ms`] until which the endpoint is ejected; 0 when it is not.
    ejected_until: AtomicU64,
    /// Whether any ejection was ever made (keeps `success` to one load on the common path).
    ever_ejected: AtomicBool,
    /// `berth.started_at` of the current registration (0 when unknown).
    registration: AtomicU64,
    /// Registration + 1 when that registration sent the read-only signal; 0 otherwise.
    draining_of: AtomicU64,
    idle: Mutex<Vec<Idle>>,
    shared: Mutex<Option<http2::SendRequest<Body>>>,
    /// Held while an HTTP/2 connection is being made: requests arriving meanwhile wait for it
    /// rather than each opening a connection of their own.
    connecting: tokio::sync::Mutex<()>,
    /// HTTP/2 connects finished, and why the last failed one did.
    connect_attempts: AtomicU64,
    connect_failure: Mutex<String>,
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
            settings: PeerSettings::default(),
            idle_timeout,
            in_flight: AtomicU32::new(0),
            rtt_micros: AtomicU64::new(DEFAULT_RTT_MICROS.to_bits()),
            rtt_at_ms: AtomicU64::new(clock_ms()),
            consecutive_failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ever_ejected: AtomicBool::new(false),
            registration: AtomicU64::new(registration),
            draining_of: AtomicU64::new(0),
            idle: Mutex::new(Vec::new()),
            shared: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            connect_attempts: AtomicU64::new(0),
            connect_failure: Mutex::new(String::new()),
        }
    }

    /// An instance of a service: ejection, keep-alive PINGs and metrics as `settings` say.
    pub fn instance(addr: SocketAddr, h2: bool, registration: u64, settings: PeerSettings) -> Self {
        Endpoint { settings, ..Endpoint::new(addr, h2, registration) }
    }

    /// Notes the registration the registry now lists (a new one clears a draining mark).
    pub fn set_registration(&self, started_at: u64) {
        self.registration.store(started_at, Ordering::Relaxed);
    }

    /// Requests sent and not yet finished.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The peak-EWMA latency estimate now, in microseconds.
    pub fn rtt_micros(&self, now_ms: u64) -> f64 {
        let rtt = f64::from_bits(self.rtt_micros.load(Ordering::Relaxed));
        let at = self.rtt_at_ms.load(Ordering::Relaxed);
        #[allow(clippy::cast_precision_loss)]
        let elapsed = now_ms.saturating_sub(at) as f64;
        rtt * (-elapsed / EWMA_DECAY_MS).exp()
    }

    /// The balancer's measure of how loaded the endpoint is: latency × (requests in flight + 1).
    pub fn load(&self, now_ms: u64) -> f64 {
        self.rtt_micros(now_ms) * f64::from(self.in_flight() + 1)
    }

    fn observe(&self, latency: Duration, now: u64, peak_only: bool) {
        #[allow(clippy::cast_precision_loss)]
        let sample = latency.as_micros() as f64;
        let old = f64::from_bits(self.rtt_micros.load(Ordering::Relaxed));
        let at = self.rtt_at_ms.load(Ordering::Relaxed);
        let new = if sample > old {
            sample
        } else if peak_only {
            return;
        } else {
            #[allow(clippy::cast_precision_loss)]
            let decay = (-(now.saturating_sub(at) as f64) / EWMA_DECAY_MS).exp();
            old * decay + sample * (1.0 - decay)
        };
        // Racing updates may lose a sample; the estimate stays a fair one.
        self.rtt_micros.store(new.to_bits(), Ordering::Relaxed);
        self.rtt_at_ms.store(now, Ordering::Relaxed);
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
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && clock_ms() < until
    }

    /// How long the current ejection has left (zero when not ejected).
    pub fn ejected_for(&self) -> Duration {
        let until = self.ejected_until.load(Ordering::Relaxed);
        Duration::from_millis(until.saturating_sub(clock_ms()))
    }

    /// Counts a failure; returns `true` when it ejected the endpoint.
    pub fn failure(&self) -> bool {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < self.settings.ejection.after {
            return false;
        }
        self.eject();
        true
    }

    /// Ejects the endpoint now, for the next back-off, and drops its pooled connections.
    pub fn eject(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        let n = self.ejections.fetch_add(1, Ordering::Relaxed);
        let length = self.settings.ejection.length(n);
        let until = clock_ms().saturating_add(u64::try_from(length.as_millis()).unwrap_or(u64::MAX));
        self.ejected_until.store(until, Ordering::Relaxed);
        self.ever_ejected.store(true, Ordering::Relaxed);
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
        *self.shared.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if let Some(c) = &self.settings.ejections {
            c.inc();
        }
    }

    /// Counts a success: failures and back-off start over.
    pub fn success(&self) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
        if self.ever_ejected.load(Ordering::Relaxed) && self.ejections.load(Ordering::Relaxed) != 0 {
            self.ejections.store(0, Ordering::Relaxed);
            self.ejected_until.store(0, Ordering::Relaxed);
        }
    }

    /// Starts a request: counted in flight until the guard drops.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight { endpoint: self.clone(), started: Some(Instant::now()), answered: false }
    }

    /// A request counted in flight but not timed: for the app behind the inbound side, which
    /// is never balanced by its latency (two clock reads and an EWMA update fewer a request).
    pub fn start_untimed(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight { endpoint: self.clone(), started: None, answered: false }
    }

    /// A connection: a pooled one if one is ready, else a new one.
    pub async fn checkout(self: &Arc<Self>, connect_timeout: Duration) -> Result<Conn, ConnectError> {
        if self.h2 {
            return self.checkout_h2(connect_timeout).await;
        }
        match self.pooled().await {
            Some(conn) => Ok(conn),
            None => self.connect(connect_timeout, false).await,
        }
    }

    /// A pooled connection ready for a request, if there is one.
    pub async fn pooled(&self) -> Option<Conn> {
        if self.h2 {
            return self.shared_ready().map(Conn::H2);
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
    pub async fn open(self: &Arc<Self>, connect_timeout: Duration) -> Result<Conn, ConnectError> {
        self.connect(connect_timeout, self.h2).await
    }

    /// The shared HTTP/2 connection, made by one request at a time: those arriving meanwhile
    /// wait for it, and share its failure rather than each waiting out a connect of its own.
    async fn checkout_h2(self: &Arc<Self>, connect_timeout: Duration) -> Result<Conn, ConnectError> {
        if let Some(conn) = self.shared_ready() {
            return Ok(Conn::H2(conn));
        }
        let attempts = self.connect_attempts.load(Ordering::Acquire);
        let _connecting = self.connecting.lock().await;
        if let Some(conn) = self.shared_ready() {
            return Ok(Conn::H2(conn));
        }
        if self.connect_attempts.load(Ordering::Acquire) != attempts {
            let detail = self.connect_failure.lock().unwrap_or_else(|e| e.into_inner()).clone();
            return Err(ConnectError { addr: self.addr, detail });
        }
        let made = self.connect(connect_timeout, true).await;
        if let Err(e) = &made {
            e.detail.clone_into(&mut self.connect_failure.lock().unwrap_or_else(|e| e.into_inner()));
        }
        self.connect_attempts.fetch_add(1, Ordering::Release);
        made
    }

    /// The shared HTTP/2 connection, if it takes requests.
    fn shared_ready(&self) -> Option<http2::SendRequest<Body>> {
        let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        shared.as_ref().filter(|c| c.is_ready()).cloned()
    }

    /// An HTTP/1.1 connection of its own, even to an endpoint that speaks HTTP/2: for an
    /// upgrade, which HTTP/2 cannot carry.
    pub async fn checkout_http1(self: &Arc<Self>, connect_timeout: Duration) -> Result<Conn, ConnectError> {
        self.connect(connect_timeout, false).await
    }

    async fn connect(self: &Arc<Self>, timeout: Duration, h2: bool) -> Result<Conn, ConnectError> {
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
                let mut builder = http2::Builder::new(TokioExecutor::new());
                builder.timer(TokioTimer::new());
                if let Some(ka) = self.settings.keepalive {
                    // Only while requests are in flight: an idle connection costs nothing.
                    builder
                        .keep_alive_interval(ka.interval)
                        .keep_alive_timeout(ka.timeout)
                        .keep_alive_while_idle(false);
                }
                let (send, conn) = builder.handshake(io).await.map_err(|e| err(e.to_string()))?;
                let endpoint = Arc::downgrade(self);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        connection_failed(&endpoint, &e);
                    }
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

/// An HTTP/2 connection to an instance ended with an error. An unanswered keep-alive PING
/// means the host stopped answering (hung, or its packets dropped): the instance is ejected at
/// once, before any registry push, so no new request waits on it.
fn connection_failed(endpoint: &Weak<Endpoint>, e: &hyper::Error) {
    let Some(endpoint) = endpoint.upgrade() else { return };
    if e.is_timeout() {
        tracing::info!(instance = %endpoint.addr, error = %e, "HTTP/2 keep-alive PING unanswered; connection closed, instance ejected");
        endpoint.eject();
    } else {
        tracing::debug!(instance = %endpoint.addr, error = %e, "HTTP/2 connection ended with an error");
    }
}

/// A request in flight to an endpoint: counted until dropped, however the request ends.
#[derive(Debug)]
pub struct InFlight {
    endpoint: Arc<Endpoint>,
    /// When it was sent, if it is timed ([`Endpoint::start_untimed`]).
    started: Option<Instant>,
    answered: bool,
}

impl InFlight {
    /// The response headers arrived: feed the latency estimates.
    pub fn answered(&mut self) {
        self.answered = true;
        let Some(started) = self.started else { return };
        let now = Instant::now();
        let latency = now.saturating_duration_since(started);
        self.endpoint.observe(latency, clock_ms_at(now), false);
        if let Some(service) = &self.endpoint.settings.service_latency {
            service.observe(latency);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
        // Given up on before any answer (a hedge won, the client left): at least this slow.
        if let Some(started) = self.started.filter(|_| !self.answered) {
            let now = Instant::now();
            self.endpoint.observe(now.saturating_duration_since(started), clock_ms_at(now), true);
        }
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
    passthrough_lent(resp, endpoint, conn, in_flight, None)
}

/// [`passthrough`], with a share of a bounded pool held until the body ends (and released
/// after the connection is back in the pool): in the same body, rather than a wrapper body of
/// its own and one more allocation and dynamic call per frame.
pub fn passthrough_lent(
    resp: Response<Incoming>,
    endpoint: Arc<Endpoint>,
    conn: Option<http1::SendRequest<Body>>,
    in_flight: InFlight,
    lent: Option<OwnedSemaphorePermit>,
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
    let body = Pooled { inner: incoming, conn, endpoint, _in_flight: in_flight, _lent: lent };
    Response::from_parts(parts, body::boxed(body))
}

/// A provider's response body: keeps the request in flight until it ends, then gives an
/// HTTP/1.1 connection back to the pool if the exchange finished cleanly. The pool share is
/// declared last: fields drop after [`Drop::drop`] checked the connection in, so the next
/// waiting request finds it there.
struct Pooled {
    inner: Incoming,
    conn: Option<http1::SendRequest<Body>>,
    endpoint: Arc<Endpoint>,
    _in_flight: InFlight,
    _lent: Option<OwnedSemaphorePermit>,
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
