//! berth's control plane: the admin HTTP API, and `berth ctl`, its command-line client.
//!
//! A request arrives on the listener (plain HTTP, or TLS with rustls — [`tls`]) and enters the
//! [`api`] router. The outermost layer, [`metrics`], counts and times it by route template.
//! The route's handler first extracts the caller from the bearer token ([`auth`]: 401 without
//! a known token, 403 when a change comes with a read-only token) and the checked path, then
//! reads the registry: instances from naming, the policy from config through the [`store`].
//! A change is applied to the stored policy, validated with the sidecars' own validator
//! (`Policy::parse`), written with a conditional write on the version that was read (412 for
//! the loser of a race), and recorded in the [`history`]. [`zombies`] probes instances on
//! demand. Admin keeps no state between requests — it all lives in the registry — so several
//! replicas can serve side by side. The API is described in [`openapi`]; [`ctl`] calls it.

pub mod api;
pub mod auth;
pub mod config;
pub mod ctl;
pub mod events;
pub mod fleet;
pub mod history;
pub mod metrics;
pub mod openapi;
pub mod store;
pub mod tls;
pub mod traffic;
pub mod zombies;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

pub use config::{AdminArgs, Config, EXIT_CONFIG};

/// Exit code when admin could not start (the port is in use, the registry is unusable).
pub const EXIT_START: u8 = 1;

/// How long a query to Prometheus may take.
const PROMETHEUS_TIMEOUT: Duration = Duration::from_secs(5);

/// How long open requests may take to finish once a shutdown signal arrives.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why admin could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Registry(#[from] berth_core::registry::RegistryError),
    #[error("serving failed: {0}")]
    Serve(#[source] std::io::Error),
    #[error("cannot build an HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// `berth admin`: validates the configuration, serves until SIGTERM or SIGINT, and returns
/// the exit code.
pub fn main(args: AdminArgs) -> ExitCode {
    let config = match args.validate() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let Some(runtime) = runtime(&mut tokio::runtime::Builder::new_multi_thread()) else {
        return ExitCode::from(EXIT_START);
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "berth admin stopped");
            ExitCode::from(EXIT_START)
        }
    }
}

/// Builds a runtime, saying why on stderr when it cannot.
fn runtime(builder: &mut tokio::runtime::Builder) -> Option<tokio::runtime::Runtime> {
    builder.enable_all().build().inspect_err(|e| eprintln!("error: cannot start the runtime: {e}")).ok()
}

/// Binds, logs `berth admin listening listen=ADDR`, and serves until a signal.
pub async fn run(config: Config) -> Result<(), StartError> {
    let bind_err = |source| StartError::Bind { addr: config.listen, source };
    let listener = std::net::TcpListener::bind(config.listen).map_err(bind_err)?;
    listener.set_nonblocking(true).map_err(bind_err)?;
    let addr = listener.local_addr().map_err(bind_err)?;
    let registry = berth_core::registry::open(&config.registry)?;
    let metrics = metrics::Metrics::new();
    let store = store::Store::new(registry.clone(), metrics.clone());
    let events = events::Events::new(metrics.clone());
    let (stop, stopping) = tokio::sync::watch::channel(false);
    if let Some(secret) = &config.webhook_secret {
        for url in &config.webhooks {
            let (queue, deliveries) = tokio::sync::mpsc::channel(events::webhook::QUEUE);
            events.add_webhook(queue);
            let hook = events::webhook::Webhook::new(url.clone(), secret, metrics.clone())
                .map_err(StartError::Client)?;
            tokio::spawn(hook.run(deliveries));
        }
    }
    let (latest, scans) = tokio::sync::watch::channel(std::sync::Arc::new(fleet::Scan::default()));
    let traffic = traffic::Traffic::default();
    let scanner = fleet::scan::Scanner {
        registry: registry.clone(),
        store: store.clone(),
        client: fleet::sidecar::SidecarClient::new(config.probe_timeout).map_err(StartError::Client)?,
        traffic: traffic.clone(),
        events: events.clone(),
        metrics: metrics.clone(),
        interval: config.scan_interval,
        read_metrics: config.prometheus.is_none(),
        latest,
    };
    tokio::spawn(scanner.run(stopping.clone()));
    let state = api::AppState {
        store,
        registry: registry.clone(),
        tokens: config.tokens.clone(),
        metrics,
        warmup: config.warmup,
        probe_timeout: config.probe_timeout,
        fleet: fleet::Fleet::new(scans),
        traffic,
        prometheus: match config.prometheus.clone() {
            Some(url) => Some(
                traffic::prometheus::Prometheus::new(url, PROMETHEUS_TIMEOUT).map_err(StartError::Client)?,
            ),
            None => None,
        },
        events,
        stopping,
    };
    let app = api::router(state).into_make_service();
    let handle = axum_server::Handle::new();
    tokio::spawn(shutdown_on_signal(handle.clone(), stop));
    tracing::info!(
        listen = %addr, tls = config.tls.is_some(), registry = %registry.describe(),
        tokens = ?config.tokens, webhooks = ?config.webhooks, scan_interval = ?config.scan_interval,
        prometheus = ?config.prometheus.as_ref().map(reqwest::Url::as_str),
        "berth admin listening"
    );
    let served = match config.tls {
        Some(tls) => {
            let tls = axum_server::tls_rustls::RustlsConfig::from_config(tls);
            axum_server::from_tcp_rustls(listener, tls).map_err(bind_err)?.handle(handle).serve(app).await
        }
        None => axum_server::from_tcp(listener).map_err(bind_err)?.handle(handle).serve(app).await,
    };
    served.map_err(StartError::Serve)?;
    tracing::info!("berth admin stopped");
    Ok(())
}

/// On SIGTERM or SIGINT, stops the scanner and the event streams, stops accepting and lets
/// open requests finish.
async fn shutdown_on_signal(handle: axum_server::Handle<SocketAddr>, stop: tokio::sync::watch::Sender<bool>) {
    let signal = berth_core::shutdown::requested().await;
    tracing::info!(signal, "shutting down");
    let _ = stop.send(true);
    handle.graceful_shutdown(Some(SHUTDOWN_GRACE));
}
