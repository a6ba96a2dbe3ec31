//! A registered instance of a service, as the registry holds it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::{Symbol, metadata};

/// One ip:port of a service. With berth it is a sidecar's inbound port.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// The address consumers connect to.
    pub addr: SocketAddr,
    /// The registry's weight (Nacos default 1.0); 0 takes the instance out of rotation.
    #[serde(default = "one")]
    pub weight: f64,
    /// The registry's health flag.
    #[serde(default = "yes")]
    pub healthy: bool,
    /// The registry's enabled flag.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The Nacos cluster the instance registered in (Nacos's `DEFAULT` unless `--cluster`).
    #[serde(default = "default_cluster")]
    pub cluster: String,
    /// Metadata, with berth's keys in [`metadata`].
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// Nacos's largest instance weight.
pub const MAX_WEIGHT: f64 = 10_000.0;

/// The cluster Nacos puts an instance in when it names none.
pub const DEFAULT_CLUSTER: &str = "DEFAULT";

/// What a Nacos cluster name may be, for messages: [`is_cluster_name`] checks it.
pub const CLUSTER_RULE: &str = "a Nacos cluster name is 1–64 letters, digits or `-`";

/// Whether `name` is a cluster name Nacos accepts (see [`CLUSTER_RULE`]).
pub fn is_cluster_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

fn default_cluster() -> String {
    DEFAULT_CLUSTER.to_owned()
}

fn one() -> f64 {
    1.0
}

fn yes() -> bool {
    true
}

impl Instance {
    /// A healthy, enabled instance of weight 1 with no metadata.
    pub fn new(addr: SocketAddr) -> Self {
        Instance {
            addr,
            weight: 1.0,
            healthy: true,
            enabled: true,
            cluster: default_cluster(),
            metadata: BTreeMap::new(),
        }
    }

    /// The instance's symbol, if it carries a valid `berth.symbol`.
    pub fn symbol(&self) -> Option<Symbol> {
        self.metadata.get(metadata::SYMBOL)?.parse().ok()
    }

    /// When the instance registered (ms since the epoch), if it says.
    pub fn started_at(&self) -> Option<u64> {
        self.metadata.get(metadata::STARTED_AT)?.parse().ok()
    }

    /// The instance's warm-up window, if it says (`berth.warmup`, in milliseconds).
    pub fn warmup(&self) -> Option<std::time::Duration> {
        self.metadata.get(metadata::WARMUP)?.parse().ok().map(std::time::Duration::from_millis)
    }

    /// The sidecar's admin address (the registered IP and `berth.admin_port`), if it says.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        let port: u16 = self.metadata.get(metadata::ADMIN_PORT)?.parse().ok()?;
        (port != 0).then(|| SocketAddr::new(self.addr.ip(), port))
    }

    /// Whether the instance speaks HTTP/2 with prior knowledge on its port.
    pub fn speaks_h2c(&self) -> bool {
        self.metadata.get(metadata::PROTOCOL).is_some_and(|p| p == "h2c")
    }

    /// Whether the instance's registry weight is its share under the traffic policy
    /// (`berth.weight: policy`), kept by its sidecar for consumers without one.
    pub fn weight_follows_policy(&self) -> bool {
        self.metadata.get(metadata::WEIGHT).is_some_and(|w| w == metadata::WEIGHT_POLICY)
    }

    /// The weight berth's own consumers balance by: the registry's weight, except for an
    /// instance whose registry weight follows the policy — berth's consumers apply the policy
    /// themselves (symbol first, then instances evenly, times warm-up), so they count such an
    /// instance as 1 rather than apply its share twice. That also keeps a weight-0 canary
    /// reachable by `x-berth-symbol`.
    pub fn balance_weight(&self) -> f64 {
        if self.weight_follows_policy() { 1.0 } else { self.weight }
    }

    /// Whether berth's consumers offer this instance traffic at all: healthy, enabled and
    /// weighted by [`Instance::balance_weight`].
    pub fn is_usable(&self) -> bool {
        self.healthy && self.enabled && self.balance_weight() > 0.0
    }
}

impl fmt::Display for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.addr, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_weight_is_not_applied_twice_and_keeps_a_weightless_instance_usable() {
        let mut i = Instance::new("127.0.0.1:1".parse().unwrap());
        i.weight = 0.0;
        assert!(!i.is_usable(), "a plain instance of weight 0 is out of rotation");
        i.metadata.insert(metadata::WEIGHT.into(), metadata::WEIGHT_POLICY.into());
        assert!(i.weight_follows_policy());
        assert_eq!(i.balance_weight(), 1.0);
        assert!(i.is_usable(), "berth's consumers reach it by pin");
        i.weight = 2.5;
        assert_eq!(i.balance_weight(), 1.0);
        i.metadata.insert(metadata::WEIGHT.into(), "fixed".into());
        assert_eq!(i.balance_weight(), 2.5);
    }

    #[test]
    fn the_cluster_defaults_as_in_nacos() {
        let i: Instance = serde_json::from_str(r#"{"addr":"127.0.0.1:1"}"#).unwrap();
        assert_eq!(i.cluster, DEFAULT_CLUSTER);
        assert!(is_cluster_name(DEFAULT_CLUSTER) && is_cluster_name("zone-a1"));
        for bad in ["", "zone_a", "zone a", "zone.a", &"z".repeat(65)] {
            assert!(!is_cluster_name(bad), "{bad:?}");
        }
    }
}
