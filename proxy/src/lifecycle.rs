//! The lifecycle controller: one task that owns the instance's registration.
//!
//! It follows the health verdict and the drain: `starting` until healthy, `registering` for
//! the register delay (any failure starts over) and until the registry accepts the instance,
//! `warming` for the warm-up window, then `serving`. Unhealthy while registered means
//! deregistered and back to `starting`. A drain deregisters at once, from any state, and the
//! controller reports `stopped` when the drain is over.
//!
//! While registered it also keeps the instance's Nacos weight ([`crate::weight`]): the same
//! instance, metadata unchanged, registered again with the weight the policy now gives it, at
//! most once per [`weight::INTERVAL`]. Being the one task that registers and deregisters, it
//! never re-registers an instance the drain has just taken out.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use berth_core::registry::Registry;
use berth_core::{Instance, Lifecycle, metadata};
use serde::Serialize;
use tokio::sync::watch;

use crate::config::Config;
use crate::drain::{Drain, Phase};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::weight::{self, Keeper};

/// How often a registered instance checks that the registry still lists it (a Nacos server
/// that restarted without its data loses ephemeral instances until clients re-register).
const RECONCILE: Duration = Duration::from_secs(5);
/// Longest wait between registration attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a registration waits for the first view of its own service (its Nacos weight
/// depends on it); past it, the weight comes from what is known (at worst: this instance alone).
const VIEW_WAIT: Duration = Duration::from_secs(5);

/// What the sidecar is doing, as `/state` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct State {
    pub lifecycle: Lifecycle,
    /// When the current state began (ms since the epoch).
    pub since_ms: u64,
    /// The instance as registered, while it is.
    pub instance: Option<Instance>,
    /// Whether the app and its dependencies pass their checks.
    pub healthy: bool,
    /// What fails, while anything does.
    pub failing: Vec<String>,
}

impl State {
    fn new() -> Self {
        State {
            lifecycle: Lifecycle::Starting,
            since_ms: berth_core::now_millis(),
            instance: None,
            healthy: false,
            failing: Vec::new(),
        }
    }

    /// Whether `/ready` answers 200: registered and healthy.
    pub fn is_ready(&self) -> bool {
        self.lifecycle.is_registered() && self.healthy
    }
}

/// Creates the state channel, starting in `starting`.
pub fn channel() -> (watch::Sender<State>, watch::Receiver<State>) {
    watch::channel(State::new())
}

/// The controller's inputs and outputs.
#[derive(Debug)]
pub struct Controller {
    pub config: Arc<Config>,
    pub registry: Arc<dyn Registry>,
    pub advertise: SocketAddr,
    /// The port the admin listener is bound to, registered as `berth.admin_port`.
    pub admin_port: u16,
    pub metrics: Metrics,
    pub drain: Arc<Drain>,
    pub health: watch::Receiver<Health>,
    pub state: watch::Sender<State>,
    /// Computes the Nacos weight the instance should have.
    pub weights: Keeper,
}

impl Controller {
    /// Runs the lifecycle until the drain is over.
    pub async fn run(mut self) {
        let mut phase = self.drain.subscribe();
        let health = self.health.clone();
        let state = self.state.clone();
        let mirror = tokio::spawn(mirror_health(health, state));
        tokio::select! {
            () = self.live() => {}
            _ = phase.wait_for(|p| *p >= Phase::Draining) => {}
        }
        self.drain_out(&mut phase).await;
        mirror.abort();
    }

    fn set(&self, lifecycle: Lifecycle, instance: Option<Instance>) {
        self.metrics.set_lifecycle(lifecycle);
        self.state.send_modify(|s| {
            if s.lifecycle != lifecycle {
                tracing::info!(from = %s.lifecycle, to = %lifecycle, "lifecycle");
                s.since_ms = berth_core::now_millis();
            }
            s.lifecycle = lifecycle;
            s.instance = instance;
        });
    }

    /// Everything before a drain; never returns.
    async fn live(&mut self) {
        if !self.config.lifecycle {
            return self.without_lifecycle().await;
        }
        loop {
            self.set(Lifecycle::Starting, None);
            if self.health.wait_for(|h| h.healthy).await.is_err() {
                return std::future::pending().await;
            }
            self.set(Lifecycle::Registering, None);
            if !self.healthy_for(self.config.timing.register_delay).await {
                continue;
            }
            let mut instance = self.instance();
            instance.weight = self.first_weight(&instance).await;
            if !self.register(&instance).await {
                continue;
            }
            self.set(Lifecycle::Warming, Some(instance.clone()));
            self.registered(&mut instance).await;
            tracing::warn!(failing = ?self.health.borrow().failing, "unhealthy; deregistering until healthy again");
            self.deregister(&instance).await;
        }
    }

    /// While registered, until the app turns unhealthy: `serving` once the warm-up is over, the
    /// registration checked every [`RECONCILE`], and the Nacos weight kept.
    async fn registered(&mut self, instance: &mut Instance) {
        let start = tokio::time::Instant::now();
        let (warm_at, mut warming) = (start + self.config.timing.warmup, true);
        let mut reconcile_at = start + RECONCILE;
        let mut weighed_at = start;
        let mut failing = false;
        loop {
            let mut next = (weighed_at + weight::INTERVAL).min(reconcile_at);
            if warming {
                next = next.min(warm_at);
            }
            if !self.healthy_for(next.saturating_duration_since(tokio::time::Instant::now())).await {
                return;
            }
            let now = tokio::time::Instant::now();
            if warming && now >= warm_at {
                warming = false;
                self.set(Lifecycle::Serving, Some(instance.clone()));
            }
            if now >= reconcile_at {
                self.reconcile(instance).await;
                reconcile_at = now + RECONCILE;
            }
            if now >= weighed_at + weight::INTERVAL {
                weighed_at = now;
                failing = !self.keep_weight(instance, failing).await;
            }
        }
    }

    /// The weight of a new registration, once this sidecar has a view of its service (or
    /// [`VIEW_WAIT`] is over).
    async fn first_weight(&self, instance: &Instance) -> f64 {
        if let Some(own) = &self.weights.service
            && let Err(e) = own.ready(VIEW_WAIT).await
        {
            tracing::warn!(error = %e, "no view of the service yet; the Nacos weight starts from what is known");
        }
        self.weights.desired(instance.started_at().unwrap_or(0), berth_core::now_millis())
    }

    /// Registers the instance again if its Nacos weight should change; `false` when the
    /// registry refused (retried at the next tick; only the first failure in a row is a
    /// warning).
    async fn keep_weight(&self, instance: &mut Instance, failing: bool) -> bool {
        let want = self.weights.desired(instance.started_at().unwrap_or(0), berth_core::now_millis());
        if !weight::worth_updating(instance.weight, want) {
            return true;
        }
        let mut next = instance.clone();
        next.weight = want;
        match self.registry.register(&self.config.service, &next).await {
            Ok(()) => {
                tracing::debug!(from = instance.weight, to = want, "Nacos weight updated");
                self.metrics.nacos_weight_updates.with_label_values(&["ok"]).inc();
                self.metrics.nacos_weight.set(want);
                *instance = next;
                self.state.send_modify(|s| s.instance = Some(instance.clone()));
                true
            }
            Err(e) => {
                self.metrics.nacos_weight_updates.with_label_values(&["failed"]).inc();
                if failing {
                    tracing::debug!(error = %e, "cannot update the Nacos weight; retrying");
                } else {
                    tracing::warn!(error = %e, weight = want, "cannot update the Nacos weight; retrying every second");
                }
                false
            }
        }
    }

    /// `--no-lifecycle`: registered at once, whatever the app's health, and left registered.
    async fn without_lifecycle(&mut self) {
        let instance = self.instance();
        while let Err(e) = self.registry.register(&self.config.service, &instance).await {
            tracing::warn!(error = %e, "cannot register; retrying");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.metrics.registrations.inc();
        self.set(Lifecycle::Serving, Some(instance));
        std::future::pending().await
    }

    /// The instance to register, stamped now.
    fn instance(&self) -> Instance {
        let mut instance = Instance::new(self.advertise);
        let c = &self.config;
        instance.cluster.clone_from(&c.cluster);
        // Written once per registration and identical on every re-registration of it (only
        // the weight changes): registries differ in how they treat metadata updates.
        instance.metadata.extend([
            (metadata::SYMBOL.to_owned(), c.symbol.to_string()),
            (metadata::STARTED_AT.to_owned(), berth_core::now_millis().to_string()),
            (metadata::VERSION.to_owned(), c.app_version.clone()),
            (metadata::PROTOCOL.to_owned(), "h2c".to_owned()),
            (metadata::WARMUP.to_owned(), c.timing.warmup.as_millis().to_string()),
            (metadata::ADMIN_PORT.to_owned(), self.admin_port.to_string()),
            (metadata::REGISTER_SOURCE.to_owned(), metadata::REGISTER_SOURCE_BERTH.to_owned()),
        ]);
        // Other clients' conventions for "which deployment": Spring Cloud's label and hint routing.
        for key in &c.symbol_metadata {
            instance.metadata.insert(key.clone(), c.symbol.to_string());
        }
        if self.weights.follows_policy() {
            instance.metadata.insert(metadata::WEIGHT.to_owned(), metadata::WEIGHT_POLICY.to_owned());
        }
        instance
    }

    /// Waits `d`; `false` as soon as the verdict turns unhealthy.
    async fn healthy_for(&mut self, d: Duration) -> bool {
        let turned_unhealthy = tokio::select! {
            () = tokio::time::sleep(d) => false,
            r = self.health.wait_for(|h| !h.healthy) => r.is_ok(),
        };
        !turned_unhealthy && self.health.borrow().healthy
    }

    /// Registers, retrying with back-off; `false` if the app turned unhealthy first.
    async fn register(&mut self, instance: &Instance) -> bool {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.registry.register(&self.config.service, instance).await {
                Ok(()) => {
                    self.metrics.registrations.inc();
                    self.metrics.nacos_weight.set(instance.weight);
                    tracing::info!(service = %self.config.service, instance = %instance.addr, symbol = %self.config.symbol, weight = instance.weight, registry = %self.registry.describe(), "registered");
                    return true;
                }
                Err(e) => {
                    self.metrics.registration_failures.inc();
                    tracing::warn!(error = %e, retry_in = ?backoff, "cannot register; not ready until registered");
                }
            }
            if !self.healthy_for(backoff).await {
                return false;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Registers again if the registry lost the instance, or holds another weight for it (a
    /// client's redo after a reconnect replays the registration it remembers; someone edited it).
    async fn reconcile(&mut self, instance: &Instance) {
        let listed = match self.registry.instances(&self.config.service).await {
            Ok(listed) => listed.into_iter().find(|i| i.addr == instance.addr),
            Err(e) => return tracing::debug!(error = %e, "cannot check the registration"),
        };
        match listed {
            None => {
                tracing::warn!(instance = %instance.addr, "the registry no longer lists this instance; registering again")
            }
            Some(i) if (i.weight - instance.weight).abs() > instance.weight.abs() * 1e-6 => {
                tracing::info!(
                    listed = i.weight,
                    kept = instance.weight,
                    "the registry holds another weight; registering again"
                )
            }
            Some(_) => return,
        }
        if self.registry.register(&self.config.service, instance).await.is_ok() {
            self.metrics.registrations.inc();
        }
    }

    async fn deregister(&self, instance: &Instance) -> bool {
        match self.registry.deregister(&self.config.service, instance).await {
            Ok(()) => {
                self.metrics.deregistrations.inc();
                tracing::info!(service = %self.config.service, instance = %instance.addr, "deregistered");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot deregister");
                false
            }
        }
    }

    /// The drain: deregister at once (retrying while the registry is unreachable), then wait
    /// for the drain to end.
    async fn drain_out(&mut self, phase: &mut watch::Receiver<Phase>) {
        let was = self.state.borrow().lifecycle;
        let instance = self.state.borrow().instance.clone().unwrap_or_else(|| self.instance());
        self.set(Lifecycle::Draining, None);
        if was != Lifecycle::Starting {
            let done = |p: &Phase| matches!(p, Phase::Done { .. });
            while !self.deregister(&instance).await {
                let retry = tokio::time::sleep(Duration::from_millis(500));
                tokio::select! { () = retry => {}, _ = phase.wait_for(done) => break }
            }
            if let Some(elapsed) = self.drain.deregistered() {
                self.metrics.drain_deregistration.set(elapsed.as_secs_f64());
                tracing::info!(after = ?elapsed, "deregistered after the drain started");
            }
        }
        let _ = phase.wait_for(|p| matches!(p, Phase::Done { .. })).await;
        if let Some(elapsed) = self.drain.elapsed() {
            self.metrics.drain_duration.set(elapsed.as_secs_f64());
        }
        self.set(Lifecycle::Stopped, None);
    }
}

/// Copies the health verdict into the state for `/state` and `/ready`.
async fn mirror_health(mut health: watch::Receiver<Health>, state: watch::Sender<State>) {
    loop {
        let h = health.borrow_and_update().clone();
        state.send_modify(|s| {
            s.healthy = h.healthy;
            s.failing = h.failing;
        });
        if health.changed().await.is_err() {
            return;
        }
    }
}
