//! The fleet: every berth sidecar admin can find, and what each one last said.
//!
//! A sidecar registers its admin port as `berth.admin_port`. Every `--scan-interval` the
//! scanner ([`scan`]) lists the registry's services and their instances, asks each sidecar's
//! admin port — read-only routes, no secrets — for `/endpoints` (the services it follows, the
//! policy version it applied to each, how it sees their instances) and `/metrics` (what it
//! sent, unless Prometheus is asked instead), and publishes the result whole as a [`Scan`].
//! Readers ([`propagation`], the traffic window, the event detector) take the latest scan and
//! never wait for a sidecar.
//!
//! Nothing here is shared between admin replicas, and nothing needs to be: each replica scans
//! the same registry and the same sidecars and comes to the same answer. Nor is Prometheus
//! needed. A sidecar that does not answer keeps the last report this replica had of it, so a
//! stopped consumer still counts as a consumer — one that has not applied anything new.

pub mod propagation;
pub mod scan;
pub mod sidecar;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use berth_core::{Instance, Symbol};
use serde::Serialize;
use tokio::sync::watch;

pub use self::propagation::Propagation;

/// One sidecar, as its registration names it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Sidecar {
    /// The service its own app is registered as.
    pub service: String,
    /// Its registered (inbound) address.
    pub instance: SocketAddr,
    /// Its admin address: the registered IP and `berth.admin_port`.
    #[serde(skip)]
    pub admin: SocketAddr,
    /// The symbol it registered with.
    #[serde(skip)]
    pub symbol: Symbol,
    /// When it registered (`berth.started_at`, ms since the epoch), which tells a restart on
    /// the same address from the same instance.
    #[serde(skip)]
    pub started_at: Option<u64>,
}

impl Sidecar {
    /// The sidecar behind a registered instance, if it names its admin port.
    pub fn of(service: &str, i: &Instance) -> Option<Sidecar> {
        Some(Sidecar {
            service: service.to_owned(),
            instance: i.addr,
            admin: i.admin_addr()?,
            symbol: i.symbol().unwrap_or_default(),
            started_at: i.started_at(),
        })
    }
}

/// A service as one consumer sidecar follows it (from its `/endpoints`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Followed {
    /// The policy version it routes by.
    pub version: u64,
    /// Why it rejected the last document it read, if it did.
    pub rejected: Option<String>,
    /// Each instance it knows, with the state it sees it in (`serving`, `warming`,
    /// `draining`, `ejected`).
    pub instances: BTreeMap<SocketAddr, String>,
}

/// What a sidecar said when it last answered.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// When it answered (ms since the epoch).
    pub at_ms: u64,
    /// Every service it follows.
    pub followed: BTreeMap<String, Followed>,
    /// Its outbound counters, when `/metrics` was read.
    pub counters: Option<Arc<crate::traffic::Counters>>,
}

/// A sidecar and what this replica knows of it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub sidecar: Sidecar,
    /// Its report from this scan, or why it did not answer.
    pub now: Result<Arc<Report>, String>,
    /// Its last report, from this scan or an earlier one.
    pub last: Option<Arc<Report>>,
}

/// An instance that left the registry while its sidecar still drains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Departed {
    pub sidecar: Sidecar,
    /// When it was first seen gone from the registry (ms since the epoch).
    pub since_ms: u64,
    /// Its lifecycle as its `/state` says (`draining`), or `gone` once it no longer answers.
    pub lifecycle: String,
}

/// Everything one scan found.
#[derive(Clone, Debug, Default)]
pub struct Scan {
    /// Scans since start; 0 is the empty scan before the first.
    pub number: u64,
    /// When it ended (ms since the epoch).
    pub at_ms: u64,
    /// Every service's registered instances.
    pub instances: BTreeMap<String, Vec<Instance>>,
    /// Every service's stored policy version.
    pub versions: BTreeMap<String, u64>,
    /// Every service's policy version that `policy.changed` events have been published up to
    /// (the version current at the first scan counts).
    pub announced: BTreeMap<String, u64>,
    /// Since when (ms since the epoch) a written version waits for its history entry.
    pub unannounced_since: BTreeMap<String, u64>,
    /// Every sidecar found, in sidecar order.
    pub sidecars: Vec<Seen>,
    /// Instances that left the registry and whose sidecars still drain.
    pub departed: Vec<Departed>,
    /// Why the registry could not be listed, when it could not (the rest is from the scan
    /// before).
    pub registry_error: Option<String>,
}

impl Scan {
    /// Every consumer sidecar's view of `service`'s instances: address → states seen.
    pub fn seen_states(&self, service: &str) -> BTreeMap<SocketAddr, Vec<&str>> {
        let mut states: BTreeMap<SocketAddr, Vec<&str>> = BTreeMap::new();
        for s in &self.sidecars {
            let Ok(report) = &s.now else { continue };
            if let Some(f) = report.followed.get(service) {
                for (addr, state) in &f.instances {
                    states.entry(*addr).or_default().push(state);
                }
            }
        }
        states
    }
}

/// The latest scan, shared by every handler; replaced whole by the scanner.
#[derive(Clone, Debug)]
pub struct Fleet {
    latest: watch::Receiver<Arc<Scan>>,
}

impl Fleet {
    /// A fleet fed by `latest` (the scanner holds the sender).
    pub fn new(latest: watch::Receiver<Arc<Scan>>) -> Fleet {
        Fleet { latest }
    }

    /// The latest scan.
    pub fn latest(&self) -> Arc<Scan> {
        self.latest.borrow().clone()
    }

    /// A receiver that changes on every scan.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Scan>> {
        self.latest.clone()
    }
}
