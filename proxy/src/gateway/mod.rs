//! `berth gateway`: the edge entry for traffic from outside the mesh.
//!
//! A public listener in front of the registry's services, with the sidecar's outbound routing
//! behind it — lifecycle-aware balancing, the read-only signal, retries and hedges, traffic
//! policies, lanes — so that the edge hop is as lossless during rollouts as every hop inside.
//! Each client connection gets this stack:
//!
//! ```text
//! Signal   -> while the gateway drains: Connection: close (GOAWAY on HTTP/2), x-berth-lifecycle
//! Track    -> metrics, in-flight count and arrival time for the drain
//! Edge     -> /SERVICE[.SYMBOL]/… (or Host) to an exposed service, else 404 not-exposed
//! outbound -> the sidecar's outbound stack (route, measure, timeouts, retry, balance, send)
//! ```
//!
//! Only the services named by `--expose` are reachable. On SIGTERM the gateway drains as a
//! sidecar does: `/ready` answers 503 at once, the listener keeps accepting for drain-min with
//! every response closing its connection, and the process ends once no request has arrived for
//! drain-quiet and none is in flight (forced at drain-timeout or by a second signal).

mod admin;
pub mod config;
pub mod edge;
mod listener;

use std::process::ExitCode;
use std::sync::Arc;

use prometheus::IntGauge;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use self::config::{GatewayArgs, GatewayConfig};
use crate::config::EXIT_CONFIG;
use crate::drain::{self, Drain, Phase};
use crate::track::Tracking;
use crate::{StartError, metrics, outbound};

/// `berth gateway`: validates the configuration, runs the gateway, returns the exit code.
pub fn main(args: GatewayArgs) -> ExitCode {
    let config = match args.validate() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    crate::run_to_exit(tokio::runtime::Builder::new_multi_thread(), run(config))
}

/// What the gateway's connections and admin routes share.
#[derive(Debug)]
pub struct Gateway {
    pub routes: Arc<edge::Routes>,
    pub outbound: Arc<outbound::Outbound>,
    pub drain: Arc<Drain>,
    pub metrics: metrics::Metrics,
    /// Request metric handles of the public listener, looked up once.
    tracking: Tracking,
    connections_open: IntGauge,
}

impl Gateway {
    /// Ready once every exposed service's first instance set is known, until the drain starts.
    pub fn ready(&self) -> Result<(), String> {
        if self.drain.is_draining() {
            return Err("draining".into());
        }
        let waiting: Vec<&str> = self
            .routes
            .exposed
            .iter()
            .filter(|name| !self.outbound.discovery.followed(name).is_some_and(|s| s.is_ready()))
            .map(String::as_str)
            .collect();
        match waiting.as_slice() {
            [] => Ok(()),
            names => Err(format!("waiting for the registry's instances of {}", names.join(", "))),
        }
    }
}

/// Runs the gateway until its drain is over; returns how the drain ended.
///
/// Shutdown: signals drive the [`Drain`]; the public listener serves until it is done; then
/// the admin listener stops.
pub async fn run(config: GatewayConfig) -> Result<Phase, StartError> {
    let bind = |what, addr| async move {
        TcpListener::bind(addr).await.map_err(|source| StartError::Bind { what, addr, source })
    };
    let public = bind("listen", config.listen).await?;
    let admin_listener = bind("admin", config.admin).await?;
    let local = |l: &TcpListener, fallback| l.local_addr().unwrap_or(fallback);
    let registry = berth_core::registry::open(&config.registry)?;
    let exposed: Vec<&str> = config.routes.exposed.iter().map(String::as_str).collect();
    tracing::info!(
        listen = %local(&public, config.listen), admin = %local(&admin_listener, config.admin),
        exposed = %exposed.join(","), by_host = config.routes.by_host, registry = %registry.describe(),
        "berth gateway listening"
    );
    if exposed.is_empty() {
        tracing::warn!("no --expose: every request answers 404 not-exposed");
    }
    let timing = config.timing;
    let gateway = Arc::new(start(config, registry).await);
    let (stop, stopping) = watch::channel(false);
    let public_task = tokio::spawn(listener::serve(public, gateway.clone()));
    let admin_task = tokio::spawn(admin::serve(admin_listener, gateway.clone(), async move {
        let mut stopping = stopping;
        let _ = stopping.wait_for(|s| *s).await;
    }));
    tokio::spawn(crate::signals(gateway.drain.clone()));

    let drain = &gateway.drain;
    let ended = drain::run(drain, timing, true).await;
    let elapsed = drain.elapsed().unwrap_or_default();
    if ended == (Phase::Done { forced: false }) {
        tracing::info!(after = ?elapsed, served_while_draining = drain.received_while_draining(), "stopped: drain complete");
        // A forced drain does not wait for the busy connections.
        let _ = public_task.await;
    } else {
        tracing::warn!(in_flight = drain.in_flight(), after = ?elapsed, "stopped: drain forced");
    }
    let _ = stop.send(true);
    let _ = admin_task.await;
    Ok(ended)
}

/// The gateway's shared state, following every exposed service from the start.
async fn start(config: GatewayConfig, registry: Arc<dyn berth_core::registry::Registry>) -> Gateway {
    let metrics = metrics::Metrics::new();
    let discovery = Arc::new(outbound::discovery::Discovery::new(
        registry,
        config.timing.warmup,
        metrics.clone(),
        config.outbound_settings,
    ));
    for service in &config.routes.exposed {
        if let Err(e) = discovery.service(service).await {
            tracing::warn!(error = %e, "cannot follow an exposed service");
        }
    }
    let outbound = Arc::new(
        outbound::Outbound::new(discovery, metrics.clone(), config.outbound_settings)
            .with_lanes(config.lanes),
    );
    let drain = Arc::new(Drain::default());
    Gateway {
        routes: Arc::new(config.routes),
        outbound,
        tracking: Tracking::new("gateway", &metrics, Some(drain.clone())),
        connections_open: metrics.connections.with_label_values(&["gateway"]),
        drain,
        metrics,
    }
}
