//! The Nacos weight a provider sidecar keeps for its own instance, so that consumers without a
//! sidecar split traffic as berth's consumers do.
//!
//! Clients without berth (Spring Cloud Alibaba's `NacosLoadBalancer`, the Nacos clients'
//! `selectOneHealthyInstance`, …) pick instances in proportion to their registry weight and
//! skip weight 0. berth's consumers pick a symbol by the traffic policy first, then an instance
//! of it. So each instance's weight is kept at its share under the policy:
//!
//! ```text
//! share  = symbol's weight ÷ usable instances of that symbol (+ what symbols without
//!          instances leave to the default symbol, as berth's consumers fall back)
//! weight = share × instances in the service × scale × warm-up factor
//! ```
//!
//! An instance with an average share weighs `scale` (default 1, Nacos's own default, so
//! instances registered without berth in the same service weigh alike); a symbol without a
//! share weighs 0 and is invisible to those clients; promote gives the promoted symbol
//! everything; warm-up ramps the weight as berth's consumers ramp their share.
//!
//! Where: in each provider sidecar, for its own instance, from the service's instances and
//! policy that its discovery already follows ([`crate::outbound::discovery::Discovery::own`]).
//! Only the instance's owner can change an ephemeral Nacos instance for good: the client that
//! registered it re-registers it after every reconnect ("redo") and would undo an edit made
//! by anyone else. One writer per instance also means several admin replicas change nothing:
//! they only write the policy document, which every sidecar reads. While the registry is away
//! the weight stays as registered and the last view of the service is kept; the next tick
//! after it is back registers the weight the view then gives.
//!
//! Re-registering is a push to every subscriber, so it is rate-limited ([`INTERVAL`]) and
//! changes smaller than [`MIN_CHANGE`] are skipped (a 30 s warm-up makes about twenty steps).
//! The metadata of a re-registration is the first registration's, unchanged: only the weight
//! moves (metadata is written once per registration).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use berth_core::Symbol;
use berth_core::policy::CompiledPolicy;

use crate::outbound::balance::Snapshot;
use crate::outbound::discovery::Service;

/// The largest weight Nacos accepts.
pub const MAX_WEIGHT: f64 = berth_core::instance::MAX_WEIGHT;
/// At most one re-registration per interval.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// Relative changes below this are not worth a push (to or from 0 always is).
pub const MIN_CHANGE: f64 = 0.05;
/// Weights are rounded to this fraction of the scale.
const RESOLUTION: f64 = 0.001;

/// How the sidecar keeps its Nacos weight.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    /// `--nacos-weight policy`: follow the policy; `false` (`fixed`): always 1.
    pub follow_policy: bool,
    /// `--nacos-weight-scale`: the weight of an instance with an average share.
    pub scale: f64,
}

/// One instance's share of its service's traffic under `policy`, as berth's consumers split
/// it, given the symbol of every usable instance (this one's included): its symbol's weight
/// divided among the symbol's instances. A weighted symbol without instances leaves its share
/// to the default symbol (spread over every instance when that has none either), as berth's
/// consumers fall back; with a strict policy those requests fail, and nobody gets the share.
/// Rules and pins are per request: clients without a sidecar have neither.
pub fn share(policy: &CompiledPolicy, symbols: &[&Symbol], mine: &Symbol) -> f64 {
    let mut count: HashMap<&Symbol, usize> = HashMap::new();
    for s in symbols {
        *count.entry(s).or_default() += 1;
    }
    let n = |s: &Symbol| count.get(s).copied().unwrap_or(0);
    let default = &policy.policy.default;
    let shares: Vec<(&Symbol, f64)> = if policy.is_weighted() {
        policy
            .policy
            .weights
            .iter()
            .filter(|(_, w)| **w > 0)
            .map(|(s, w)| (s, f64::from(*w) / 100.0))
            .collect()
    } else {
        vec![(default, 1.0)]
    };
    let left: f64 = shares.iter().filter(|(s, _)| n(s) == 0).map(|(_, w)| w).sum();
    let of = |symbol: &Symbol| shares.iter().filter(|(s, _)| *s == symbol).map(|(_, w)| w).sum::<f64>();
    let (to_default, to_everyone) = match (policy.policy.strict, n(default) > 0) {
        (true, _) => (0.0, 0.0),
        (false, true) => (left, 0.0),
        #[allow(clippy::cast_precision_loss)]
        (false, false) => (0.0, left / symbols.len().max(1) as f64),
    };
    let mut symbol_share = of(mine);
    if mine == default {
        symbol_share += to_default;
    }
    #[allow(clippy::cast_precision_loss)]
    let own = if n(mine) == 0 { 0.0 } else { symbol_share / n(mine) as f64 };
    own + to_everyone
}

/// The Nacos weight for a `share` of a service of `instances`, warming by `warmup_factor`
/// (1 when warm): an average share weighs `scale`. Rounded to a thousandth of the scale, never
/// rounded down to 0 (a share is a share), and at most Nacos's largest weight.
pub fn nacos_weight(share: f64, instances: usize, warmup_factor: f64, scale: f64) -> f64 {
    if share <= 0.0 || instances == 0 {
        return 0.0;
    }
    #[allow(clippy::cast_precision_loss)]
    let raw = share * instances as f64 * scale * warmup_factor.clamp(0.0, 1.0);
    let step = scale * RESOLUTION;
    ((raw / step).round() * step).max(step).min(MAX_WEIGHT)
}

/// Whether going from the registered weight to `want` is worth a re-registration.
pub fn worth_updating(registered: f64, want: f64) -> bool {
    if registered == want {
        return false;
    }
    if registered <= 0.0 || want <= 0.0 {
        return true;
    }
    (want - registered).abs() / registered >= MIN_CHANGE
}

/// Computes this instance's weight from the service as the sidecar's discovery follows it.
#[derive(Debug)]
pub struct Keeper {
    /// The sidecar's own service, followed for its instances and policy; `None` with
    /// `--nacos-weight fixed`.
    pub service: Option<Arc<Service>>,
    /// `--nacos-weight-scale`.
    pub scale: f64,
    /// The registered address.
    pub me: SocketAddr,
    /// `--symbol` (the policy may override it).
    pub symbol: Symbol,
    /// `--warmup`.
    pub warmup: Duration,
}

impl Keeper {
    /// Whether the registry weight follows the policy (registered as `berth.weight: policy`).
    pub fn follows_policy(&self) -> bool {
        self.service.is_some()
    }

    /// The weight this instance should have now, registered at `started_at` (ms since the
    /// epoch).
    pub fn desired(&self, started_at: u64, now_ms: u64) -> f64 {
        let Some(service) = &self.service else { return 1.0 };
        let snapshot = service.snapshot.load();
        let policy = service.policy.load();
        self.desired_in(&snapshot, &policy.compiled, started_at, now_ms)
    }

    /// [`Keeper::desired`] for a given view of the service.
    pub fn desired_in(
        &self,
        snapshot: &Snapshot,
        policy: &CompiledPolicy,
        started_at: u64,
        now_ms: u64,
    ) -> f64 {
        let listed = snapshot.get(self.me);
        let (mine, factor) = match listed {
            Some(entry) => {
                let warmup = snapshot.warmup_applies(now_ms);
                let weight = entry.weight.max(f64::MIN_POSITIVE);
                (entry.symbol.clone(), snapshot.effective_weight(entry, now_ms, warmup) / weight)
            }
            // Not listed yet (registering, or the registry has not pushed it yet): counted in,
            // ramping by its age.
            None => {
                let mine = policy.override_for(self.me).cloned().unwrap_or_else(|| self.symbol.clone());
                (mine, self.ramp(started_at, now_ms))
            }
        };
        let mut symbols: Vec<&Symbol> = snapshot.entries.iter().map(|e| &e.symbol).collect();
        if listed.is_none() {
            symbols.push(&mine);
        }
        nacos_weight(share(policy, &symbols, &mine), symbols.len(), factor, self.scale)
    }

    /// The warm-up factor by age alone (for an instance the view does not list yet).
    fn ramp(&self, started_at: u64, now_ms: u64) -> f64 {
        let window = u64::try_from(self.warmup.as_millis()).unwrap_or(u64::MAX);
        berth_core::warmup::factor(Some(started_at), window, now_ms)
    }
}

#[cfg(test)]
mod tests;
