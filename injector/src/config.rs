//! What the injector is told: the command lines of `berth injector` and `berth inject`, and the
//! injection defaults file (`--config`, YAML) both read.
//!
//! The file holds what every injected pod gets unless its `berth.io/` annotations say
//! otherwise: the sidecar's image, resources, ports and registry, whether it is a native sidecar,
//! the drain timings, how it registers for clients without a sidecar ([`Registration`]), and
//! how strictly the grace period is enforced. Every key is optional.

mod registration;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_core::defaults;
use clap::Args;
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::{Deserialize, Deserializer};

/// Exit code for bad configuration (EX_USAGE), as for every berth program.
pub use berth_core::options::EXIT_CONFIG;
pub use registration::Registration;

/// Bad configuration: which option or key, which value, what is allowed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid value '{value}' for '{option}': {allowed}")]
    Invalid { option: String, value: String, allowed: String },
    #[error("config file {path}: {detail}")]
    File { path: PathBuf, detail: String },
}

/// `berth injector`: the mutating admission webhook.
#[derive(Debug, Clone, Args)]
#[command(about = "Run the mutating admission webhook that adds the berth sidecar to pods (HTTPS)")]
pub struct InjectorArgs {
    /// Where the webhook listens (HTTPS only).
    #[arg(long, env = "BERTH_LISTEN", value_name = "ADDR", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,

    /// PEM certificate chain the webhook serves; re-read when the file changes (as a mounted
    /// Secret does).
    #[arg(long, env = "BERTH_TLS_CERT", value_name = "FILE")]
    pub tls_cert: PathBuf,

    /// PEM private key of the certificate (PKCS#8, PKCS#1 or SEC1); re-read with it.
    #[arg(long, env = "BERTH_TLS_KEY", value_name = "FILE")]
    pub tls_key: PathBuf,

    /// How often the certificate and key files are checked for changes.
    #[arg(long, env = "BERTH_TLS_RELOAD_INTERVAL", value_name = "DURATION", default_value = "10s", value_parser = berth_core::options::duration)]
    pub tls_reload_interval: Duration,

    /// Injection defaults (YAML): sidecar image, resources, ports, registry, native sidecar
    /// on/off, drain timings. Without it, the built-in defaults apply.
    #[arg(long, env = "BERTH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The injector's own namespace, whose pods are never injected (the chart sets it from the
    /// downward API).
    #[arg(long, env = "BERTH_NAMESPACE", value_name = "NAMESPACE")]
    pub namespace: Option<String>,
}

/// `berth inject`: the webhook's mutation, applied offline to YAML manifests.
#[derive(Debug, Clone, Args)]
#[command(about = "Add the berth sidecar to the pods and pod templates of YAML manifests (offline)")]
pub struct InjectArgs {
    /// The manifests to read: a file, or `-` for standard input. Multi-document YAML; the
    /// result is written to standard output.
    #[arg(short = 'f', long = "filename", value_name = "FILE|-")]
    pub file: PathBuf,

    /// Injection defaults (YAML), the same file `berth injector --config` reads.
    #[arg(long, env = "BERTH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The sidecar's ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Ports {
    /// Where consumers' requests arrive; the port registered in Nacos.
    pub inbound: u16,
    /// The app's outbound proxy (`HTTP_PROXY=http://127.0.0.1:<outbound>`).
    pub outbound: u16,
    /// Probes, metrics, state and the drain.
    pub admin: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Ports {
            inbound: defaults::INBOUND_PORT,
            outbound: defaults::OUTBOUND_PORT,
            admin: defaults::ADMIN_PORT,
        }
    }
}

/// One key of a Secret.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretKey {
    /// The Secret's name (in the pod's namespace).
    pub name: String,
    /// The key whose value is used.
    pub key: String,
}

/// Timings a pod gets unless its annotations set them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Defaults {
    /// How long the app must stay healthy before it is registered.
    #[serde(deserialize_with = "human")]
    pub register_delay: Duration,
    /// How long after registration consumers ramp the instance's share up.
    #[serde(deserialize_with = "human")]
    pub warmup: Duration,
    /// How long a drain keeps accepting before it may end.
    #[serde(deserialize_with = "human")]
    pub drain_min: Duration,
    /// After drain-min, the drain ends once no request arrived for this long.
    #[serde(deserialize_with = "human")]
    pub drain_quiet: Duration,
    /// The drain is forced to end this long after it started.
    #[serde(deserialize_with = "human")]
    pub drain_timeout: Duration,
    /// Whether app containers get `HTTP_PROXY`/`NO_PROXY` pointing at the sidecar's outbound
    /// port.
    pub http_proxy: bool,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            register_delay: defaults::REGISTER_DELAY,
            warmup: defaults::WARMUP,
            drain_min: defaults::DRAIN_MIN,
            drain_quiet: defaults::DRAIN_QUIET,
            drain_timeout: defaults::DRAIN_TIMEOUT,
            http_proxy: false,
        }
    }
}

/// The injection defaults, from `--config` (YAML, camelCase keys) or built in.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct InjectConfig {
    /// The sidecar's image (default `ghcr.io/berth-io/berth:<berth's version>`).
    pub image: String,
    /// `Always`, `IfNotPresent` or `Never`.
    pub image_pull_policy: String,
    /// `BERTH_REGISTRY` for every sidecar: `nacos://host:port?namespace=NS&group=G`, written
    /// into every pod spec as it is — so without credentials. Unset (and no
    /// `registrySecret`), the sidecar falls back to a directory registry, which is of no use in
    /// a cluster.
    pub registry: Option<String>,
    /// `BERTH_REGISTRY` read from a Secret in the pod's own namespace
    /// (`valueFrom.secretKeyRef`): the way to pass `nacos://user:password@…`, which then lands
    /// in no pod spec. Instead of `registry`, not with it.
    pub registry_secret: Option<SecretKey>,
    /// Add the sidecar as a native sidecar (an init container with `restartPolicy: Always`,
    /// Kubernetes ≥ 1.29), which starts before and stops after the app. Off: the first
    /// container.
    pub native_sidecar: bool,
    /// The sidecar's resource requests and limits.
    pub resources: ResourceRequirements,
    /// The sidecar's ports.
    pub ports: Ports,
    /// Timings and outbound proxy, unless a pod's annotations say otherwise.
    pub defaults: Defaults,
    /// Nacos weight, symbol metadata and cluster, for Nacos clients without a sidecar.
    pub registration: Registration,
    /// `NO_PROXY` for apps that get `HTTP_PROXY`.
    pub no_proxy: String,
    /// Added to drain-min + drain-timeout for the pod's `terminationGracePeriodSeconds`: the
    /// app's own shutdown after its preStop hook returns.
    #[serde(deserialize_with = "human")]
    pub grace_period_margin: Duration,
    /// Deny a pod that pins a grace period shorter than its drain needs, instead of raising it
    /// with a warning.
    pub strict_grace_period: bool,
    /// Deny pods when the injector fails internally, instead of admitting them without the
    /// sidecar (with a warning).
    pub fail_closed: bool,
    /// Namespaces never injected, besides `kube-system` and the injector's own.
    pub exclude_namespaces: Vec<String>,
    /// The user and group the sidecar runs as (non-root).
    pub run_as_user: i64,
}

impl Default for InjectConfig {
    fn default() -> Self {
        let quantity = |s: &str| Quantity(s.to_owned());
        InjectConfig {
            image: format!("ghcr.io/berth-io/berth:{}", berth_core::VERSION),
            image_pull_policy: "IfNotPresent".into(),
            registry: None,
            registry_secret: None,
            native_sidecar: true,
            resources: ResourceRequirements {
                requests: Some([("cpu".into(), quantity("50m")), ("memory".into(), quantity("32Mi"))].into()),
                limits: Some([("memory".into(), quantity("128Mi"))].into()),
                ..Default::default()
            },
            ports: Ports::default(),
            defaults: Defaults::default(),
            registration: Registration::default(),
            no_proxy: "localhost,127.0.0.1,::1,.svc,.cluster.local".into(),
            grace_period_margin: defaults::GRACE_PERIOD_MARGIN,
            strict_grace_period: false,
            fail_closed: false,
            exclude_namespaces: Vec::new(),
            run_as_user: 65532,
        }
    }
}

/// A Kubernetes object name of the DNS-subdomain kind (RFC 1123): at most 253 characters of
/// dot-separated labels of lower-case letters, digits and `-`, each starting and ending with an
/// alphanumeric.
fn is_dns_subdomain(name: &str) -> bool {
    let label = |l: &str| {
        !l.is_empty()
            && l.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    name.len() <= 253 && name.split('.').all(label)
}

fn human<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    berth_core::options::duration(&s).map_err(serde::de::Error::custom)
}

impl InjectConfig {
    /// Reads and validates `path`, or returns the defaults when there is none.
    pub fn load(path: Option<&Path>) -> Result<InjectConfig, ConfigError> {
        let Some(path) = path else { return Ok(InjectConfig::default()) };
        let file_err = |detail: String| ConfigError::File { path: path.to_owned(), detail };
        let text = std::fs::read_to_string(path).map_err(|e| file_err(format!("cannot read it: {e}")))?;
        let config: InjectConfig = if text.trim().is_empty() {
            InjectConfig::default()
        } else {
            serde_norway::from_str(&text).map_err(|e| file_err(e.to_string()))?
        };
        config.validate().map_err(|e| match e {
            ConfigError::Invalid { option, value, allowed } => {
                file_err(format!("invalid value '{value}' for '{option}': {allowed}"))
            }
            other => other,
        })?;
        Ok(config)
    }

    /// Checks what one key alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |option: &str, value: &dyn ToString, allowed: &str| ConfigError::Invalid {
            option: option.into(),
            value: value.to_string(),
            allowed: allowed.into(),
        };
        if self.image.trim().is_empty() {
            return Err(invalid("image", &"", "an image reference such as ghcr.io/berth-io/berth:0.1.0"));
        }
        if !matches!(self.image_pull_policy.as_str(), "Always" | "IfNotPresent" | "Never") {
            return Err(invalid("imagePullPolicy", &self.image_pull_policy, "Always, IfNotPresent or Never"));
        }
        if let Some(registry) = &self.registry {
            let shown = match berth_core::registry::password_of(registry) {
                Some(password) => registry.replace(password, "***"),
                None => registry.clone(),
            };
            registry
                .parse::<berth_core::registry::RegistryUrl>()
                .map_err(|e| invalid("registry", &shown, &e.to_string()))?;
            if self.registry_secret.is_some() {
                return Err(invalid(
                    "registrySecret",
                    &"set",
                    "give the registry either as `registry` or as `registrySecret`, not both",
                ));
            }
        }
        if let Some(SecretKey { name, key }) = &self.registry_secret {
            if !is_dns_subdomain(name) {
                return Err(invalid(
                    "registrySecret.name",
                    name,
                    "a Secret's name (lower-case DNS subdomain)",
                ));
            }
            if key.is_empty()
                || key.len() > 253
                || !key.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
            {
                return Err(invalid(
                    "registrySecret.key",
                    key,
                    "a Secret key: letters, digits, `-`, `_` and `.`",
                ));
            }
        }
        let Ports { inbound, outbound, admin } = self.ports;
        if [inbound, outbound, admin].contains(&0)
            || inbound == outbound
            || inbound == admin
            || outbound == admin
        {
            let ports = format!("inbound {inbound}, outbound {outbound}, admin {admin}");
            return Err(invalid("ports", &ports, "three different ports from 1 to 65535"));
        }
        let d = &self.defaults;
        if d.drain_timeout <= d.drain_min {
            return Err(invalid(
                "defaults.drainTimeout",
                &humantime::format_duration(d.drain_timeout),
                &format!("must be longer than drainMin ({})", humantime::format_duration(d.drain_min)),
            ));
        }
        if d.drain_quiet.is_zero() {
            return Err(invalid("defaults.drainQuiet", &"0s", "must be longer than zero"));
        }
        if self.run_as_user <= 0 {
            return Err(invalid("runAsUser", &self.run_as_user, "a non-root user id (1 or more)"));
        }
        self.registration.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<InjectConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("injector.yaml");
        std::fs::write(&path, text).unwrap();
        InjectConfig::load(Some(&path))
    }

    #[test]
    fn defaults_are_valid_and_an_empty_file_means_defaults() {
        InjectConfig::default().validate().unwrap();
        assert_eq!(load("").unwrap(), InjectConfig::default());
        assert!(InjectConfig::default().image.ends_with(berth_core::VERSION));
    }

    #[test]
    fn reads_every_key() {
        let c = load(
            "image: example/berth:1\nimagePullPolicy: Always\nregistry: nacos://nacos:8848?namespace=prod\n\
             nativeSidecar: false\nresources: {requests: {cpu: 10m}}\nports: {inbound: 1, outbound: 2, admin: 3}\n\
             defaults: {registerDelay: 2s, warmup: 1m, drainMin: 10s, drainQuiet: 2s, drainTimeout: 1m, httpProxy: true}\n\
             noProxy: localhost\ngracePeriodMargin: 10s\nstrictGracePeriod: true\nfailClosed: true\n\
             excludeNamespaces: [infra]\nrunAsUser: 1000\n\
             registration: {nacosWeight: fixed, nacosWeightScale: 100, symbolMetadata: [lane], cluster: zone-a}\n",
        )
        .unwrap();
        assert_eq!(c.image, "example/berth:1");
        assert!(!c.native_sidecar && c.strict_grace_period && c.fail_closed && c.defaults.http_proxy);
        assert_eq!(c.ports, Ports { inbound: 1, outbound: 2, admin: 3 });
        assert_eq!(c.defaults.drain_timeout, Duration::from_secs(60));
        assert_eq!(c.exclude_namespaces, ["infra"]);
        assert_eq!(c.resources.requests.unwrap()["cpu"], Quantity("10m".into()));
        let r = c.registration;
        assert_eq!((r.nacos_weight.as_str(), r.nacos_weight_scale), ("fixed", 100.0));
        assert_eq!((r.symbol_metadata, r.cluster.as_str()), (vec!["lane".to_owned()], "zone-a"));
    }

    #[test]
    fn reads_a_registry_secret() {
        let c = load("registrySecret: {name: nacos-credentials, key: registry-url}\n").unwrap();
        let secret = SecretKey { name: "nacos-credentials".into(), key: "registry-url".into() };
        assert_eq!((c.registry, c.registry_secret), (None, Some(secret)));
    }

    #[test]
    fn errors_name_the_file_the_key_and_what_is_allowed() {
        for (text, expect) in [
            ("colour: red\n", "unknown field `colour`"),
            ("defaults: {drainMin: soon}\n", "duration"),
            ("imagePullPolicy: Sometimes\n", "Always, IfNotPresent or Never"),
            ("registry: http://nacos:8848\n", "'registry'"),
            ("ports: {admin: 15006}\n", "three different ports"),
            ("defaults: {drainMin: 40s}\n", "longer than drainMin"),
            ("runAsUser: 0\n", "non-root"),
            ("image: [\n", "injector.yaml"),
            (
                "registry: nacos://n:8848\nregistrySecret: {name: nacos, key: url}\n",
                "either as `registry` or as `registrySecret`",
            ),
            ("registrySecret: {name: Nacos_Creds, key: url}\n", "registrySecret.name"),
            ("registrySecret: {name: nacos, key: 'a/b'}\n", "registrySecret.key"),
            ("registrySecret: {name: nacos}\n", "missing field `key`"),
            ("registration: {nacosWeightScale: 0}\n", "registration.nacosWeightScale"),
            ("registration: {weight: 2}\n", "unknown field `weight`"),
        ] {
            let err = load(text).unwrap_err().to_string();
            assert!(err.contains(expect) && err.contains("injector.yaml"), "{text:?}: {err}");
        }
        let err = load("registry: nacos://berth:leak-pw@n:port\n").unwrap_err().to_string();
        assert!(err.contains("'registry'") && !err.contains("leak-pw"), "{err}");
        let err = InjectConfig::load(Some(Path::new("/nonexistent/x.yaml"))).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/x.yaml") && err.contains("cannot read"), "{err}");
    }
}
