//! The gateway's public listener, on the shared serve-and-drain module ([`crate::serve`]): it
//! accepts until the drain is done, and its connections close as the inbound side's do
//! ([`crate::inbound::close_on_phases`]), since the gateway's clients are owed the same
//! lossless end as a sidecar's.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};

use super::Gateway;
use super::edge::Edge;
use crate::inbound::{Signal, serve_draining};
use crate::serve::{self, Connection, Open, Stopped};

/// Accepts connections until the drain is done: the listener stays open through the drain,
/// as inbound's does.
pub async fn serve(listener: TcpListener, gateway: Arc<Gateway>) -> Stopped {
    let drain = gateway.drain.clone();
    serve_draining("gateway", listener, &drain, move |stream, peer, this| {
        connection(stream, peer, gateway.clone(), this)
    })
    .await
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
