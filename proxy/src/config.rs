//! The sidecar's configuration: flags, `BERTH_*` variables and an optional TOML file, validated
//! completely before any port is bound.
//!
//! Precedence: flags, then environment, then the file, then defaults. The file uses the long
//! flag names as keys (`drain-min = "10s"`, `dependency = ["tcp://db:5432"]`).

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use berth_core::Symbol;
use berth_core::defaults;
use berth_core::registry::RegistryUrl;
use clap::{Args, CommandFactory, FromArgMatches, Parser};

mod file;
mod no_echo;
mod outbound;
mod serve;

pub use berth_core::check::{AppHealth, Check};
/// Exit code for bad configuration (EX_USAGE), as for every berth program.
pub use berth_core::options::EXIT_CONFIG;
pub use berth_core::options::{duration, service_name};
pub use no_echo::{NoEcho, password_of};
pub use outbound::OutboundArgs;
pub use serve::{Advertise, NoAdvertise, ServeArgs};

/// `berth proxy`: the sidecar beside an app.
#[derive(Debug, Clone, Args)]
#[command(about = "Run the sidecar beside an app: readiness, late registration, lossless drain")]
pub struct ProxyArgs {
    /// TOML file with any of these options, keyed by their long names (`drain-min = "10s"`).
    /// Flags and BERTH_* variables override it.
    #[arg(long, env = "BERTH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The app's service name in the registry (required).
    #[arg(long, help_heading = "App", env = "BERTH_SERVICE", value_name = "NAME", value_parser = service_name)]
    pub service: Option<String>,

    /// The deployment this instance belongs to, written to the registry as `berth.symbol`.
    #[arg(long, help_heading = "App", env = "BERTH_SYMBOL", value_name = "SYMBOL", default_value = "stable")]
    pub symbol: Symbol,

    /// The port the app listens on at 127.0.0.1 (required).
    #[arg(long, help_heading = "App", env = "BERTH_APP_PORT", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub app_port: Option<u16>,

    /// What the app speaks: `http1`, or `h2c` (HTTP/2 without TLS, prior knowledge).
    #[arg(
        long,
        help_heading = "App",
        env = "BERTH_APP_PROTOCOL",
        value_name = "PROTOCOL",
        default_value = "http1"
    )]
    pub app_protocol: AppProtocol,

    /// How to tell the app is healthy: `http:/path` (a GET answering 2xx or 3xx) or `tcp` (the
    /// port accepts connections).
    #[arg(
        long,
        help_heading = "Health",
        env = "BERTH_APP_HEALTH",
        value_name = "CHECK",
        default_value = "tcp"
    )]
    pub app_health: AppHealth,

    /// The app's version, registered as `berth.version` (default: berth's own version).
    #[arg(long, help_heading = "App", env = "BERTH_APP_VERSION", value_name = "VERSION")]
    pub app_version: Option<String>,

    /// A dependency that must be reachable for the app to be ready: `tcp://host:port` or
    /// `http://host:port/path`. Repeatable; in the environment, comma-separated.
    #[arg(
        long,
        help_heading = "Health",
        env = "BERTH_DEPENDENCY",
        value_name = "URL",
        value_delimiter = ',',
        hide_env_values = true,
        value_parser = NoEcho::<Check>::new()
    )]
    pub dependency: Vec<Check>,

    /// How often the app and dependencies are checked.
    #[arg(long, help_heading = "Health", env = "BERTH_HEALTH_INTERVAL", value_name = "DURATION", default_value = "1s", value_parser = duration)]
    pub health_interval: Duration,

    /// How long one check may take before it counts as failed.
    #[arg(long, help_heading = "Health", env = "BERTH_HEALTH_TIMEOUT", value_name = "DURATION", default_value = "1s", value_parser = duration)]
    pub health_timeout: Duration,

    /// Consecutive passing checks that make an unhealthy target healthy.
    #[arg(long, help_heading = "Health", env = "BERTH_HEALTHY_THRESHOLD", value_name = "N", default_value = "1", value_parser = clap::value_parser!(u32).range(1..))]
    pub healthy_threshold: u32,

    /// Consecutive failing checks that make a healthy target unhealthy.
    #[arg(long, help_heading = "Health", env = "BERTH_UNHEALTHY_THRESHOLD", value_name = "N", default_value = "3", value_parser = clap::value_parser!(u32).range(1..))]
    pub unhealthy_threshold: u32,

    // The inbound request path: how the sidecar's connections to the app are bounded, and
    // how long the app may take.
    /// Connections the sidecar lends to requests for the app at a time (on HTTP/1.1 one per
    /// request in progress; with `--app-protocol h2c` the streams on its connection). Requests
    /// beyond it wait for a free one.
    #[arg(long, help_heading = "App", env = "BERTH_APP_MAX_CONNECTIONS", value_name = "N", default_value = "128", value_parser = clap::value_parser!(u32).range(1..))]
    pub app_max_connections: u32,

    /// New connections to the app opened at once: a burst of requests does not become a
    /// burst of connects against the app's accept backlog.
    #[arg(long, help_heading = "App", env = "BERTH_APP_MAX_CONNECTING", value_name = "N", default_value = "4", value_parser = clap::value_parser!(u32).range(1..))]
    pub app_max_connecting: u32,

    /// How long a request may wait for a connection to the app (a free one, a new one, or
    /// connects retried while the app's health check passes and its backlog is full) before
    /// it is answered `503 app-unavailable`.
    #[arg(long, help_heading = "App", env = "BERTH_APP_QUEUE_TIMEOUT", value_name = "DURATION", default_value = "5s", value_parser = duration)]
    pub app_queue_timeout: Duration,

    /// How long the app may take to answer a request (its response headers) before the
    /// sidecar answers `504 app-timeout`; `0s` for no limit.
    #[arg(long, help_heading = "App", env = "BERTH_APP_REQUEST_TIMEOUT", value_name = "DURATION", default_value = "30s", value_parser = duration)]
    pub app_request_timeout: Duration,

    /// Where the sidecar accepts the app's inbound traffic (the address registered in Nacos).
    #[arg(
        long,
        help_heading = "Listeners and registry",
        env = "BERTH_INBOUND",
        value_name = "ADDR",
        default_value_t = SocketAddr::from((Ipv4Addr::UNSPECIFIED, defaults::INBOUND_PORT))
    )]
    pub inbound: SocketAddr,

    /// `--admin`, `--advertise` and `--registry`, as the gateway shares them.
    #[command(flatten)]
    pub serve: ServeArgs<Advertise>,

    /// How long the app must stay healthy before it is registered.
    #[arg(long, help_heading = "Lifecycle", env = "BERTH_REGISTER_DELAY", value_name = "DURATION", default_value = defaults::REGISTER_DELAY_TEXT, value_parser = duration)]
    pub register_delay: Duration,

    /// How long after registration consumers ramp this instance's share up (slow start).
    #[arg(long, help_heading = "Lifecycle", env = "BERTH_WARMUP", value_name = "DURATION", default_value = defaults::WARMUP_TEXT, value_parser = duration)]
    pub warmup: Duration,

    /// How long a drain keeps accepting (and answering with the read-only signal) before it may
    /// end; at least twice the registry's push delay.
    #[arg(long, help_heading = "Lifecycle", env = "BERTH_DRAIN_MIN", value_name = "DURATION", default_value = defaults::DRAIN_MIN_TEXT, value_parser = duration)]
    pub drain_min: Duration,

    /// After drain-min, the drain ends once no request has arrived for this long and none is in
    /// flight.
    #[arg(long, help_heading = "Lifecycle", env = "BERTH_DRAIN_QUIET", value_name = "DURATION", default_value = defaults::DRAIN_QUIET_TEXT, value_parser = duration)]
    pub drain_quiet: Duration,

    /// The drain is forced to end (exit code 2) this long after it started.
    #[arg(long, help_heading = "Lifecycle", env = "BERTH_DRAIN_TIMEOUT", value_name = "DURATION", default_value = defaults::DRAIN_TIMEOUT_TEXT, value_parser = duration)]
    pub drain_timeout: Duration,

    /// Where the app's outbound calls arrive (as an HTTP proxy, by Host, or by path prefix).
    #[arg(
        long,
        help_heading = "Listeners and registry",
        env = "BERTH_OUTBOUND",
        value_name = "ADDR",
        default_value_t = SocketAddr::from((Ipv4Addr::LOCALHOST, defaults::OUTBOUND_PORT))
    )]
    pub outbound: SocketAddr,

    /// Services to follow from the start instead of on first use. Repeatable; comma-separated.
    #[arg(long, help_heading = "Outbound", env = "BERTH_SERVICES", value_name = "NAME", value_delimiter = ',', value_parser = service_name)]
    pub services: Vec<String>,

    /// How outbound requests are routed and sent again.
    #[command(flatten)]
    pub routing: OutboundArgs,

    /// Do not make this instance's own symbol the lane of outbound requests that carry none
    /// (by default a `canary` instance's calls prefer `canary` of every service they call,
    /// unless the symbol is `stable` or the called service's default).
    #[arg(long, help_heading = "Outbound", env = "BERTH_NO_OWN_LANE")]
    pub no_own_lane: bool,

    /// Threads that serve traffic. One (the default) runs everything on a single thread, with no
    /// cross-thread wake-ups: enough for most sidecars, which get a fraction of a core; raise it
    /// for instances that need more than a core of proxying.
    #[arg(long, help_heading = "Listeners and registry", env = "BERTH_WORKERS", value_name = "N", default_value = "1", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: u16,

    /// For comparisons only: turn berth's lifecycle off and behave like a plain registry
    /// client — register at once whether or not the app is up, exit at once on SIGTERM (no
    /// drain, no read-only signal), and send each outbound request once (no failover).
    #[arg(long, help_heading = "Lifecycle", env = "BERTH_NO_LIFECYCLE")]
    pub no_lifecycle: bool,

    /// Token a non-loopback `POST /drain` must carry in `x-berth-drain-token` (the injector
    /// sets one per pod). Without it, only loopback may start a drain.
    #[arg(
        long,
        help_heading = "Lifecycle",
        env = "BERTH_DRAIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub drain_token: Option<String>,

    // Registration for consumers without a sidecar (docs/mixed-fleets.md).
    /// How the instance's Nacos weight is kept: `policy` — its share under the service's
    /// traffic policy times its warm-up, so Nacos clients without a sidecar split traffic as
    /// berth's consumers do — or `fixed` (1, Nacos's default; berth's consumers then honour
    /// the Nacos weight as set in the registry).
    #[arg(
        long,
        help_heading = "Registration",
        env = "BERTH_NACOS_WEIGHT",
        value_name = "MODE",
        default_value = defaults::NACOS_WEIGHT
    )]
    pub nacos_weight: NacosWeight,

    /// The Nacos weight of an instance with an average share of its service under
    /// `--nacos-weight policy` (1 matches instances registered without berth; raise it, e.g.
    /// to 100, for clients that truncate weights to integers, such as nacos-sdk-go).
    #[arg(
        long,
        help_heading = "Registration",
        env = "BERTH_NACOS_WEIGHT_SCALE",
        value_name = "WEIGHT",
        default_value = defaults::NACOS_WEIGHT_SCALE_TEXT
    )]
    pub nacos_weight_scale: f64,

    /// Metadata keys the symbol is also registered under, for clients without a sidecar:
    /// `version` (Spring Cloud Alibaba's label routing), `hint` (Spring Cloud LoadBalancer's
    /// `X-SC-LB-Hint`). Comma-separated; empty for none.
    #[arg(long, help_heading = "Registration", env = "BERTH_SYMBOL_METADATA", value_name = "KEYS", value_delimiter = ',', default_value = defaults::SYMBOL_METADATA_TEXT, value_parser = alias_key)]
    pub symbol_metadata: Vec<String>,

    /// The Nacos cluster the instance registers in (Spring Cloud Alibaba's consumers prefer
    /// their own `spring.cloud.nacos.discovery.cluster-name`).
    #[arg(long, help_heading = "Registration", env = "BERTH_CLUSTER", value_name = "NAME", default_value = berth_core::instance::DEFAULT_CLUSTER, value_parser = cluster_name)]
    pub cluster: String,
}

/// How the sidecar keeps its instance's Nacos weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum NacosWeight {
    /// The instance's share under the traffic policy, times its warm-up.
    Policy,
    /// Always 1.
    Fixed,
}

/// Checks a `--symbol-metadata` key (empty: none).
fn alias_key(s: &str) -> Result<String, String> {
    let key = s.trim();
    if key.is_empty() || berth_core::metadata::is_alias_key(key) {
        Ok(key.to_owned())
    } else {
        Err(berth_core::metadata::ALIAS_KEY_RULE.into())
    }
}

/// Checks a Nacos cluster name: letters, digits and `-`, as Nacos requires.
fn cluster_name(s: &str) -> Result<String, String> {
    if berth_core::instance::is_cluster_name(s) {
        Ok(s.to_owned())
    } else {
        Err(berth_core::instance::CLUSTER_RULE.into())
    }
}

/// What the app's port speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AppProtocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 with prior knowledge, no TLS.
    H2c,
}

/// The drain and registration timings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub register_delay: Duration,
    pub warmup: Duration,
    pub drain_min: Duration,
    pub drain_quiet: Duration,
    pub drain_timeout: Duration,
}

/// How the app and dependencies are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthTiming {
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

/// The sidecar's validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub service: String,
    pub symbol: Symbol,
    /// The app, always on loopback.
    pub app: SocketAddr,
    pub app_protocol: AppProtocol,
    pub app_health: AppHealth,
    pub app_version: String,
    /// The app pool's bounds and the inbound request timeout.
    pub app_pool: crate::inbound::AppSettings,
    pub dependencies: Vec<Check>,
    pub health: HealthTiming,
    pub inbound: SocketAddr,
    pub admin: SocketAddr,
    pub advertise: SocketAddr,
    pub registry: RegistryUrl,
    pub timing: Timing,
    pub drain_token: Option<DrainToken>,
    pub outbound: SocketAddr,
    pub services: Vec<String>,
    pub outbound_settings: crate::outbound::Settings,
    /// How lanes are found, and this instance's own.
    pub lanes: crate::lane::Lanes,
    /// `false` with `--no-lifecycle`.
    pub lifecycle: bool,
    /// Threads serving traffic.
    pub workers: u16,
    /// How the Nacos weight is kept (`fixed` with `--no-lifecycle`).
    pub nacos_weight: crate::weight::Settings,
    /// Metadata keys that also carry the symbol.
    pub symbol_metadata: Vec<String>,
    /// The Nacos cluster name.
    pub cluster: String,
}

/// The drain token; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct DrainToken(pub String);

impl std::fmt::Debug for DrainToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DrainToken(***)")
    }
}

/// Bad configuration: which option, which value, what is allowed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid value '{value}' for '{option}': {allowed}")]
    Invalid { option: String, value: String, allowed: String },
    #[error("missing '{option}': {why}")]
    Missing { option: String, why: String },
    #[error("config file {path}: {detail}")]
    File { path: PathBuf, detail: String },
    #[error("{0}")]
    Clap(#[from] clap::Error),
}

impl ConfigError {
    pub(crate) fn invalid(option: &str, value: impl ToString, allowed: impl Into<String>) -> Self {
        ConfigError::Invalid { option: option.into(), value: value.to_string(), allowed: allowed.into() }
    }
}

/// A command whose only subcommand is `proxy`, used to parse the file-merged arguments.
#[derive(Parser, Debug)]
#[command(name = "berth proxy", args_override_self = true)]
struct Standalone {
    #[command(flatten)]
    args: ProxyArgs,
}

impl ProxyArgs {
    /// Applies the `--config` file, if any, underneath the flags and environment that
    /// `raw_args` (the arguments after `proxy`) and the process environment give.
    pub fn with_config_file(self, raw_args: &[OsString]) -> Result<ProxyArgs, ConfigError> {
        let Some(path) = self.config.clone() else { return Ok(self) };
        let cmd = Standalone::command();
        let from_file = file::args_from_file(&cmd, &path, raw_args)?;
        let argv =
            std::iter::once(OsString::from("berth proxy")).chain(from_file).chain(raw_args.iter().cloned());
        let matches = cmd.try_get_matches_from(argv)?;
        Ok(Standalone::from_arg_matches(&matches)?.args)
    }

    /// Checks everything that one flag alone cannot, and builds the [`Config`].
    pub fn validate(self) -> Result<Config, ConfigError> {
        let outbound_settings = self.routing.settings(!self.no_lifecycle)?;
        let service = self.service.ok_or_else(|| ConfigError::Missing {
            option: "--service".into(),
            why: "name the app's service (flag, BERTH_SERVICE, or `service` in the config file)".into(),
        })?;
        let app_port = self.app_port.ok_or_else(|| ConfigError::Missing {
            option: "--app-port".into(),
            why: "give the port the app listens on at 127.0.0.1".into(),
        })?;
        let app = SocketAddr::from((Ipv4Addr::LOCALHOST, app_port));
        if self.inbound.port() != 0
            && self.inbound.port() == self.serve.admin.port()
            && overlaps(self.inbound.ip(), self.serve.admin.ip())
        {
            return Err(ConfigError::invalid("--admin", self.serve.admin, "must not use the inbound port"));
        }
        for (option, addr) in
            [("--inbound", self.inbound), ("--admin", self.serve.admin), ("--outbound", self.outbound)]
        {
            if addr.port() == app_port && overlaps(addr.ip(), app.ip()) {
                return Err(ConfigError::invalid(
                    option,
                    addr,
                    format!("must not use the app's port {app_port}"),
                ));
            }
        }
        for (a, b) in [(self.outbound, self.inbound), (self.outbound, self.serve.admin)] {
            if a.port() != 0 && a.port() == b.port() && overlaps(a.ip(), b.ip()) {
                return Err(ConfigError::invalid("--outbound", a, "must not use the inbound or admin port"));
            }
        }
        let advertise = advertise(self.serve.advertise.addr, self.inbound)?;
        let timing = Timing {
            register_delay: self.register_delay,
            warmup: self.warmup,
            drain_min: self.drain_min,
            drain_quiet: self.drain_quiet,
            drain_timeout: self.drain_timeout,
        };
        if timing.drain_timeout <= timing.drain_min {
            return Err(ConfigError::invalid(
                "--drain-timeout",
                humantime::format_duration(timing.drain_timeout),
                format!("must be longer than --drain-min ({})", humantime::format_duration(timing.drain_min)),
            ));
        }
        if timing.drain_quiet.is_zero() {
            return Err(ConfigError::invalid("--drain-quiet", "0s", "must be longer than zero"));
        }
        if self.app_queue_timeout.is_zero() {
            return Err(ConfigError::invalid("--app-queue-timeout", "0s", "must be longer than zero"));
        }
        if self.health_interval.is_zero() || self.health_timeout.is_zero() {
            let (option, v) = if self.health_interval.is_zero() {
                ("--health-interval", self.health_interval)
            } else {
                ("--health-timeout", self.health_timeout)
            };
            return Err(ConfigError::invalid(
                option,
                humantime::format_duration(v),
                "must be longer than zero",
            ));
        }
        if !(self.nacos_weight_scale > 0.0 && self.nacos_weight_scale <= crate::weight::MAX_WEIGHT) {
            return Err(ConfigError::invalid(
                "--nacos-weight-scale",
                self.nacos_weight_scale,
                format!("must be above 0 and at most {} (Nacos's largest weight)", crate::weight::MAX_WEIGHT),
            ));
        }
        if self.drain_token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err(ConfigError::invalid("--drain-token", "***", "must be at least 16 characters"));
        }
        let lanes = crate::lane::Lanes::new(
            self.routing.lane_headers,
            (!self.no_own_lane).then_some(self.symbol.clone()),
        );
        Ok(Config {
            service,
            symbol: self.symbol,
            app,
            app_protocol: self.app_protocol,
            app_health: self.app_health,
            app_version: self.app_version.unwrap_or_else(|| berth_core::VERSION.to_owned()),
            app_pool: crate::inbound::AppSettings {
                max_connections: self.app_max_connections,
                max_connecting: self.app_max_connecting,
                queue_timeout: self.app_queue_timeout,
                request_timeout: (!self.app_request_timeout.is_zero()).then_some(self.app_request_timeout),
            },
            dependencies: self.dependency,
            health: HealthTiming {
                interval: self.health_interval,
                timeout: self.health_timeout,
                healthy_threshold: self.healthy_threshold,
                unhealthy_threshold: self.unhealthy_threshold,
            },
            inbound: self.inbound,
            admin: self.serve.admin,
            advertise,
            registry: self.serve.registry.unwrap_or_else(RegistryUrl::default_dir),
            timing,
            drain_token: self.drain_token.map(DrainToken),
            outbound: self.outbound,
            services: self.services,
            lanes,
            outbound_settings,
            lifecycle: !self.no_lifecycle,
            workers: self.workers,
            nacos_weight: crate::weight::Settings {
                // --no-lifecycle is a plain registry client: weight 1, whatever the policy.
                follow_policy: self.nacos_weight == NacosWeight::Policy && !self.no_lifecycle,
                scale: self.nacos_weight_scale,
            },
            symbol_metadata: dedup(self.symbol_metadata.into_iter().filter(|k| !k.is_empty())),
            cluster: self.cluster,
        })
    }
}

/// The keys in order, each once.
fn dedup(keys: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for k in keys {
        if !out.contains(&k) {
            out.push(k);
        }
    }
    out
}

/// Whether two listen addresses can collide on one port.
fn overlaps(a: IpAddr, b: IpAddr) -> bool {
    a == b || a.is_unspecified() || b.is_unspecified()
}

fn advertise(given: Option<SocketAddr>, inbound: SocketAddr) -> Result<SocketAddr, ConfigError> {
    if let Some(addr) = given {
        if addr.ip().is_unspecified() || addr.port() == 0 {
            return Err(ConfigError::invalid(
                "--advertise",
                addr,
                "must be a concrete ip:port others can reach",
            ));
        }
        return Ok(addr);
    }
    let ip = match std::env::var("POD_IP") {
        Ok(v) if !v.is_empty() => v
            .parse()
            .map_err(|_| ConfigError::invalid("POD_IP", &v, "must be an IP address (or set --advertise)"))?,
        _ if inbound.ip().is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        _ => inbound.ip(),
    };
    Ok(SocketAddr::new(ip, inbound.port()))
}

#[cfg(test)]
mod tests;
