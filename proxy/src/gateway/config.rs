//! `berth gateway`'s options: its two listeners, the registry, the exposed services, its drain,
//! and what it shares with the sidecar: the admin listener and the registry ([`ServeArgs`]) and
//! the outbound routing options ([`OutboundArgs`]).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use berth_core::registry::RegistryUrl;
use clap::Args;

use crate::config::{ConfigError, OutboundArgs, ServeArgs, Timing, duration, service_name};

/// `berth gateway`: the edge entry for traffic from outside the mesh.
#[derive(Debug, Clone, Args)]
#[command(
    about = "Run the edge gateway: outside traffic to exposed services, with berth's routing and a lossless drain",
    // The shared options' help is written for the sidecar; the gateway's differs in what it
    // answers and in the registry having no default.
    mut_arg("admin", |a| a.help("Where the gateway answers probes and metrics (`/live`, `/ready`, `/metrics`)")),
    mut_arg("registry", |a| a.help(
        "The registry: `nacos://[user:password@]host:port[?namespace=NS&group=GROUP&grpc_port=P]` \
         or `dir:///path` (required)"
    ))
)]
pub struct GatewayArgs {
    /// Where clients outside the mesh connect (HTTP/1.1 and h2c).
    #[arg(
        long,
        help_heading = "Listeners and registry",
        env = "BERTH_LISTEN",
        value_name = "ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub listen: SocketAddr,

    /// `--admin` and `--registry`, defined once with the sidecar's.
    #[command(flatten)]
    pub serve: ServeArgs,

    /// The services reachable through the gateway, as `/SERVICE/…` and `/SERVICE.SYMBOL/…`.
    /// Nothing else is: without this option every request answers `404 not-exposed`.
    /// Comma-separated.
    #[arg(long, help_heading = "Routing", env = "BERTH_EXPOSE", value_name = "NAMES", value_delimiter = ',', value_parser = service_name)]
    pub expose: Vec<String>,

    /// Also route by `Host`: a host whose first label is an exposed service (`user.example.com`)
    /// reaches that service with the path unchanged.
    #[arg(long, help_heading = "Routing", env = "BERTH_ROUTE_BY_HOST")]
    pub route_by_host: bool,

    /// How outbound requests are routed and sent again.
    #[command(flatten)]
    pub routing: OutboundArgs,

    /// How long after an instance registers the gateway ramps its share up (slow start).
    #[arg(long, help_heading = "Lifecycle", env = "BERTH_WARMUP", value_name = "DURATION", default_value = "30s", value_parser = duration)]
    pub warmup: Duration,

    /// How long a drain keeps accepting (answering with `Connection: close`, `/ready` 503) before
    /// it may end: long enough for the load balancer in front to stop sending here.
    #[arg(long, help_heading = "Lifecycle", env = "BERTH_DRAIN_MIN", value_name = "DURATION", default_value = "5s", value_parser = duration)]
    pub drain_min: Duration,

    /// After drain-min, the drain ends once no request has arrived for this long and none is in
    /// flight.
    #[arg(long, help_heading = "Lifecycle", env = "BERTH_DRAIN_QUIET", value_name = "DURATION", default_value = "1s", value_parser = duration)]
    pub drain_quiet: Duration,

    /// The drain is forced to end (exit code 2) this long after it started.
    #[arg(long, help_heading = "Lifecycle", env = "BERTH_DRAIN_TIMEOUT", value_name = "DURATION", default_value = "30s", value_parser = duration)]
    pub drain_timeout: Duration,
}

/// The gateway's validated configuration.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub registry: RegistryUrl,
    pub routes: super::edge::Routes,
    pub outbound_settings: crate::outbound::Settings,
    pub lanes: crate::lane::Lanes,
    pub timing: Timing,
}

impl GatewayArgs {
    /// Checks what one flag alone cannot, and builds the [`GatewayConfig`].
    pub fn validate(self) -> Result<GatewayConfig, ConfigError> {
        let outbound_settings = self.routing.settings(true)?;
        let registry = self.serve.registry.ok_or_else(|| ConfigError::Missing {
            option: "--registry".into(),
            why: "name the registry the exposed services are registered in (flag or BERTH_REGISTRY)".into(),
        })?;
        if self.listen.port() != 0 && self.listen.port() == self.serve.admin.port() {
            return Err(ConfigError::invalid(
                "--admin",
                self.serve.admin,
                format!("must not share a port with --listen ({})", self.listen),
            ));
        }
        if self.drain_quiet.is_zero() {
            return Err(ConfigError::invalid("--drain-quiet", "0s", "must be longer than zero"));
        }
        if self.drain_timeout <= self.drain_min {
            return Err(ConfigError::invalid(
                "--drain-timeout",
                humantime::format_duration(self.drain_timeout),
                format!("must be longer than --drain-min ({})", humantime::format_duration(self.drain_min)),
            ));
        }
        let exposed: BTreeSet<String> = self.expose.into_iter().collect();
        Ok(GatewayConfig {
            listen: self.listen,
            admin: self.serve.admin,
            registry,
            routes: super::edge::Routes { exposed, by_host: self.route_by_host },
            outbound_settings,
            // The gateway has no symbol of its own: a lane starts at the edge only when the
            // request asks for one.
            lanes: crate::lane::Lanes::new(self.routing.lane_headers, None),
            timing: Timing {
                register_delay: Duration::ZERO,
                warmup: self.warmup,
                drain_min: self.drain_min,
                drain_quiet: self.drain_quiet,
                drain_timeout: self.drain_timeout,
            },
        })
    }
}
