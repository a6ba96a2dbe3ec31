//! berth's sidecar.
//!
//! It sits beside one app and makes the app's life lossless:
//!
//! - **Readiness and late registration.** [`health`] checks the app and its dependencies; the
//!   [`lifecycle`] controller registers the instance in the registry only once they pass (and
//!   after the register delay), and `/ready` answers 200 only while registered.
//! - **Inbound.** [`inbound`] accepts on the registered port and forwards to the app on
//!   127.0.0.1 through a bounded pool, counting every request in flight ([`track`]).
//! - **Serving.** Every listener (inbound, outbound, admin) runs the same accept loop and
//!   per-connection graceful shutdown ([`serve`]); signals reach the drain as one future
//!   (`berth_core::shutdown`).
//! - **Drain.** On SIGTERM or `POST /drain`, [`drain`] deregisters at once, keeps accepting for
//!   drain-min while every response carries the read-only signal, then ends once quiet.
//! - **Admin.** [`admin`] serves probes, [`metrics`], state and the drain trigger.
//! - **Consumers without a sidecar.** The lifecycle controller keeps the instance's Nacos
//!   weight at its share under the traffic policy ([`weight`]), and the drain counts the
//!   requests of peers that kept coming after the read-only signal.
//!
//! [`run`] wires them together; [`main`] is `berth proxy`.

pub mod admin;
pub mod body;
pub mod config;
pub mod drain;
pub mod endpoint;
pub mod gateway;
pub mod headers;
pub mod health;
pub mod inbound;
pub mod lane;
pub mod lifecycle;
pub mod metrics;
pub mod outbound;
pub mod serve;
pub mod track;
pub mod upgrade;
pub mod weight;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Config, ConfigError, EXIT_CONFIG, ProxyArgs};
use crate::drain::{Drain, Phase};

/// Exit code when the sidecar could not start (a port in use, an unusable registry).
pub const EXIT_START: u8 = 1;
/// Exit code when the drain was forced (drain-timeout or a second signal).
pub const EXIT_FORCED: u8 = 2;

/// Why the sidecar could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {what} address {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Registry(#[from] berth_core::registry::RegistryError),
}

/// `berth proxy`: validates the configuration, runs the sidecar, and returns the exit code.
pub fn main(args: ProxyArgs) -> ExitCode {
    let config = match load(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let builder = if config.workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(usize::from(config.workers));
        b
    };
    run_to_exit(builder, run(config))
}

/// Runs a listener (the sidecar's or the gateway's) on a runtime from `builder` and turns how
/// it ended into the process's exit code: 0 after a drain that ended on evidence,
/// [`EXIT_FORCED`] after a forced one, [`EXIT_START`] when it could not start.
pub(crate) fn run_to_exit(
    mut builder: tokio::runtime::Builder,
    listener: impl std::future::Future<Output = Result<Phase, StartError>>,
) -> ExitCode {
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_START);
        }
    };
    match runtime.block_on(listener) {
        Ok(Phase::Done { forced: false }) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(EXIT_FORCED),
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            ExitCode::from(EXIT_START)
        }
    }
}

/// Applies the config file and validates.
fn load(args: ProxyArgs) -> Result<Config, ConfigError> {
    let raw: Vec<OsString> = std::env::args_os().skip_while(|a| a != "proxy").skip(1).collect();
    args.with_config_file(&raw)?.validate()
}

/// The three listeners, bound before anything else starts.
struct Listeners {
    inbound: TcpListener,
    admin: TcpListener,
    outbound: TcpListener,
}

impl Listeners {
    async fn bind(config: &Config) -> Result<Listeners, StartError> {
        let bind = |what, addr| async move {
            TcpListener::bind(addr).await.map_err(|source| StartError::Bind { what, addr, source })
        };
        Ok(Listeners {
            inbound: bind("inbound", config.inbound).await?,
            admin: bind("admin", config.admin).await?,
            outbound: bind("outbound", config.outbound).await?,
        })
    }
}

/// Runs the sidecar until its drain is over; returns how the drain ended.
///
/// Shutdown: signals (and `POST /drain`) drive the [`Drain`]; inbound serves until the drain
/// is done; then outbound lingers while the app runs; then one stop reaches the outbound and
/// admin listeners, whose connections finish gracefully.
pub async fn run(config: Config) -> Result<Phase, StartError> {
    let listeners = Listeners::bind(&config).await?;
    let local = |l: &TcpListener, fallback| l.local_addr().unwrap_or(fallback);
    let inbound_addr = local(&listeners.inbound, config.inbound);
    let admin_addr = local(&listeners.admin, config.admin);
    let advertise = match config.advertise.port() {
        0 => SocketAddr::new(config.advertise.ip(), inbound_addr.port()),
        _ => config.advertise,
    };
    let registry = berth_core::registry::open(&config.registry)?;
    tracing::info!(
        inbound = %inbound_addr, admin = %admin_addr,
        outbound = %local(&listeners.outbound, config.outbound), advertise = %advertise, app = %config.app,
        service = %config.service, symbol = %config.symbol, registry = %registry.describe(),
        "berth proxy listening"
    );

    let config = Arc::new(config);
    let metrics = metrics::Metrics::new();
    let drain = Arc::new(Drain::default());
    drain.heed().count_into(metrics.drain_signal_ignored.clone());
    let (health_tx, health_rx) = watch::channel(health::Health::default());
    let (state_tx, state_rx) = lifecycle::channel();
    // The one stop of the outbound and admin listeners, once inbound is done and the app too.
    let (stop, stopping) = watch::channel(false);
    let stopped = move || until_true(stopping.clone());

    tokio::spawn(health::HealthMonitor::new(&config).run(health_tx));
    let outbound = start_outbound(&config, registry.clone(), &metrics).await;
    let outbound_task = tokio::spawn(outbound::serve(
        listeners.outbound,
        // The outbound path as one tower service (outbound::stack).
        outbound.service(),
        metrics.clone(),
        stopped(),
    ));
    let weights = weight::Keeper {
        // The instances and policy its weight follows, as outbound follows any service.
        service: config.nacos_weight.follow_policy.then(|| outbound.discovery.own(&config.service)),
        scale: config.nacos_weight.scale,
        me: advertise,
        symbol: config.symbol.clone(),
        warmup: config.timing.warmup,
    };
    let controller = tokio::spawn(
        lifecycle::Controller {
            config: config.clone(),
            registry,
            advertise,
            admin_port: admin_addr.port(),
            metrics: metrics.clone(),
            drain: drain.clone(),
            health: health_rx.clone(),
            state: state_tx,
            weights,
        }
        .run(),
    );
    let app = inbound::AppPool::new(config.app, config.app_protocol, config.app_pool, health_rx);
    let inbound = inbound::Inbound::new(
        inbound::Forward::new(Arc::new(app)).with_lanes(&config.lanes),
        drain.clone(),
        &metrics,
        config.lifecycle,
    );
    let inbound_task = tokio::spawn(inbound::serve(listeners.inbound, Arc::new(inbound)));
    let admin = Arc::new(admin::Admin {
        service: config.service.clone(),
        symbol: config.symbol.to_string(),
        state: state_rx,
        drain: drain.clone(),
        metrics: metrics.clone(),
        token: config.drain_token.clone(),
        outbound: outbound.clone(),
    });
    let admin_task = tokio::spawn(admin::serve(listeners.admin, admin, stopped()));
    tokio::spawn(signals(drain.clone()));

    let ended = drain::run(&drain, config.timing, config.lifecycle).await;
    let _ = controller.await;
    log_end(&drain, ended);
    // Done: the inbound listener closes and its idle connections end. A forced drain does
    // not wait for the busy ones.
    if ended == (Phase::Done { forced: false }) {
        let _ = inbound_task.await;
    }
    linger(&outbound, &drain, &config).await;
    let _ = stop.send(true);
    let _ = tokio::join!(admin_task, outbound_task);
    Ok(ended)
}

/// Resolves once `flag` is true (or its sender is gone).
async fn until_true(mut flag: watch::Receiver<bool>) {
    let _ = flag.wait_for(|f| *f).await;
}

/// The outbound proxy, following the `--services` from the start.
async fn start_outbound(
    config: &Config,
    registry: Arc<dyn berth_core::registry::Registry>,
    metrics: &metrics::Metrics,
) -> Arc<outbound::Outbound> {
    let discovery = Arc::new(outbound::discovery::Discovery::new(
        registry,
        config.timing.warmup,
        metrics.clone(),
        config.outbound_settings,
    ));
    for service in &config.services {
        if let Err(e) = discovery.service(service).await {
            tracing::warn!(error = %e, "cannot follow a --services entry");
        }
    }
    Arc::new(
        outbound::Outbound::new(discovery, metrics.clone(), config.outbound_settings)
            .with_lanes(config.lanes.clone()),
    )
}

fn log_end(drain: &Drain, ended: Phase) {
    let elapsed = drain.elapsed().unwrap_or_default();
    match ended {
        Phase::Done { forced: true } => {
            tracing::warn!(in_flight = drain.in_flight(), after = ?elapsed, "stopped: drain forced")
        }
        _ => tracing::info!(
            after = ?elapsed, served_while_draining = drain.received_while_draining(), "stopped: drain complete"
        ),
    }
}

/// After the inbound drain, outbound stays up while the app may still call out: apps call
/// other services while they finish their work. It lingers only if the app ever used it, until
/// the app stops accepting and no outbound request is in flight, bounded by drain-timeout and
/// cut short by another signal.
async fn linger(outbound: &outbound::Outbound, drain: &Drain, config: &Config) {
    if !outbound.used() || !config.lifecycle {
        return;
    }
    tracing::info!("inbound drained; outbound stays open while the app runs");
    let app_gone = async {
        loop {
            let accepting = tokio::time::timeout(
                std::time::Duration::from_millis(500),
                tokio::net::TcpStream::connect(config.app),
            )
            .await
            .is_ok_and(|c| c.is_ok());
            if !accepting && outbound.in_flight() == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        () = app_gone => tracing::info!("the app has stopped; exiting"),
        () = tokio::time::sleep(config.timing.drain_timeout) => tracing::warn!(in_flight = outbound.in_flight(), "the app is still running after drain-timeout; exiting"),
        () = drain.forced() => tracing::info!("signal; exiting"),
    }
}

/// The first SIGTERM or SIGINT starts the drain (or joins one a `/drain` request started: in
/// Kubernetes the kubelet signals the sidecar while the app's preStop hook calls `/drain`);
/// the next signal forces it.
pub(crate) async fn signals(drain: Arc<Drain>) {
    let mut signals = match berth_core::shutdown::Signals::new() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install signal handlers; drain with POST /drain");
            return;
        }
    };
    let mut first = true;
    loop {
        let name = signals.next().await;
        if first {
            drain.start(name);
            first = false;
        } else {
            drain.force(&format!("second signal ({name})"));
        }
    }
}
