//! The mutation itself: whether a pod is injected, and the JSON Patch that injects it.
//!
//! The webhook and `berth inject` both call [`mutate`] with the pod as JSON; the patch edits
//! only what injection adds, so fields this crate's Kubernetes types do not know survive.
//! Operations are ordered so that indices stay right: app containers are edited before the
//! sidecar is inserted in front of them.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation};
use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};

use crate::annotations::{self, OptIn, PodSettings};
use crate::config::InjectConfig;
use crate::sidecar::{self, DrainToken};

/// The grace period the API server gives a pod that sets none; the webhook cannot tell it from
/// a pinned 30, so it is raised without a warning.
pub const DEFAULT_GRACE_PERIOD: i64 = 30;

/// How the pod reached the injector, which decides what opts it in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Its namespace is labelled `berth.io/inject=enabled` (or `berth inject` was asked to):
    /// injected unless annotated `berth.io/inject: disabled`.
    Namespace,
    /// Any other namespace: injected only when annotated `berth.io/inject: enabled`.
    Pod,
}

/// Why a pod is left as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    NotOptedIn,
    OptedOut,
    ExcludedNamespace,
    AlreadyInjected,
    HostNetwork,
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Skip::NotOptedIn => "not opted in",
            Skip::OptedOut => "annotated berth.io/inject: disabled",
            Skip::ExcludedNamespace => "its namespace is never injected",
            Skip::AlreadyInjected => "already injected",
            Skip::HostNetwork => "it uses hostNetwork",
        })
    }
}

/// What [`mutate`] decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Injected: apply `patch`.
    Injected { patch: Vec<PatchOperation>, warnings: Vec<String> },
    /// Left unchanged.
    Skipped { why: Skip, warnings: Vec<String> },
    /// The pod asks for something berth cannot do (a bad annotation, a pinned grace period too
    /// short in strict mode); the message says what to change.
    Denied { message: String },
    /// The injector failed; the caller admits the pod unchanged or denies it (fail-closed).
    Failed { error: String },
}

impl Outcome {
    /// The `result` label of `berth_injector_injections_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Injected { .. } => "injected",
            Outcome::Skipped { why: Skip::NotOptedIn, .. } => "not_opted_in",
            Outcome::Skipped { why: Skip::OptedOut, .. } => "opted_out",
            Outcome::Skipped { why: Skip::ExcludedNamespace, .. } => "excluded_namespace",
            Outcome::Skipped { why: Skip::AlreadyInjected, .. } => "already_injected",
            Outcome::Skipped { why: Skip::HostNetwork, .. } => "host_network",
            Outcome::Denied { .. } => "denied",
            Outcome::Failed { .. } => "error",
        }
    }
}

/// What [`mutate`] needs besides the pod.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub config: &'a InjectConfig,
    /// The injector's own namespace, never injected.
    pub own_namespace: Option<&'a str>,
}

/// Decides on `pod` (JSON, as the API server sent it) in `namespace` and builds the patch.
pub fn mutate(
    ctx: Context<'_>,
    pod: &Value,
    namespace: Option<&str>,
    scope: Scope,
    token: &DrainToken,
) -> Outcome {
    let typed: Pod = match serde_json::from_value(pod.clone()) {
        Ok(p) => p,
        Err(e) => return Outcome::Failed { error: format!("cannot read the pod: {e}") },
    };
    let skip = |why| Outcome::Skipped { why, warnings: Vec::new() };
    let namespace = namespace.or(typed.metadata.namespace.as_deref());
    if namespace.is_some_and(|ns| excluded(ctx, ns)) {
        return skip(Skip::ExcludedNamespace);
    }
    if is_injected(&typed) {
        return skip(Skip::AlreadyInjected);
    }
    match annotations::opt_in(&typed) {
        Err(e) => return Outcome::Denied { message: e.to_string() },
        Ok(OptIn::Disabled) => return skip(Skip::OptedOut),
        Ok(OptIn::Unset) if scope == Scope::Pod => return skip(Skip::NotOptedIn),
        Ok(_) => {}
    }
    let spec = typed.spec.clone().unwrap_or_default();
    if spec.host_network == Some(true) {
        let warning = "berth: the pod uses hostNetwork, where the sidecar's ports would be the node's; \
                       it was not injected"
            .to_owned();
        return Outcome::Skipped { why: Skip::HostNetwork, warnings: vec![warning] };
    }
    let settings = match PodSettings::read(&typed, ctx.config) {
        Ok(s) => s,
        Err(e) => return Outcome::Denied { message: format!("berth: {e}") },
    };
    let mut edit = Edit::default();
    if let Err(message) =
        grace_period(ctx.config, &settings, spec.termination_grace_period_seconds, &mut edit)
    {
        return Outcome::Denied { message };
    }
    if !ctx.config.native_sidecar && spec.restart_policy.as_deref().is_some_and(|p| p != "Always") {
        edit.warnings.push(
            "berth: the sidecar is a plain container (nativeSidecar is off), so it keeps running after \
             the pod's other containers complete: a Job will not finish"
                .to_owned(),
        );
    }
    for (i, c) in spec.containers.iter().enumerate() {
        app_container(ctx.config, &settings, token, i, c, &mut edit);
    }
    annotate(ctx.config, &typed, &mut edit);
    let sidecar = match serde_json::to_value(sidecar::container(&settings, ctx.config, token)) {
        Ok(v) => v,
        Err(e) => return Outcome::Failed { error: format!("cannot write the sidecar container: {e}") },
    };
    // The sidecar's root filesystem is read-only; the Nacos client keeps a cache in /tmp.
    let scratch =
        json!({"name": sidecar::SCRATCH_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}});
    match spec.volumes {
        None => edit.add(&["spec", "volumes"], json!([scratch])),
        Some(_) => edit.add(&["spec", "volumes", "-"], scratch),
    }
    // Last, so that the app containers' indices above are those of the pod as sent.
    match (ctx.config.native_sidecar, spec.init_containers.is_some()) {
        (true, false) => edit.add(&["spec", "initContainers"], json!([sidecar])),
        (true, true) => edit.add(&["spec", "initContainers", "0"], sidecar),
        (false, _) => edit.add(&["spec", "containers", "0"], sidecar),
    }
    Outcome::Injected { patch: edit.ops, warnings: edit.warnings }
}

fn excluded(ctx: Context<'_>, namespace: &str) -> bool {
    namespace == "kube-system"
        || ctx.own_namespace == Some(namespace)
        || ctx.config.exclude_namespaces.iter().any(|n| n == namespace)
}

/// Injected before: annotated, or carrying a sidecar container (its annotation lost).
fn is_injected(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    let containers = spec.map(|s| s.containers.iter()).into_iter().flatten();
    let init = spec.and_then(|s| s.init_containers.as_ref()).into_iter().flatten();
    annotations::injected(pod).is_some() || containers.chain(init).any(|c| c.name == sidecar::CONTAINER_NAME)
}

/// Patch operations and warnings, gathered in order.
#[derive(Debug, Default)]
struct Edit {
    ops: Vec<PatchOperation>,
    warnings: Vec<String>,
}

impl Edit {
    fn add(&mut self, path: &[&str], value: Value) {
        let path = PointerBuf::from_tokens(path.iter().copied());
        self.ops.push(PatchOperation::Add(AddOperation { path, value }));
    }
}

/// Raises the grace period to cover the drain; a pinned shorter one is warned about, or refused
/// when strict.
fn grace_period(
    config: &InjectConfig,
    settings: &PodSettings,
    current: Option<i64>,
    edit: &mut Edit,
) -> Result<(), String> {
    let needed = settings.grace_period_seconds(config);
    match current {
        Some(c) if c >= needed => return Ok(()),
        None | Some(DEFAULT_GRACE_PERIOD) => {}
        Some(pinned) => {
            let why = format!(
                "terminationGracePeriodSeconds {pinned} is shorter than the {needed}s the drain needs \
                 (drain-min {} + drain-timeout {} + margin {})",
                humantime::format_duration(settings.drain_min),
                humantime::format_duration(settings.drain_timeout),
                humantime::format_duration(config.grace_period_margin),
            );
            if config.strict_grace_period {
                return Err(format!(
                    "berth: {why}; raise it, or shorten {} / {}",
                    annotations::DRAIN_MIN,
                    annotations::DRAIN_TIMEOUT
                ));
            }
            edit.warnings.push(format!("berth: {why}; raised to {needed}"));
        }
    }
    edit.add(&["spec", "terminationGracePeriodSeconds"], json!(needed));
    Ok(())
}

/// The app container's preStop hook and, when asked, its proxy environment.
fn app_container(
    config: &InjectConfig,
    settings: &PodSettings,
    token: &DrainToken,
    index: usize,
    c: &Container,
    edit: &mut Edit,
) {
    let i = index.to_string();
    let hook = json!(sidecar::pre_stop(config, token));
    match c.lifecycle.as_ref() {
        None => edit.add(&["spec", "containers", &i, "lifecycle"], json!({ "preStop": hook })),
        Some(l) if l.pre_stop.is_none() => {
            edit.add(&["spec", "containers", &i, "lifecycle", "preStop"], hook)
        }
        Some(_) => edit.warnings.push(format!(
            "berth: container {} has its own preStop hook, so berth's drain hook was not added; end it with \
             a GET of http://127.0.0.1:{}{} so the app stops after the drain",
            c.name,
            config.ports.admin,
            sidecar::DRAIN_PATH
        )),
    }
    if !settings.http_proxy {
        return;
    }
    let wanted = sidecar::proxy_env(config);
    match c.env.as_ref() {
        None => edit.add(&["spec", "containers", &i, "env"], json!(wanted)),
        Some(existing) => {
            for var in wanted.into_iter().filter(|v| !existing.iter().any(|e| e.name == v.name)) {
                edit.add(&["spec", "containers", &i, "env", "-"], json!(var));
            }
        }
    }
}

/// `berth.io/injected` and, unless the pod has its own, the Prometheus scrape annotations.
fn annotate(config: &InjectConfig, pod: &Pod, edit: &mut Edit) {
    let existing = pod.metadata.annotations.as_ref();
    let mut wanted = vec![(annotations::INJECTED, berth_core::VERSION.to_owned())];
    match existing.and_then(|a| a.get("prometheus.io/scrape")) {
        Some(scrape) => edit.warnings.push(format!(
            "berth: the pod has its own prometheus.io/scrape={scrape}, left as is; the sidecar's metrics \
             are on port {} at /metrics",
            config.ports.admin
        )),
        None => wanted.extend([
            ("prometheus.io/scrape", "true".to_owned()),
            ("prometheus.io/port", config.ports.admin.to_string()),
            ("prometheus.io/path", "/metrics".to_owned()),
        ]),
    }
    if existing.is_none() {
        let map: serde_json::Map<String, Value> =
            wanted.into_iter().map(|(k, v)| (k.to_owned(), Value::String(v))).collect();
        edit.add(&["metadata", "annotations"], Value::Object(map));
    } else {
        for (k, v) in wanted {
            edit.add(&["metadata", "annotations", k], Value::String(v));
        }
    }
}

#[cfg(test)]
mod tests;
