//! The inbound side: the registered port, in front of the app.
//!
//! Each accepted connection (HTTP/1.1 or HTTP/2 with prior knowledge) gets this stack:
//!
//! ```text
//! Signal  -> marks responses with the read-only signal while draining; closes the connection
//! Track   -> metrics, in-flight count and arrival time for the drain
//! Forward -> the app on 127.0.0.1 through the bounded app pool, within the request timeout
//! ```
//!
//! The listener ([`crate::serve`]) stays open until the drain is done. Connections close when
//! the drain asks: HTTP/2 ones at the start (GOAWAY, streams in progress finish), every one
//! after a response that carried the signal, and idle ones once drain-min is over.

mod app;
mod forward;
mod signal;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use prometheus::IntGauge;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub use self::app::{AppPool, AppSettings};
pub use self::forward::Forward;
pub(crate) use self::signal::Signal;
use crate::drain::{Drain, Phase};
use crate::metrics::Metrics;
use crate::serve::{self, Connection, Connections, Open, Stopped};
use crate::track::Tracking;

/// What every inbound connection shares.
#[derive(Debug)]
pub struct Inbound {
    forward: Forward,
    drain: Arc<Drain>,
    /// Whether responses carry the read-only signal (not with `--no-lifecycle`).
    signal: bool,
    tracking: Tracking,
    connections_open: IntGauge,
}

impl Inbound {
    /// The inbound side, its metric handles looked up once for every connection.
    pub fn new(forward: Forward, drain: Arc<Drain>, metrics: &Metrics, signal: bool) -> Self {
        Inbound {
            forward,
            tracking: Tracking::new("inbound", metrics, Some(drain.clone())),
            connections_open: metrics.connections.with_label_values(&["inbound"]),
            drain,
            signal,
        }
    }
}

/// How long connections may take to finish once the drain is done (they are idle then, unless
/// the drain was forced).
const DONE_GRACE: Duration = Duration::from_secs(1);

/// Accepts connections until the drain is done: the listener stays open through the drain.
pub async fn serve(listener: TcpListener, inbound: Arc<Inbound>) -> Stopped {
    let drain = inbound.drain.clone();
    serve_draining("inbound", listener, &drain, move |stream, peer, this| {
        connection(stream, peer, inbound.clone(), this)
    })
    .await
}

/// A listener that drains as the sidecar's inbound does (the gateway's too): open until the
/// drain is done, its connections closed as the drain moves on ([`close_on_phases`]) and when
/// idle ([`serve::IDLE_TIMEOUT`]).
pub(crate) async fn serve_draining<F, Fut>(
    name: &'static str,
    listener: TcpListener,
    drain: &Arc<Drain>,
    connection: F,
) -> Stopped
where
    F: FnMut(TcpStream, SocketAddr, Arc<Connection>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut phase = drain.subscribe();
    let done = async move {
        let _ = phase.wait_for(|p| matches!(p, Phase::Done { .. })).await;
    };
    let connections = Arc::new(Connections::closing_idle(serve::IDLE_TIMEOUT));
    let phases = tokio::spawn(close_on_phases(drain.subscribe(), connections.clone()));
    let stopped = serve::serve(name, listener, done, DONE_GRACE, connections, connection).await;
    phases.abort();
    stopped
}

/// Closes the open connections as the drain moves on (the gateway's too): HTTP/2 ones at its start (GOAWAY), the
/// others once drain-min is over — each at once if idle, else after its response. A
/// connection that has not carried a request yet is left open: closing it would fail the
/// request its client may be sending (HTTP/1.1 cannot say "not processed, send it elsewhere").
/// Connections opened later close after their first response, which carries the signal.
pub(crate) async fn close_on_phases(mut phase: watch::Receiver<Phase>, connections: Arc<Connections>) {
    if phase.wait_for(|p| *p >= Phase::Draining).await.is_err() {
        return;
    }
    connections.close_where(Connection::is_h2);
    if phase.wait_for(|p| *p >= Phase::Closing).await.is_err() {
        return;
    }
    connections.close_where(Connection::is_used);
}

async fn connection(stream: TcpStream, peer: SocketAddr, inbound: Arc<Inbound>, this: Arc<Connection>) {
    let _open = Open::new(inbound.connections_open.clone());
    // Order: Signal outermost so berth's own error responses carry the signal too; Track
    // inside it so every request, answered by the app or not, is counted and held in flight.
    let track = inbound.tracking.wrap_on(inbound.forward.for_peer(peer), &this);
    let stack = Signal::new(track, inbound.drain.clone(), this.clone(), inbound.signal).with_peer(peer.ip());
    let service = TowerToHyperService::new(stack);
    serve::http(
        serve::requests_builder().serve_connection_with_upgrades(TokioIo::new(stream), service),
        &this,
    )
    .await;
}
