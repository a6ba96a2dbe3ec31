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
    /// Metadata, with berth's keys in [`metadata`].
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
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
        Instance { addr, weight: 1.0, healthy: true, enabled: true, metadata: BTreeMap::new() }
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

    /// Whether the registry offers this instance for traffic at all.
    pub fn is_usable(&self) -> bool {
        self.healthy && self.enabled && self.weight > 0.0
    }
}

impl fmt::Display for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.addr, f)
    }
}
