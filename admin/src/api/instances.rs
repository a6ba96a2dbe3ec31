//! A service's instances as people want to see them: grouped by the symbol consumers see, each
//! in its lifecycle state — from the registry (warming with its ramp, serving, unhealthy…),
//! corrected by what the consumer sidecars see (draining, ejected), plus the instances that
//! left the registry but whose sidecars still run (draining, or starting again after their
//! app turned unhealthy). Instances that never registered are not known to admin.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use berth_core::policy::CompiledPolicy;
use berth_core::{Instance, Symbol};
use serde::Serialize;

use crate::fleet::{Scan, Sidecar};

/// One instance as `GET /services/{service}` shows it.
#[derive(Debug, Serialize)]
pub struct InstanceView {
    pub address: SocketAddr,
    /// The symbol consumers see: the policy's override, else `berth.symbol`, else `stable`.
    pub symbol: Symbol,
    /// Whether the policy overrides the symbol the instance registered with.
    pub overridden: bool,
    /// `warming`, `serving`, `draining`, `ejected`, `unhealthy`, `disabled`, `weightless` (a
    /// weight 0 berth's consumers honour; a policy-kept Nacos weight of 0 is not); for
    /// an instance that left the registry: `deregistered` (not asked since), `draining`, or —
    /// its app turned unhealthy — `starting` or `registering`.
    pub state: &'static str,
    /// Whether the registry lists it (a draining instance has left the registry).
    pub registered: bool,
    /// While warming: how far into its warm-up it is, 0 to 1 (age over its warm-up; whether its
    /// share is ramped now is `effective_weight`'s to say).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup_progress: Option<f64>,
    /// How many consumer sidecars see it in each state (`serving`, `ejected`…).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub seen_by_consumers: BTreeMap<String, usize>,
    /// Seconds since it registered (`berth.started_at`), if it says.
    pub age_seconds: Option<u64>,
    /// The weight berth's consumers balance it by: the registry's, or 1 when the registry's
    /// weight is its policy share kept for consumers without a sidecar (`berth.weight: policy`).
    pub weight: f64,
    /// That weight times the warm-up factor, as consumers ramp it now (not while most of the
    /// service is warming: then they skip the ramp).
    pub effective_weight: f64,
    /// The registry's weight: what Nacos clients without a sidecar split by.
    pub nacos_weight: f64,
    pub healthy: bool,
    pub enabled: bool,
    /// `berth.version`, if any.
    pub version: Option<String>,
}

/// The symbol consumers see for `i` under `policy`, and whether it is overridden.
pub fn symbol_of(policy: &CompiledPolicy, i: &Instance) -> (Symbol, bool) {
    match policy.override_for(i.addr) {
        Some(s) => (s.clone(), true),
        None => (i.symbol().unwrap_or_default(), false),
    }
}

/// The state from the registry's flags and the warm-up, then from consumers' views.
fn state(i: &Instance, warming: bool, seen: &BTreeMap<String, usize>) -> &'static str {
    let seen = |s: &str| seen.get(s).copied().unwrap_or(0) > 0;
    if !i.enabled {
        "disabled"
    } else if !i.healthy {
        "unhealthy"
    } else if i.balance_weight() <= 0.0 {
        "weightless"
    } else if seen("draining") {
        "draining"
    } else if seen("ejected") {
        "ejected"
    } else if warming {
        "warming"
    } else {
        "serving"
    }
}

/// How the service's consumers ramp its instances now: the default warm-up window, and whether
/// the ramp applies at all ([`berth_core::warmup::applies`]: not while most of it is warming).
#[derive(Clone, Copy, Debug)]
struct Ramp {
    window: Duration,
    applies: bool,
    now_ms: u64,
}

fn view(policy: &CompiledPolicy, i: &Instance, ramp: Ramp, seen: BTreeMap<String, usize>) -> InstanceView {
    let (symbol, overridden) = symbol_of(policy, i);
    let now_ms = ramp.now_ms;
    let age_ms = i.started_at().map(|t| now_ms.saturating_sub(t));
    let warmup_ms = berth_core::warmup::window_ms(i, ramp.window);
    let warming = berth_core::warmup::is_warming(i.started_at(), warmup_ms, now_ms);
    let state = state(i, warming, &seen);
    InstanceView {
        address: i.addr,
        symbol,
        overridden,
        state,
        registered: true,
        warmup_progress: (state == "warming").then(|| age_ms.unwrap_or(0) as f64 / warmup_ms.max(1) as f64),
        seen_by_consumers: seen,
        age_seconds: age_ms.map(|a| a / 1000),
        weight: i.balance_weight(),
        // As the sidecars balance: ramped only while warming and while the ramp applies.
        effective_weight: match state {
            "warming" if ramp.applies => {
                i.balance_weight() * berth_core::warmup::factor(i.started_at(), warmup_ms, now_ms)
            }
            _ => i.balance_weight(),
        },
        nacos_weight: i.weight,
        healthy: i.healthy,
        enabled: i.enabled,
        version: i.metadata.get(berth_core::metadata::VERSION).cloned(),
    }
}

/// Every instance of `service` by symbol: the registered ones, then those whose sidecars run
/// on after they left the registry.
pub fn by_symbol(
    service: &str,
    policy: &CompiledPolicy,
    instances: &[Instance],
    scan: &Scan,
    warmup: Duration,
) -> BTreeMap<Symbol, Vec<InstanceView>> {
    let now = berth_core::now_millis();
    let ramp =
        Ramp { window: warmup, applies: berth_core::warmup::applies_to(instances, warmup, now), now_ms: now };
    let mut seen: BTreeMap<SocketAddr, BTreeMap<String, usize>> = BTreeMap::new();
    for (addr, states) in scan.seen_states(service) {
        for s in states {
            *seen.entry(addr).or_default().entry(s.to_owned()).or_default() += 1;
        }
    }
    let mut symbols: BTreeMap<Symbol, Vec<InstanceView>> = BTreeMap::new();
    for i in instances {
        let v = view(policy, i, ramp, seen.remove(&i.addr).unwrap_or_default());
        symbols.entry(v.symbol.clone()).or_default().push(v);
    }
    for (sidecar, state) in departed(scan) {
        if sidecar.service != service || instances.iter().any(|i| i.addr == sidecar.instance) {
            continue;
        }
        let symbol = policy.override_for(sidecar.instance).cloned().unwrap_or_else(|| sidecar.symbol.clone());
        let v = InstanceView {
            address: sidecar.instance,
            overridden: symbol != sidecar.symbol,
            symbol,
            state,
            registered: false,
            warmup_progress: None,
            seen_by_consumers: seen.remove(&sidecar.instance).unwrap_or_default(),
            age_seconds: sidecar.started_at.map(|t| now.saturating_sub(t) / 1000),
            weight: 0.0,
            effective_weight: 0.0,
            nacos_weight: 0.0,
            healthy: false,
            enabled: true,
            version: None,
        };
        symbols.entry(v.symbol.clone()).or_default().push(v);
    }
    symbols
}

/// Sidecars that left the registry and still run, with the state to show: deregistered to
/// drain, or because their app turned unhealthy (they wait to register again); and those the
/// last scan found registered — their drain has just begun, the next scan asks them.
fn departed(scan: &Scan) -> impl Iterator<Item = (&Sidecar, &'static str)> {
    let followed = scan.departed.iter().filter_map(|d| {
        let state = match d.lifecycle.as_str() {
            "draining" => "draining",
            "starting" => "starting",
            "registering" => "registering",
            _ => return None,
        };
        Some((&d.sidecar, state))
    });
    let just_left = scan
        .sidecars
        .iter()
        .map(|s| (&s.sidecar, "deregistered"))
        .filter(|(s, _)| !scan.departed.iter().any(|d| d.sidecar.instance == s.instance));
    followed.chain(just_left)
}
