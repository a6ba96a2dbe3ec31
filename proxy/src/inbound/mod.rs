//! The inbound side: the registered port, in front of the app.
//!
//! Each accepted connection (HTTP/1.1 or HTTP/2 with prior knowledge) gets this stack:
//!
//! ```text
//! Signal  -> marks responses with the read-only signal while draining; closes the connection
//! Track   -> metrics, in-flight count and arrival time for the drain
//! Forward -> the app on 127.0.0.1, pooled
//! ```
//!
//! The listener stays open until the drain is done. Connections close when the drain asks:
//! HTTP/2 ones at the start (GOAWAY, streams in progress finish), every one after a response
//! that carried the signal, and idle ones once drain-min is over.

mod forward;
mod signal;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub use self::forward::Forward;
pub(crate) use self::signal::{ConnectionControl, Signal};
use crate::drain::{Drain, Phase};
use crate::metrics::Metrics;
use crate::track::Track;

/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// What every inbound connection shares.
#[derive(Debug)]
pub struct Inbound {
    pub forward: Forward,
    pub drain: Arc<Drain>,
    pub metrics: Metrics,
    /// Whether responses carry the read-only signal (not with `--no-lifecycle`).
    pub signal: bool,
}

/// Accepts connections until the drain is done.
pub async fn serve(listener: TcpListener, inbound: Arc<Inbound>) {
    let mut phase = inbound.drain.subscribe();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = async { let _ = phase.wait_for(|p| matches!(p, Phase::Done { .. })).await; } => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                tokio::spawn(connection(stream, peer, inbound.clone()));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off rather than spin.
                tracing::warn!(error = %e, "inbound accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tracing::debug!("inbound listener closed");
}

#[tracing::instrument(name = "inbound", skip_all, fields(peer = %peer))]
async fn connection(stream: TcpStream, peer: SocketAddr, inbound: Arc<Inbound>) {
    let _ = stream.set_nodelay(true);
    let open = inbound.metrics.connections.with_label_values(&["inbound"]);
    open.inc();
    let control = Arc::new(ConnectionControl::default());
    // Order: Signal outermost so berth's own error responses carry the signal too; Track
    // inside it so every request, answered by the app or not, is counted and held in flight.
    let stack = Signal::new(
        Track::new(
            inbound.forward.for_peer(peer),
            "inbound",
            inbound.metrics.clone(),
            Some(inbound.drain.clone()),
        ),
        inbound.drain.clone(),
        control.clone(),
        inbound.signal,
    );
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(stack));
    tokio::pin!(conn);
    let mut phase = inbound.drain.subscribe();
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            () = close_requested(&mut phase, &control), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
    open.dec();
}

/// Resolves when this connection should close gracefully (the gateway's connections too).
pub(crate) async fn close_requested(phase: &mut watch::Receiver<Phase>, control: &ConnectionControl) {
    loop {
        let now = *phase.borrow_and_update();
        if now >= Phase::Closing || (now >= Phase::Draining && control.h2.load(Ordering::Relaxed)) {
            return;
        }
        tokio::select! {
            changed = phase.changed() => if changed.is_err() { return std::future::pending().await },
            () = control.close.notified() => return,
        }
    }
}
