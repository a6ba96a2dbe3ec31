//! The gateway's public listener: accepts until the drain is done, each connection closing as
//! the drain asks — the inbound side's rules ([`crate::inbound`]), since the gateway's clients
//! are owed the same lossless end as a sidecar's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};

use super::Gateway;
use super::edge::Edge;
use crate::drain::Phase;
use crate::inbound::{ConnectionControl, Signal, close_requested};
use crate::track::Track;

/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts connections until the drain is done: the listener stays open through the drain.
pub async fn serve(listener: TcpListener, gateway: Arc<Gateway>) {
    let mut phase = gateway.drain.subscribe();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = async { let _ = phase.wait_for(|p| matches!(p, Phase::Done { .. })).await; } => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                tokio::spawn(connection(stream, peer, gateway.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "gateway accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tracing::debug!("gateway listener closed");
}

#[tracing::instrument(name = "gateway", skip_all, fields(peer = %peer))]
async fn connection(stream: TcpStream, peer: SocketAddr, gateway: Arc<Gateway>) {
    let _ = stream.set_nodelay(true);
    let open = gateway.metrics.connections.with_label_values(&["gateway"]);
    open.inc();
    let control = Arc::new(ConnectionControl::default());
    // As inbound: Signal outermost so the gateway's own refusals carry it too; Track inside it
    // so every request, routed or refused, is counted and held in flight for the drain.
    let edge = Edge::new(gateway.outbound.service(), gateway.routes.clone(), peer);
    let track = Track::new(edge, "gateway", gateway.metrics.clone(), Some(gateway.drain.clone()));
    let stack = Signal::new(track, gateway.drain.clone(), control.clone(), true);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(stack));
    tokio::pin!(conn);
    let mut phase = gateway.drain.subscribe();
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
