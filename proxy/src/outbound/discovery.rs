//! Discovery: which instances each service has, and which policy routes to them.
//!
//! A service is subscribed on first use (or at start, with `--services`): one task per service
//! follows its instance set and its policy document in the registry and publishes a
//! [`Snapshot`] through `arc-swap`, so requests never take a lock. An invalid policy is
//! rejected — logged, counted, and the last good one kept.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use berth_core::policy::{CompiledPolicy, Policy};
use berth_core::registry::{InstanceSet, Registry, RegistryError, policy_data_id};
use tokio::sync::{Mutex, watch};

use super::Settings;
use super::balance::Snapshot;
use super::measure::Handles;
use super::retry::Latency;
use crate::endpoint::PeerSettings;
use crate::metrics::Metrics;

/// Most services one sidecar follows: service names come from the app's requests, and each
/// is a subscription and a set of metric labels.
pub const MAX_SERVICES: usize = 1024;

/// Where a service's policy came from.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PolicyState {
    #[serde(skip)]
    pub compiled: Arc<CompiledPolicy>,
    /// The document's version (0 for the built-in default).
    pub version: u64,
    /// `registry` or `default` (no document).
    pub source: &'static str,
    /// Why the last document was rejected, if it was.
    pub rejected: Option<String>,
}

impl PolicyState {
    fn default_policy() -> Self {
        PolicyState {
            compiled: Arc::new(CompiledPolicy::fallback()),
            version: 0,
            source: "default",
            rejected: None,
        }
    }
}

/// Every followed service by name. Fx, not SipHash: every request looks its service up, and
/// the names a table holds are bounded ([`MAX_SERVICES`]), so collisions cannot be forced.
pub type Services = rustc_hash::FxHashMap<String, Arc<Service>>;

/// One followed service.
#[derive(Debug)]
pub struct Service {
    pub name: String,
    /// The name as a `Host` value (made once: requests by path prefix send it every time).
    pub host: Option<http::HeaderValue>,
    pub snapshot: ArcSwap<Snapshot>,
    pub policy: ArcSwap<PolicyState>,
    /// The service's answer times, for the hedging delay.
    pub latency: Arc<Latency>,
    /// `berth_outbound_lane_fallbacks_total{service}`.
    pub(super) lane_fallbacks: prometheus::IntCounter,
    /// Metric handles per symbol, looked up once.
    pub(super) handles: Handles,
    /// The metrics its requests update (reached through the service, so that a request clones
    /// nothing more to update them).
    pub(super) metrics: Metrics,
    /// `Ok` once the first instance set arrived; the error while the registry cannot be reached.
    status: watch::Sender<Option<Result<(), String>>>,
    /// Whether the first instance set arrived (read without subscribing on every request).
    listed: std::sync::atomic::AtomicBool,
}

impl Service {
    /// Whether the first instance set arrived.
    pub fn is_ready(&self) -> bool {
        self.listed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Waits (up to `timeout`) for the first instance set.
    pub async fn ready(&self, timeout: Duration) -> Result<(), String> {
        let mut rx = self.status.subscribe();
        let waited = tokio::time::timeout(timeout, async {
            let _ = rx.wait_for(|s| matches!(s, Some(Ok(())))).await;
        })
        .await;
        match (waited, &*self.status.borrow()) {
            (_, Some(Ok(()))) => Ok(()),
            (_, Some(Err(e))) => Err(e.clone()),
            _ => Err(format!("no answer from the registry within {}", humantime::format_duration(timeout))),
        }
    }
}

/// Every followed service.
#[derive(Debug)]
pub struct Discovery {
    registry: Arc<dyn Registry>,
    services: ArcSwap<Services>,
    adding: Mutex<()>,
    default_warmup_ms: u64,
    metrics: Metrics,
    settings: Settings,
}

/// Why a service cannot be followed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("this sidecar already follows {MAX_SERVICES} services; `{0}` would be one too many")]
    TooMany(String),
}

impl Discovery {
    pub fn new(
        registry: Arc<dyn Registry>,
        default_warmup: Duration,
        metrics: Metrics,
        settings: Settings,
    ) -> Self {
        Discovery {
            registry,
            services: ArcSwap::from_pointee(Services::default()),
            adding: Mutex::new(()),
            default_warmup_ms: u64::try_from(default_warmup.as_millis()).unwrap_or(u64::MAX),
            metrics,
            settings,
        }
    }

    /// The registry's namespace, for error messages.
    pub fn namespace(&self) -> &str {
        self.registry.namespace()
    }

    /// Every followed service.
    pub fn all(&self) -> Arc<Services> {
        self.services.load_full()
    }

    /// Whether the registry knows the service at all (for a clear error; not on the hot path).
    pub async fn exists(&self, name: &str) -> Option<bool> {
        self.registry.services().await.ok().map(|all| all.iter().any(|s| s == name))
    }

    /// The service, if it is followed already (without waiting).
    pub fn followed(&self, name: &str) -> Option<Arc<Service>> {
        self.services.load().get(name).cloned()
    }

    /// The service, followed from now on.
    pub async fn service(&self, name: &str) -> Result<Arc<Service>, DiscoveryError> {
        if let Some(s) = self.services.load().get(name) {
            return Ok(s.clone());
        }
        let _adding = self.adding.lock().await;
        let current = self.services.load_full();
        if let Some(s) = current.get(name) {
            return Ok(s.clone());
        }
        if current.len() >= MAX_SERVICES {
            return Err(DiscoveryError::TooMany(name.to_owned()));
        }
        let service = self.start_following(name);
        let mut next = Services::clone(&current);
        next.insert(name.to_owned(), service.clone());
        self.services.store(Arc::new(next));
        Ok(service)
    }

    /// Follows the sidecar's own service — the instances and policy its Nacos weight is kept
    /// by — with the same task as every followed service, but unlisted: the app does not call
    /// it, so `/endpoints`, the outbound metrics and admin's count of consumers leave it out.
    /// If the app does call it, that following is shared.
    pub fn own(&self, name: &str) -> Arc<Service> {
        match self.services.load().get(name) {
            Some(s) => s.clone(),
            None => self.start_following(name),
        }
    }

    fn start_following(&self, name: &str) -> Arc<Service> {
        let service = Arc::new(Service {
            name: name.to_owned(),
            host: http::HeaderValue::from_str(name).ok(),
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            policy: ArcSwap::from_pointee(PolicyState::default_policy()),
            latency: Arc::default(),
            lane_fallbacks: self.metrics.outbound_lane_fallbacks.with_label_values(&[name]),
            handles: Handles::default(),
            metrics: self.metrics.clone(),
            status: watch::channel(None).0,
            listed: std::sync::atomic::AtomicBool::new(false),
        });
        let peer = PeerSettings {
            ejection: self.settings.ejection,
            keepalive: self.settings.keepalive,
            ejections: Some(self.metrics.outbound_ejections.with_label_values(&[name])),
            service_latency: Some(service.latency.clone()),
        };
        tokio::spawn(follow(
            service.clone(),
            self.registry.clone(),
            self.default_warmup_ms,
            self.metrics.clone(),
            peer,
        ));
        service
    }
}

/// Retries `subscribe` with back-off until it works, reporting errors on the service's status.
async fn subscribe<T, F>(service: &Service, what: &str, subscribe: impl Fn() -> F) -> T
where
    F: Future<Output = Result<T, RegistryError>>,
{
    let mut backoff = Duration::from_millis(200);
    loop {
        match subscribe().await {
            Ok(v) => return v,
            Err(e) => {
                tracing::warn!(service = %service.name, error = %e, "cannot follow {what}; retrying");
                service.status.send_if_modified(|s| {
                    let fill = !matches!(s, Some(Ok(())));
                    if fill {
                        *s = Some(Err(e.to_string()));
                    }
                    fill
                });
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Follows one service's instances and policy for the life of the process.
async fn follow(
    service: Arc<Service>,
    registry: Arc<dyn Registry>,
    warmup_ms: u64,
    metrics: Metrics,
    peer: PeerSettings,
) {
    let name = service.name.clone();
    let mut instances: watch::Receiver<InstanceSet> = subscribe(&service, "instances", || {
        let (registry, name) = (registry.clone(), name.clone());
        async move { registry.watch(&name).await }
    })
    .await;
    let data_id = policy_data_id(&service.name);
    let mut policy_doc = subscribe(&service, "its policy", || {
        let (registry, data_id) = (registry.clone(), data_id.clone());
        async move { registry.watch_config(&data_id).await }
    })
    .await;
    loop {
        let doc = policy_doc.borrow_and_update().clone();
        apply_policy(&service, doc.as_deref(), &metrics);
        let set = instances.borrow_and_update().clone();
        let policy = service.policy.load();
        let snapshot =
            Snapshot::build_with(&set, &policy.compiled, &service.snapshot.load(), warmup_ms, &peer);
        service.snapshot.store(Arc::new(snapshot));
        service.listed.store(true, std::sync::atomic::Ordering::Release);
        service.status.send_replace(Some(Ok(())));
        tokio::select! {
            r = instances.changed() => if r.is_err() { return },
            r = policy_doc.changed() => if r.is_err() { return },
        }
    }
}

/// Validates a policy document; keeps the last good one when it is invalid.
fn apply_policy(service: &Service, doc: Option<&str>, metrics: &Metrics) {
    let current = service.policy.load();
    let next = match doc {
        None => PolicyState::default_policy(),
        Some(json) => match Policy::parse(json) {
            Ok(compiled) => {
                let version = compiled.policy.version;
                if current.source == "registry"
                    && current.compiled.policy == compiled.policy
                    && current.rejected.is_none()
                {
                    return;
                }
                tracing::info!(service = %service.name, version, "traffic policy applied");
                PolicyState { compiled: Arc::new(compiled), version, source: "registry", rejected: None }
            }
            Err(e) => {
                if current.rejected.as_deref() == Some(&e.to_string()) {
                    return;
                }
                tracing::warn!(service = %service.name, error = %e, kept_version = current.version, "traffic policy rejected; keeping the last good one");
                metrics.policy_rejections.with_label_values(&[&service.name]).inc();
                PolicyState { rejected: Some(e.to_string()), ..PolicyState::clone(&current) }
            }
        },
    };
    #[allow(clippy::cast_precision_loss)]
    metrics.policy_version.with_label_values(&[&service.name]).set(next.version as i64);
    service.policy.store(Arc::new(next));
}
