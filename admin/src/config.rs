//! `berth admin`'s configuration: flags and `BERTH_*` variables, validated completely (the
//! token file read, the TLS files loaded) before the port is bound.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_core::registry::RegistryUrl;
use clap::Args;

use crate::auth::{TokenFileError, Tokens};
use crate::tls::TlsError;

/// Exit code for bad configuration (EX_USAGE), as for every berth program.
pub use berth_core::options::EXIT_CONFIG;

/// `berth admin`: the control-plane HTTP API.
#[derive(Debug, Clone, Args)]
#[command(
    about = "Run the admin API: set symbols and weights, promote, roll back (state lives in the registry)"
)]
pub struct AdminArgs {
    /// Where the API listens; port 0 picks a free port (logged as `berth admin listening`).
    #[arg(long, env = "BERTH_LISTEN", value_name = "ADDR", default_value = "0.0.0.0:15080")]
    pub listen: SocketAddr,

    /// The registry: `nacos://[user:password@]host:port[?namespace=NS&group=GROUP&grpc_port=P]`
    /// or `dir:///path` (default: a directory under the user's data directory), as for the
    /// sidecar.
    #[arg(long, env = "BERTH_REGISTRY", value_name = "URL")]
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

    /// How long the zombie probe waits for a connection, then for an HTTP answer.
    #[arg(long, env = "BERTH_PROBE_TIMEOUT", value_name = "DURATION", default_value = "1s", value_parser = duration)]
    pub probe_timeout: Duration,
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
        })
    }
}
