//! `berth admin`'s configuration: flags and `BERTH_*` variables, validated completely (the
//! token file read, the TLS files loaded) before the port is bound.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_core::registry::RegistryUrl;
use clap::Args;

use crate::auth::{MIN_TOKEN_LEN, TokenFileError, Tokens};
use crate::ctl::Secret;
use crate::events::webhook::Target;
use crate::tls::TlsError;

/// Exit code for bad configuration (EX_USAGE), as for every berth program.
pub use berth_core::options::EXIT_CONFIG;

/// `berth admin`: the control-plane HTTP API.
#[derive(Debug, Clone, Args)]
#[command(
    about = "Run the admin API and its page: set symbols and weights, promote, roll back, retire; see what took effect (state lives in the registry)"
)]
pub struct AdminArgs {
    /// Where the API listens; port 0 picks a free port (logged as `berth admin listening`).
    #[arg(long, env = "BERTH_LISTEN", value_name = "ADDR", default_value = "0.0.0.0:15080")]
    pub listen: SocketAddr,

    /// The registry: `nacos://[user:password@]host:port[?namespace=NS&group=GROUP&grpc_port=P]`
    /// or `dir:///path` (default: a directory under the user's data directory), as for the
    /// sidecar.
    #[arg(long, env = "BERTH_REGISTRY", value_name = "URL", hide_env_values = true, value_parser = RegistryParser)]
    pub registry: Option<RegistryUrl>,

    /// The API tokens: one per line, `NAME ROLE TOKEN` (ROLE `write` or `read`); `#` starts a
    /// comment. Required: without a token nobody could change anything.
    #[arg(long, env = "BERTH_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// PEM certificate chain for TLS; with `--tls-key`, the API speaks HTTPS.
    #[arg(long, env = "BERTH_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for `--tls-cert`.
    #[arg(long, env = "BERTH_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// How long after registration an instance counts as `warming`, for instances that do not
    /// say (berth sidecars register their `--warmup` as `berth.warmup`).
    #[arg(long, env = "BERTH_WARMUP", value_name = "DURATION", default_value = berth_core::defaults::WARMUP_TEXT, value_parser = duration)]
    pub warmup: Duration,

    /// How long the zombie probe, and each request to a sidecar's admin port, waits for a
    /// connection, then for an answer.
    #[arg(long, env = "BERTH_PROBE_TIMEOUT", value_name = "DURATION", default_value = "1s", value_parser = duration)]
    pub probe_timeout: Duration,

    /// How often admin asks every registered sidecar (its `berth.admin_port`) which policy
    /// versions it applied and what traffic it sent: what `--wait`, the page, the traffic
    /// numbers and the events are based on.
    #[arg(long, env = "BERTH_SCAN_INTERVAL", value_name = "DURATION", default_value = "2s", value_parser = duration)]
    pub scan_interval: Duration,

    /// Read the traffic numbers from this Prometheus (its base URL, e.g.
    /// `http://prometheus:9090/`), which must scrape the sidecars, instead of reading every
    /// sidecar's `/metrics`; for large fleets. Propagation still asks the sidecars.
    #[arg(long, env = "BERTH_PROMETHEUS", value_name = "URL", hide_env_values = true)]
    pub prometheus: Option<String>,

    /// POST every event, signed, to this URL (repeatable; comma-separated in the environment).
    /// Needs `--webhook-secret`.
    #[arg(
        long = "webhook",
        env = "BERTH_WEBHOOK",
        value_name = "URL",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub webhooks: Vec<String>,

    /// The key webhook bodies are signed with (HMAC-SHA256, at least 16 characters). Prefer
    /// the environment variable to the flag, which other users can see in the process list.
    #[arg(long, env = "BERTH_WEBHOOK_SECRET", value_name = "SECRET", hide_env_values = true)]
    pub webhook_secret: Option<Secret>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub registry: RegistryUrl,
    pub tokens: Arc<Tokens>,
    /// The TLS server configuration, when TLS is on.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub warmup: Duration,
    pub probe_timeout: Duration,
    pub scan_interval: Duration,
    /// The Prometheus to read traffic from, if any.
    pub prometheus: Option<reqwest::Url>,
    /// Where events are POSTed, and the key they are signed with.
    pub webhooks: Vec<Target>,
    pub webhook_secret: Option<Secret>,
}

/// Bad configuration: which option or file, which value, what is allowed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid value '{value}' for '{option}': {allowed}")]
    Invalid { option: &'static str, value: String, allowed: String },
    #[error("missing '--token-file': {0}")]
    NoTokenFile(&'static str),
    #[error(transparent)]
    Tokens(#[from] TokenFileError),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Parses `--registry` without echoing its password: clap's own errors print the raw value.
#[derive(Clone, Debug)]
struct RegistryParser;

impl clap::builder::TypedValueParser for RegistryParser {
    type Value = RegistryUrl;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<RegistryUrl, clap::Error> {
        let raw = value.to_string_lossy();
        raw.parse().map_err(|e: berth_core::registry::InvalidRegistryUrl| {
            let name = arg.map_or_else(|| "--registry".to_owned(), ToString::to_string);
            let message = berth_core::registry::without_password(
                &raw,
                &format!("invalid value '{raw}' for '{name}': {e}\n"),
            );
            clap::Error::raw(clap::error::ErrorKind::ValueValidation, message).with_cmd(cmd)
        })
    }
}

/// Parses a human duration: `500ms`, `5s`, `1m30s`.
pub use berth_core::options::duration;

impl AdminArgs {
    /// Checks everything and loads the token file and TLS files.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let path = self
            .token_file
            .ok_or(ConfigError::NoTokenFile("give the file of API tokens (`NAME ROLE TOKEN` per line)"))?;
        let tokens = Tokens::load(&path)?;
        if self.probe_timeout.is_zero() {
            return Err(ConfigError::Invalid {
                option: "--probe-timeout",
                value: "0s".into(),
                allowed: "must be longer than zero".into(),
            });
        }
        if self.scan_interval < Duration::from_millis(100) {
            return Err(ConfigError::Invalid {
                option: "--scan-interval",
                value: humantime::format_duration(self.scan_interval).to_string(),
                allowed: "must be at least 100ms".into(),
            });
        }
        let webhooks = webhooks(&self.webhooks, self.webhook_secret.as_ref())?;
        let prometheus = self.prometheus.as_deref().map(prometheus).transpose()?;
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::server_config(&cert, &key)?),
            _ => None,
        };
        Ok(Config {
            listen: self.listen,
            registry: self.registry.unwrap_or_else(RegistryUrl::default_dir),
            tokens: Arc::new(tokens),
            tls,
            warmup: self.warmup,
            probe_timeout: self.probe_timeout,
            scan_interval: self.scan_interval,
            prometheus,
            webhooks,
            webhook_secret: self.webhook_secret,
        })
    }
}

/// The Prometheus base URL, ending in `/` so that API paths join under it.
fn prometheus(raw: &str) -> Result<reqwest::Url, ConfigError> {
    let invalid =
        |allowed: String| ConfigError::Invalid { option: "--prometheus", value: raw.into(), allowed };
    let mut url = reqwest::Url::parse(raw.trim()).map_err(|e| invalid(format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(invalid("expected an http:// or https:// URL such as http://prometheus:9090/".into()));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// Checks the webhook URLs and their secret. The URLs are not repeated in errors: they often
/// hold a secret of their own.
fn webhooks(urls: &[String], secret: Option<&Secret>) -> Result<Vec<Target>, ConfigError> {
    let invalid = |value: &str, allowed: &str| ConfigError::Invalid {
        option: "--webhook",
        value: value.into(),
        allowed: allowed.into(),
    };
    let mut targets = Vec::new();
    for (i, raw) in urls.iter().enumerate() {
        let n = format!("entry {}", i + 1);
        let url = reqwest::Url::parse(raw.trim()).map_err(|e| invalid(&n, &format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(invalid(&n, "expected an http:// or https:// URL with a host"));
        }
        targets.push(Target(url));
    }
    match secret {
        None if !targets.is_empty() => Err(ConfigError::Invalid {
            option: "--webhook-secret",
            value: "none".into(),
            allowed: "webhooks are signed: give the key (BERTH_WEBHOOK_SECRET)".into(),
        }),
        Some(s) if s.0.len() < MIN_TOKEN_LEN => Err(ConfigError::Invalid {
            option: "--webhook-secret",
            value: "***".into(),
            allowed: format!("must be at least {MIN_TOKEN_LEN} characters"),
        }),
        _ => Ok(targets),
    }
}
