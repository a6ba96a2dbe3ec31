//! What injection adds, as Kubernetes objects: the sidecar container, the app's preStop hook and
//! its proxy environment.
//!
//! The probes follow the sidecar's admin port: startup and liveness on `/live` (the process
//! is up), readiness on `/ready` (the app is healthy and registered). The startup probe must
//! not be `/ready`: the kubelet starts the app only after a native sidecar's startup probe
//! passes, and `/ready` waits for the app.

use std::fmt::Write as _;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, HTTPHeader,
    LifecycleHandler, ObjectFieldSelector, Probe, SeccompProfile, SecretKeySelector, SecurityContext,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::annotations::PodSettings;
use crate::config::{InjectConfig, SecretKey};

/// The sidecar container's name; a pod with a container of this name is already injected.
pub const CONTAINER_NAME: &str = "berth-proxy";
/// The header the preStop hook carries the drain token in (the one the sidecar's `/drain`
/// reads).
pub use berth_core::header::DRAIN_TOKEN as DRAIN_TOKEN_HEADER;
/// The sidecar's writable scratch volume, mounted at `/tmp` (its root filesystem is read-only).
pub const SCRATCH_VOLUME: &str = "berth-tmp";
/// The preStop hook's path: it answers once the drain is over.
pub const DRAIN_PATH: &str = "/drain?wait=true";

/// A pod's drain token: random, 32 hex characters, never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct DrainToken(String);

impl std::fmt::Debug for DrainToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DrainToken(***)")
    }
}

impl DrainToken {
    /// A fresh token from the operating system's random source.
    pub fn random() -> Result<DrainToken, getrandom::Error> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes)?;
        let mut hex = String::with_capacity(32);
        for b in bytes {
            let _ = write!(hex, "{b:02x}");
        }
        Ok(DrainToken(hex))
    }

    /// A fixed token, for tests.
    pub fn fixed(token: &str) -> DrainToken {
        DrainToken(token.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), value_from: None }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: path.into(), api_version: None }),
            ..Default::default()
        }),
    }
}

fn secret_env(name: &str, secret: &SecretKey) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.name.clone(),
                key: secret.key.clone(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
    }
}

fn http_get(path: &str, port: u16) -> HTTPGetAction {
    HTTPGetAction { path: Some(path.into()), port: IntOrString::Int(port.into()), ..Default::default() }
}

fn probe(path: &str, port: u16, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(http_get(path, port)),
        period_seconds: Some(period),
        timeout_seconds: Some(1),
        failure_threshold: Some(failures),
        success_threshold: Some(1),
        ..Default::default()
    }
}

fn duration_env(name: &str, d: std::time::Duration) -> EnvVar {
    env(name, humantime::format_duration(d).to_string())
}

/// The sidecar container for a pod with `settings`.
pub fn container(settings: &PodSettings, config: &InjectConfig, token: &DrainToken) -> Container {
    let ports = config.ports;
    let mut vars = vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("POD_IP", "status.podIP"),
        env("BERTH_SERVICE", settings.service.clone()),
        env("BERTH_SYMBOL", settings.symbol.to_string()),
        env("BERTH_APP_PORT", settings.app_port.to_string()),
        env("BERTH_APP_HEALTH", settings.app_health.to_string()),
        env("BERTH_INBOUND", format!("0.0.0.0:{}", ports.inbound)),
        env("BERTH_ADMIN", format!("0.0.0.0:{}", ports.admin)),
        // Where the app's HTTP_PROXY points (see proxy_env), whatever `ports.outbound` is.
        env("BERTH_OUTBOUND", format!("127.0.0.1:{}", ports.outbound)),
        duration_env("BERTH_REGISTER_DELAY", settings.register_delay),
        duration_env("BERTH_WARMUP", settings.warmup),
        duration_env("BERTH_DRAIN_MIN", settings.drain_min),
        duration_env("BERTH_DRAIN_QUIET", settings.drain_quiet),
        duration_env("BERTH_DRAIN_TIMEOUT", settings.drain_timeout),
        env("BERTH_DRAIN_TOKEN", token.as_str()),
    ];
    if !settings.dependencies.is_empty() {
        let list: Vec<String> = settings.dependencies.iter().map(ToString::to_string).collect();
        vars.push(env("BERTH_DEPENDENCY", list.join(",")));
    }
    // From a Secret the registry URL may carry credentials, which a literal would write into
    // every pod spec.
    if let Some(secret) = &config.registry_secret {
        vars.push(secret_env("BERTH_REGISTRY", secret));
    } else if let Some(registry) = &config.registry {
        vars.push(env("BERTH_REGISTRY", registry.clone()));
    }
    // Only what differs from the sidecar's defaults; the pod's berth.io/cluster wins.
    vars.extend(config.registration.env(settings.cluster.as_deref()));
    if let Some(version) = &settings.app_version {
        vars.push(env("BERTH_APP_VERSION", version.clone()));
    }
    let port = |name: &str, number: u16| ContainerPort {
        name: Some(name.into()),
        container_port: number.into(),
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    Container {
        name: CONTAINER_NAME.into(),
        image: Some(config.image.clone()),
        image_pull_policy: Some(config.image_pull_policy.clone()),
        args: Some(vec!["proxy".into()]),
        env: Some(vars),
        ports: Some(vec![port("berth-inbound", ports.inbound), port("berth-admin", ports.admin)]),
        // Startup on /live, never /ready: see the module docs.
        startup_probe: Some(probe("/live", ports.admin, 1, 30)),
        readiness_probe: Some(probe("/ready", ports.admin, 2, 1)),
        liveness_probe: Some(probe("/live", ports.admin, 10, 3)),
        resources: Some(config.resources.clone()),
        security_context: Some(security_context(config.run_as_user)),
        volume_mounts: Some(vec![VolumeMount {
            name: SCRATCH_VOLUME.into(),
            mount_path: "/tmp".into(),
            ..Default::default()
        }]),
        restart_policy: config.native_sidecar.then(|| "Always".into()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    }
}

fn security_context(user: i64) -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(user),
        run_as_group: Some(user),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }),
        ..Default::default()
    }
}

/// The app containers' preStop hook: a GET of the sidecar's `/drain?wait=true` (kubelet sends
/// it to the pod IP, so it carries the token), which answers once the drain is over.
pub fn pre_stop(config: &InjectConfig, token: &DrainToken) -> LifecycleHandler {
    let mut get = http_get(DRAIN_PATH, config.ports.admin);
    get.http_headers =
        Some(vec![HTTPHeader { name: DRAIN_TOKEN_HEADER.into(), value: token.as_str().into() }]);
    LifecycleHandler { http_get: Some(get), ..Default::default() }
}

/// The environment that sends an app's HTTP calls through the sidecar's outbound port.
pub fn proxy_env(config: &InjectConfig) -> Vec<EnvVar> {
    let proxy = format!("http://127.0.0.1:{}", config.ports.outbound);
    vec![
        env("HTTP_PROXY", proxy.clone()),
        env("http_proxy", proxy),
        env("NO_PROXY", config.no_proxy.clone()),
        env("no_proxy", config.no_proxy.clone()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_hex_and_never_printed() {
        let (a, b) = (DrainToken::random().unwrap(), DrainToken::random().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 32);
        assert!(a.as_str().chars().all(|c| c.is_ascii_hexdigit()));
        assert!(!format!("{a:?}").contains(a.as_str()));
    }
}
