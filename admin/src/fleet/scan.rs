//! The scanner: every interval, the registry's services, instances and policy versions, then
//! every sidecar's report, published whole; then the traffic kept and the events found.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use berth_core::Instance;
use berth_core::registry::Registry;
use futures_util::StreamExt;
use tokio::sync::watch;

use super::sidecar::SidecarClient;
use super::{Departed, Report, Scan, Seen, Sidecar};
use crate::events::Events;
use crate::store::Store;
use crate::traffic::Traffic;

/// How many services, and how many sidecars, are asked at once.
const CONCURRENCY: usize = 16;
/// How long a departed instance's drain is followed at most.
const DEPARTED_FOR_MS: u64 = 10 * 60_000;

/// What the scanner reads and where it puts what it found.
#[derive(Debug)]
pub struct Scanner {
    pub registry: Arc<dyn Registry>,
    pub store: Store,
    pub client: SidecarClient,
    pub traffic: Traffic,
    pub events: Events,
    pub metrics: crate::metrics::Metrics,
    pub interval: Duration,
    /// Whether to read each sidecar's `/metrics` (not when Prometheus gives the traffic).
    pub read_metrics: bool,
    pub latest: watch::Sender<Arc<Scan>>,
}

/// The registry's view: instances and policy versions per service.
type Listed = (BTreeMap<String, Vec<Instance>>, BTreeMap<String, u64>);

impl Scanner {
    /// Scans every interval until `stop` fires.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let prev = self.latest.borrow().clone();
            let mut next = self.scan(&prev).await;
            self.keep_traffic(&next);
            let answered = next.sidecars.iter().filter(|s| s.now.is_ok()).count();
            self.metrics.scan(answered, next.sidecars.len() - answered);
            // The first scan is the baseline: what it finds is no change.
            let events = match prev.number {
                0 => {
                    next.announced = next.versions.clone();
                    Vec::new()
                }
                _ => crate::events::detect::changes(&prev, &mut next, &self.store).await,
            };
            for event in events {
                self.events.publish(event);
            }
            self.latest.send_replace(Arc::new(next));
        }
    }

    /// One scan.
    pub async fn scan(&self, prev: &Scan) -> Scan {
        let (listed, registry_error) = match self.list().await {
            Ok(l) => (l, None),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the registry; keeping the last scan's instances");
                ((prev.instances.clone(), prev.versions.clone()), Some(e))
            }
        };
        let (instances, versions) = listed;
        let mut sidecars: Vec<Sidecar> =
            instances.iter().flat_map(|(s, is)| is.iter().filter_map(|i| Sidecar::of(s, i))).collect();
        sidecars.sort();
        let last: HashMap<SocketAddr, Arc<Report>> =
            prev.sidecars.iter().filter_map(|s| Some((s.sidecar.instance, s.last.clone()?))).collect();
        let metrics = self.read_metrics;
        let seen: Vec<Seen> = futures_util::stream::iter(sidecars)
            .map(|sidecar| {
                let last = last.get(&sidecar.instance).cloned();
                async move {
                    let now = self.client.report(sidecar.admin, metrics).await.map(Arc::new);
                    let last = now.as_ref().ok().cloned().or(last);
                    Seen { sidecar, now, last }
                }
            })
            .buffered(CONCURRENCY)
            .collect()
            .await;
        let departed = self.departed(prev, &instances).await;
        Scan {
            number: prev.number + 1,
            at_ms: berth_core::now_millis(),
            instances,
            versions,
            // Filled in by the event detector.
            announced: BTreeMap::new(),
            unannounced_since: BTreeMap::new(),
            sidecars: seen,
            departed,
            registry_error,
        }
    }

    /// Every service's instances and policy version.
    async fn list(&self) -> Result<Listed, String> {
        let names = self.registry.services().await.map_err(|e| e.to_string())?;
        type Row = (String, Vec<Instance>, u64);
        let rows: Vec<Result<Row, String>> = futures_util::stream::iter(names)
            .map(|name| async move {
                let instances = self.registry.instances(&name).await.map_err(|e| e.to_string())?;
                let version = self.store.read(&name).await.map_err(|e| e.detail)?.version;
                Ok((name, instances, version))
            })
            .buffered(CONCURRENCY)
            .collect()
            .await;
        let mut listed = Listed::default();
        for (name, instances, version) in rows.into_iter().collect::<Result<Vec<_>, _>>()? {
            listed.1.insert(name.clone(), version);
            listed.0.insert(name, instances);
        }
        Ok(listed)
    }

    /// Sidecars whose instance left the registry and that still drain: just gone, or followed
    /// since, until they stop answering or say `stopped`.
    async fn departed(&self, prev: &Scan, now: &BTreeMap<String, Vec<Instance>>) -> Vec<Departed> {
        let registered =
            |s: &Sidecar| now.get(&s.service).is_some_and(|is| is.iter().any(|i| i.addr == s.instance));
        let at = berth_core::now_millis();
        let just_gone = prev.sidecars.iter().map(|s| Departed {
            sidecar: s.sidecar.clone(),
            since_ms: at,
            lifecycle: String::new(),
        });
        let followed = prev.departed.iter().filter(|d| d.since_ms + DEPARTED_FOR_MS > at).cloned();
        let candidates: Vec<Departed> =
            followed.chain(just_gone).filter(|d| !registered(&d.sidecar)).fold(Vec::new(), |mut v, d| {
                if !v.iter().any(|x: &Departed| x.sidecar.instance == d.sidecar.instance) {
                    v.push(d);
                }
                v
            });
        futures_util::stream::iter(candidates)
            .map(|mut d| async move {
                let lifecycle = self.client.lifecycle(d.sidecar.admin).await.ok()?;
                (lifecycle != berth_core::Lifecycle::Stopped.as_str()).then(|| {
                    d.lifecycle = lifecycle;
                    d
                })
            })
            .buffered(CONCURRENCY)
            .filter_map(std::future::ready)
            .collect()
            .await
    }

    /// Keeps each answering sidecar's counters for the traffic window.
    fn keep_traffic(&self, scan: &Scan) {
        let reports = scan
            .sidecars
            .iter()
            .filter_map(|s| {
                let r = s.now.as_ref().ok()?;
                Some((s.sidecar.instance, r.at_ms, r.counters.clone()?))
            })
            .collect();
        self.traffic.record(scan.at_ms, reports);
    }
}
