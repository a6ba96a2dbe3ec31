//! The `berth.io/` annotations a pod sets, read and validated into [`PodSettings`].
//!
//! Each value is checked with the sidecar's own parsers, so a pod the injector admits gets a
//! sidecar that starts; a bad value is an [`AnnotationError`] naming the annotation, the value
//! and what is allowed.

use std::collections::BTreeMap;
use std::time::Duration;

use berth_core::Symbol;
use berth_core::check::{AppHealth, Check};
use k8s_openapi::api::core::v1::Pod;

use crate::config::InjectConfig;

/// `enabled` or `disabled`: the pod's own say on injection.
pub const INJECT: &str = "berth.io/inject";
/// Set on every injected pod to the injector's version; an injected pod is never injected again.
pub const INJECTED: &str = "berth.io/injected";
/// The service name in the registry (default: label `app.kubernetes.io/name`, then `app`).
pub const SERVICE: &str = "berth.io/service";
/// The deployment's symbol (default `stable`).
pub const SYMBOL: &str = "berth.io/symbol";
/// The app's port, a number or a container port's name (default: the first container port).
pub const APP_PORT: &str = "berth.io/app-port";
/// `http:/path` or `tcp` (default `tcp`).
pub const APP_HEALTH: &str = "berth.io/app-health";
/// Comma-separated `tcp://host:port` and `http://host:port/path` checks.
pub const DEPENDENCIES: &str = "berth.io/dependencies";
/// How long the app must stay healthy before it is registered.
pub const REGISTER_DELAY: &str = "berth.io/register-delay";
/// The slow-start window after registration.
pub const WARMUP: &str = "berth.io/warmup";
/// How long a drain keeps accepting before it may end.
pub const DRAIN_MIN: &str = "berth.io/drain-min";
/// After drain-min, how long without a request ends the drain.
pub const DRAIN_QUIET: &str = "berth.io/drain-quiet";
/// When the drain is forced to end.
pub const DRAIN_TIMEOUT: &str = "berth.io/drain-timeout";
/// `true` or `false`: set `HTTP_PROXY`/`NO_PROXY` in the app's containers.
pub const HTTP_PROXY: &str = "berth.io/http-proxy";
/// Who calls the service: a preset of drain timings long enough for them (`berth`,
/// `spring-cloud`), under the pod's own drain annotations.
pub const CONSUMERS: &str = "berth.io/consumers";
/// The Nacos cluster the instance registers in (default `DEFAULT`): Spring Cloud Alibaba's
/// consumers prefer instances of their own cluster.
pub const CLUSTER: &str = "berth.io/cluster";

/// Every annotation a pod may set, for messages and docs.
pub const ALL: [&str; 14] = [
    INJECT,
    SERVICE,
    SYMBOL,
    APP_PORT,
    APP_HEALTH,
    DEPENDENCIES,
    REGISTER_DELAY,
    WARMUP,
    DRAIN_MIN,
    DRAIN_QUIET,
    DRAIN_TIMEOUT,
    HTTP_PROXY,
    CONSUMERS,
    CLUSTER,
];

/// A pod's annotation the sidecar could not work with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {key}: invalid value '{value}': {allowed}")]
pub struct AnnotationError {
    pub key: &'static str,
    pub value: String,
    pub allowed: String,
}

/// What the pod asked about injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptIn {
    Enabled,
    Disabled,
    Unset,
}

/// The sidecar settings of one pod: its annotations over the injector's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSettings {
    pub service: String,
    pub symbol: Symbol,
    pub app_port: u16,
    pub app_health: AppHealth,
    pub dependencies: Vec<Check>,
    pub register_delay: Duration,
    pub warmup: Duration,
    pub drain_min: Duration,
    pub drain_quiet: Duration,
    pub drain_timeout: Duration,
    pub http_proxy: bool,
    /// `berth.io/cluster`; `None`: the sidecar's default.
    pub cluster: Option<String>,
    /// From label `app.kubernetes.io/version`, when set.
    pub app_version: Option<String>,
}

fn annotations(pod: &Pod) -> Option<&BTreeMap<String, String>> {
    pod.metadata.annotations.as_ref()
}

fn labels(pod: &Pod) -> Option<&BTreeMap<String, String>> {
    pod.metadata.labels.as_ref()
}

/// The pod's `berth.io/inject` annotation.
pub fn opt_in(pod: &Pod) -> Result<OptIn, AnnotationError> {
    match annotations(pod).and_then(|a| a.get(INJECT)).map(String::as_str) {
        None => Ok(OptIn::Unset),
        Some("enabled") => Ok(OptIn::Enabled),
        Some("disabled") => Ok(OptIn::Disabled),
        Some(other) => Err(AnnotationError {
            key: INJECT,
            value: other.into(),
            allowed: "`enabled` or `disabled`".into(),
        }),
    }
}

/// The version in the pod's `berth.io/injected` annotation, if it was injected.
pub fn injected(pod: &Pod) -> Option<&str> {
    annotations(pod).and_then(|a| a.get(INJECTED)).map(String::as_str)
}

impl PodSettings {
    /// Reads the pod's annotations over `config`'s defaults and validates the result.
    pub fn read(pod: &Pod, config: &InjectConfig) -> Result<PodSettings, AnnotationError> {
        let get = |key: &'static str| annotations(pod).and_then(|a| a.get(key)).map(|v| (key, v.trim()));
        let bad = |key: &'static str, value: &str, allowed: String| AnnotationError {
            key,
            value: value.to_owned(),
            allowed,
        };
        let duration = |key: &'static str, default: Duration| match get(key) {
            None => Ok(default),
            Some((k, v)) => berth_core::options::duration(v).map_err(|e| bad(k, v, e)),
        };
        let service = match get(SERVICE) {
            Some((k, v)) => berth_core::options::service_name(v).map_err(|e| bad(k, v, e))?,
            None => default_service(pod)?,
        };
        let symbol = match get(SYMBOL) {
            Some((k, v)) => v.parse::<Symbol>().map_err(|e| bad(k, v, e.to_string()))?,
            None => Symbol::stable(),
        };
        let app_health = match get(APP_HEALTH) {
            Some((k, v)) => v.parse::<AppHealth>().map_err(|e| bad(k, v, e))?,
            None => AppHealth::Tcp,
        };
        let dependencies = match get(DEPENDENCIES) {
            Some((k, v)) => v
                .split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(|d| d.parse::<Check>().map_err(|e| bad(k, d, e)))
                .collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        let http_proxy = match get(HTTP_PROXY) {
            Some((_, "true")) => true,
            Some((_, "false")) => false,
            Some((k, v)) => return Err(bad(k, v, "`true` or `false`".into())),
            None => config.defaults.http_proxy,
        };
        // A consumers preset raises the defaults' drain to cover those consumers' caches;
        // the pod's own drain annotations still win.
        let mut d = config.defaults;
        if let Some((k, v)) = get(CONSUMERS) {
            let preset = v.parse::<berth_core::consumers::Consumers>().map_err(|e| bad(k, v, e))?;
            d.drain_min = d.drain_min.max(preset.drain_min());
            d.drain_timeout = d.drain_timeout.max(preset.drain_timeout());
        }
        let cluster = match get(CLUSTER) {
            Some((k, v)) if !berth_core::instance::is_cluster_name(v) => {
                return Err(bad(k, v, berth_core::instance::CLUSTER_RULE.into()));
            }
            c => c.map(|(_, v)| v.to_owned()),
        };
        let settings = PodSettings {
            service,
            symbol,
            app_port: app_port(pod, config)?,
            app_health,
            dependencies,
            register_delay: duration(REGISTER_DELAY, d.register_delay)?,
            warmup: duration(WARMUP, d.warmup)?,
            drain_min: duration(DRAIN_MIN, d.drain_min)?,
            drain_quiet: duration(DRAIN_QUIET, d.drain_quiet)?,
            drain_timeout: duration(DRAIN_TIMEOUT, d.drain_timeout)?,
            http_proxy,
            cluster,
            app_version: labels(pod).and_then(|l| l.get("app.kubernetes.io/version")).cloned(),
        };
        settings.check_timings()?;
        Ok(settings)
    }

    fn check_timings(&self) -> Result<(), AnnotationError> {
        let fmt = |d: Duration| humantime::format_duration(d).to_string();
        if self.drain_timeout <= self.drain_min {
            return Err(AnnotationError {
                key: DRAIN_TIMEOUT,
                value: fmt(self.drain_timeout),
                allowed: format!("must be longer than drain-min ({})", fmt(self.drain_min)),
            });
        }
        if self.drain_quiet.is_zero() {
            return Err(AnnotationError {
                key: DRAIN_QUIET,
                value: "0s".into(),
                allowed: "must be longer than zero".into(),
            });
        }
        Ok(())
    }

    /// The grace period the pod needs: drain-min + drain-timeout + the configured margin, in
    /// whole seconds rounded up.
    pub fn grace_period_seconds(&self, config: &InjectConfig) -> i64 {
        let total = self.drain_min + self.drain_timeout + config.grace_period_margin;
        i64::try_from(total.as_secs() + u64::from(total.subsec_nanos() > 0)).unwrap_or(i64::MAX)
    }
}

/// The service name from the pod's labels when it has no `berth.io/service`.
fn default_service(pod: &Pod) -> Result<String, AnnotationError> {
    let label = labels(pod).and_then(|l| l.get("app.kubernetes.io/name").or_else(|| l.get("app")));
    match label {
        Some(name) => berth_core::options::service_name(name).map_err(|e| AnnotationError {
            key: SERVICE,
            value: name.clone(),
            allowed: format!("the pod's app label is not a usable service name ({e}); set {SERVICE}"),
        }),
        None => Err(AnnotationError {
            key: SERVICE,
            value: String::new(),
            allowed: format!(
                "the pod has no {SERVICE} annotation and no app.kubernetes.io/name or app label to take it from"
            ),
        }),
    }
}

/// The app's port: `berth.io/app-port` (a number or a container port name), else the first
/// container port of the pod's containers.
fn app_port(pod: &Pod, config: &InjectConfig) -> Result<u16, AnnotationError> {
    let containers = pod.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
    let mut ports = containers.iter().flat_map(|c| c.ports.iter().flatten());
    let annotation = annotations(pod).and_then(|a| a.get(APP_PORT)).map(|v| v.trim());
    let (port, value) = match annotation {
        Some(v) => match v.parse::<u16>() {
            Ok(p) => (p, v.to_owned()),
            Err(_) => match ports.find(|p| p.name.as_deref() == Some(v)) {
                Some(p) => (u16::try_from(p.container_port).unwrap_or(0), v.to_owned()),
                None => {
                    return Err(AnnotationError {
                        key: APP_PORT,
                        value: v.to_owned(),
                        allowed: "a port number from 1 to 65535 or the name of a container port".into(),
                    });
                }
            },
        },
        None => match ports.next() {
            Some(p) => (u16::try_from(p.container_port).unwrap_or(0), p.container_port.to_string()),
            None => {
                return Err(AnnotationError {
                    key: APP_PORT,
                    value: String::new(),
                    allowed: format!("no container declares a port to take it from; set {APP_PORT}"),
                });
            }
        },
    };
    let sidecar = config.ports;
    if port == 0 || [sidecar.inbound, sidecar.outbound, sidecar.admin].contains(&port) {
        return Err(AnnotationError {
            key: APP_PORT,
            value,
            allowed: format!(
                "a port from 1 to 65535 other than the sidecar's ({}, {}, {})",
                sidecar.inbound, sidecar.outbound, sidecar.admin
            ),
        });
    }
    Ok(port)
}

#[cfg(test)]
mod tests;
