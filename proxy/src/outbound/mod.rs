//! The outbound side: the app's calls to other services.
//!
//! The app sends to `127.0.0.1:15001` (as an HTTP proxy, by `Host`, or by path prefix,
//! [`target`]). Each request then takes the path [`stack`] composes, one layer per concern:
//! the service and symbol are resolved ([`route`]), counted ([`measure`]), bounded by the
//! request timeout, sent and if need be sent again or hedged ([`retry`]), each attempt to an
//! instance the balancer picks ([`balance`]), under the per-attempt timeout, watched for the
//! read-only signal and for failures ([`observe`]), and sent on a pooled connection ([`send`]).
//! Every failure is one [`Error`] carrying its retry class; [`rescue`] turns what is left into
//! the response the app reads (`x-berth-error`, or a gRPC status for gRPC).

pub mod balance;
mod describe;
pub mod discovery;
mod error;
mod measure;
mod observe;
pub mod replay;
mod rescue;
pub mod retry;
mod route;
mod send;
pub mod stack;
pub mod target;
mod timeout;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use prometheus::IntGauge;
use tokio::net::{TcpListener, TcpStream};

use self::discovery::Discovery;
pub use self::error::{Error, RetryClass};
pub use self::retry::{BudgetSettings, Hedging};
use crate::body::HttpResponse;
use crate::endpoint::{Ejection, KeepAlive};
use crate::metrics::Metrics;
use crate::track::Track;

/// The header that marks a non-idempotent request as safe to retry (`true`).
pub use berth_core::header::RETRYABLE as RETRYABLE_HEADER;
/// The header that pins a request to a symbol.
pub use berth_core::header::SYMBOL as SYMBOL_HEADER;
/// The same names, parsed once: lookups on the request path skip parsing them.
const RETRYABLE: http::HeaderName = http::HeaderName::from_static(RETRYABLE_HEADER);
const LIFECYCLE: http::HeaderName = http::HeaderName::from_static(berth_core::header::LIFECYCLE);

/// Outbound timeouts and failure handling.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub connect_timeout: Duration,
    /// The whole request, every attempt included, until the response headers; `None` for no
    /// limit.
    pub request_timeout: Option<Duration>,
    /// One attempt until its response headers; `None` for no limit of its own.
    pub attempt_timeout: Option<Duration>,
    pub ejection: Ejection,
    /// HTTP/2 keep-alive PINGs to instances; `None` for none.
    pub keepalive: Option<KeepAlive>,
    /// Hedged attempts for idempotent requests; `None` for none.
    pub hedging: Option<Hedging>,
    /// What retries and hedges may add to the traffic.
    pub budget: BudgetSettings,
    /// Move failed requests to other instances and heed the read-only signal (off only with
    /// `--no-lifecycle`).
    pub failover: bool,
}

/// The outbound proxy: what every request's path shares.
#[derive(Debug)]
pub struct Outbound {
    pub discovery: Arc<Discovery>,
    metrics: Metrics,
    settings: Settings,
    policy: Arc<retry::Policy>,
    used: AtomicBool,
    /// How requests' lanes are found, and this sidecar's own.
    pub(crate) lanes: crate::lane::Lanes,
    /// Outbound requests in progress, counted by the tracking layer's drop guards: a request
    /// leaves the count when its response body ends or is dropped, however the client left.
    in_flight: IntGauge,
}

impl Outbound {
    pub fn new(discovery: Arc<Discovery>, metrics: Metrics, settings: Settings) -> Self {
        Outbound {
            discovery,
            in_flight: metrics.in_flight.with_label_values(&["outbound"]),
            metrics,
            policy: Arc::new(retry::Policy::new(&settings)),
            settings,
            used: AtomicBool::new(false),
            lanes: crate::lane::Lanes::default(),
        }
    }

    /// The same, finding lanes as `lanes` says (by default: `x-berth-symbol` and baggage only,
    /// no own symbol).
    pub fn with_lanes(self, lanes: crate::lane::Lanes) -> Self {
        Outbound { lanes, ..self }
    }

    /// Whether the app ever sent a request through this sidecar.
    pub fn used(&self) -> bool {
        self.used.load(Ordering::Relaxed)
    }

    /// Outbound requests in progress.
    pub fn in_flight(&self) -> u64 {
        u64::try_from(self.in_flight.get()).unwrap_or(0)
    }

    /// The outbound path as a tower service (see [`stack`]).
    pub fn service(self: &Arc<Self>) -> stack::Outbound {
        stack::new(self)
    }
}

/// How long the app's connections may take to finish once outbound stops (the app has
/// stopped by then, or the drain was cut short).
const STOP_GRACE: Duration = Duration::from_secs(1);

/// Accepts the app's connections until `stop` (outbound does not drain: apps call out while
/// they finish their work), each served by `handler` behind the tracking layer.
pub async fn serve<S>(
    listener: TcpListener,
    handler: S,
    metrics: Metrics,
    stop: impl std::future::Future<Output = ()>,
) -> crate::serve::Stopped
where
    S: tower::Service<Request<Incoming>, Response = HttpResponse, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    // The metric handles, looked up once for every connection.
    let tracking = crate::track::Tracking::new("outbound", &metrics, None);
    let open = metrics.connections.with_label_values(&["outbound"]);
    let connections = Arc::new(crate::serve::Connections::closing_idle(crate::serve::IDLE_TIMEOUT));
    crate::serve::serve("outbound", listener, stop, STOP_GRACE, connections, move |stream, _, this| {
        connection(stream, tracking.wrap_on(handler.clone(), &this), open.clone(), this)
    })
    .await
}

async fn connection<S>(
    stream: TcpStream,
    stack: Track<S>,
    open: prometheus::IntGauge,
    this: Arc<crate::serve::Connection>,
) where
    S: tower::Service<Request<Incoming>, Response = HttpResponse, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let _open = crate::serve::Open::new(open);
    let service = TowerToHyperService::new(stack);
    let builder = crate::serve::requests_builder();
    crate::serve::http(builder.serve_connection_with_upgrades(TokioIo::new(stream), service), &this).await;
}
