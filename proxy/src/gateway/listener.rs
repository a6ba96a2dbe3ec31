//! The gateway's public listener, on the shared serve-and-drain module ([`crate::serve`]): it
//! accepts until the drain is done, and its connections close as the inbound side's do
//! ([`crate::inbound::close_on_phases`]), since the gateway's clients are owed the same
//! lossless end as a sidecar's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};

use super::Gateway;
use super::edge::Edge;
use crate::drain::Phase;
use crate::inbound::{Signal, close_on_phases};
use crate::serve::{self, Connection, Connections, Open, Stopped};

/// How long connections may take to finish once the drain is done (they are idle then, unless
/// the drain was forced).
const DONE_GRACE: Duration = Duration::from_secs(1);

/// Accepts connections until the drain is done: the listener stays open through the drain.
pub async fn serve(listener: TcpListener, gateway: Arc<Gateway>) -> Stopped {
    let mut phase = gateway.drain.subscribe();
    let done = async move {
        let _ = phase.wait_for(|p| matches!(p, Phase::Done { .. })).await;
    };
    let connections = Arc::new(Connections::closing_idle(serve::IDLE_TIMEOUT));
    let phases = tokio::spawn(close_on_phases(gateway.drain.subscribe(), connections.clone()));
    let stopped =
        serve::serve("gateway", listener, done, DONE_GRACE, connections, move |stream, peer, this| {
            connection(stream, peer, gateway.clone(), this)
        })
        .await;
    phases.abort();
    stopped
}

async fn connection(stream: TcpStream, peer: SocketAddr, gateway: Arc<Gateway>, this: Arc<Connection>) {
    let _open = Open::new(gateway.connections_open.clone());
    // As inbound: Signal outermost so the gateway's own refusals carry it too; Track inside it
    // so every request, routed or refused, is counted and held in flight for the drain.
    let edge = Edge::new(gateway.outbound.service(), gateway.routes.clone(), peer);
    let stack = Signal::new(gateway.tracking.wrap_on(edge, &this), gateway.drain.clone(), this.clone(), true);
    let service = TowerToHyperService::new(stack);
    serve::http(
        serve::requests_builder().serve_connection_with_upgrades(TokioIo::new(stream), service),
        &this,
    )
    .await;
}
