//! What the admin port shows of the outbound side: `/endpoints` and the per-state instance
//! gauges.

use berth_core::Lifecycle;

use super::Outbound;
use super::balance::Entry;
use crate::endpoint::clock_ms;

impl Outbound {
    /// Updates the per-state instance gauges (before a scrape).
    pub fn refresh_gauges(&self) {
        let now = berth_core::now_millis();
        self.metrics.outbound_instances.reset();
        for service in self.discovery.all().values() {
            let snapshot = service.snapshot.load();
            for e in &snapshot.entries {
                let state = state_of(e, now);
                self.metrics
                    .outbound_instances
                    .with_label_values(&[&service.name, e.symbol.as_str(), state])
                    .inc();
            }
        }
    }

    /// `/endpoints`: every followed service with its instances and policy.
    pub fn describe(&self) -> serde_json::Value {
        let now = berth_core::now_millis();
        let tick = clock_ms();
        let mut services = serde_json::Map::new();
        for (name, service) in self.discovery.all().iter() {
            let snapshot = service.snapshot.load();
            let warmup = snapshot.warmup_applies(now);
            let instances: Vec<serde_json::Value> = snapshot
                .entries
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "addr": e.endpoint.addr,
                        "symbol": e.symbol,
                        "state": state_of(e, now),
                        "in_flight": e.endpoint.in_flight(),
                        "ewma_ms": e.endpoint.rtt_micros(tick) / 1000.0,
                        "load": e.endpoint.load(tick) / 1000.0,
                        "ejected_for_ms": u64::try_from(e.endpoint.ejected_for().as_millis()).unwrap_or(u64::MAX),
                        "weight": e.weight,
                        "effective_weight": snapshot.effective_weight(e, now, warmup),
                        "nacos_weight": e.nacos_weight,
                        "protocol": if e.endpoint.h2 { "h2c" } else { "http1" },
                    })
                })
                .collect();
            services.insert(
                name.clone(),
                serde_json::json!({
                    "namespace": self.discovery.namespace(),
                    "policy": &**service.policy.load(),
                    "listed": snapshot.listed,
                    "hedge_after_ms": self.policy.hedge_delay(&service.latency).map(|d| d.as_secs_f64() * 1000.0),
                    "instances": instances,
                }),
            );
        }
        serde_json::json!({ "services": services })
    }
}

/// An instance's state as this sidecar sees it: `serving`, `warming`, `draining` or `ejected`.
fn state_of(e: &Entry, now: u64) -> &'static str {
    if e.endpoint.is_draining() {
        Lifecycle::Draining.as_str()
    } else if e.endpoint.is_ejected() {
        "ejected"
    } else if e.started_at.is_some_and(|s| now < s + e.warmup_ms) {
        Lifecycle::Warming.as_str()
    } else {
        Lifecycle::Serving.as_str()
    }
}
