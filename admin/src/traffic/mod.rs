//! Observed traffic per service and symbol over the last minute: requests per second, success
//! rate, p50/p99 latency and the share each symbol got — what the consumers' sidecars sent.
//!
//! Without Prometheus, each scan's `/metrics` of every sidecar is kept for a minute
//! ([`Traffic::record`]); a window is the difference between each sidecar's newest and oldest
//! kept counters, summed over the sidecars (a counter that went down is a restarted sidecar:
//! its new value is the increase, as Prometheus's `rate` takes it). Latency needs the sidecars'
//! `berth_outbound_request_duration_seconds` histogram; without it p50/p99 are absent. With
//! `--prometheus URL`, [`prometheus`] asks a Prometheus that scrapes the sidecars instead.

pub mod counters;
pub mod prometheus;
mod window;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde::Serialize;

pub use self::counters::Counters;
pub use self::window::quantile;

/// How far back a window looks, in milliseconds.
pub const WINDOW_MS: u64 = 60_000;
/// How far back the error-rate series of a service goes, in milliseconds.
pub const SERIES_MS: u64 = 60 * 60_000;

/// One symbol's traffic over the window.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SymbolTraffic {
    /// Requests per second.
    pub rps: f64,
    /// Requests counted.
    pub requests: u64,
    /// The share of requests not answered 5xx, 0 to 1 (absent without requests).
    pub success_rate: Option<f64>,
    /// Median latency to response headers, ms (absent without the histogram).
    pub p50_ms: Option<f64>,
    /// 99th percentile latency, ms.
    pub p99_ms: Option<f64>,
    /// Its share of the service's requests, 0 to 1.
    pub observed_share: Option<f64>,
    /// Its share under the policy's weights (the default symbol's 1 without weights), 0 to 1.
    pub target_share: f64,
}

/// A service's traffic over the window.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Window {
    /// `sidecars` (their `/metrics`, read by admin itself: no Prometheus needed) or
    /// `prometheus` (`--prometheus URL`).
    pub source: &'static str,
    /// How many seconds the numbers cover (less than 60 while admin has just started).
    pub seconds: f64,
    /// Per symbol, every symbol that had traffic or a target.
    pub symbols: BTreeMap<String, SymbolTraffic>,
    /// Why the numbers are missing, when they are (Prometheus unreachable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One point of a service's error-rate series.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Point {
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// Requests per second since the point before.
    pub rps: f64,
    /// The share of those answered 5xx, 0 to 1.
    pub error_rate: f64,
}

/// The counters kept per sidecar, and each service's error-rate series.
#[derive(Clone, Debug, Default)]
pub struct Traffic {
    inner: Arc<Mutex<Kept>>,
}

#[derive(Debug, Default)]
struct Kept {
    /// Per sidecar (its registered address): `(at_ms, counters)`, oldest first.
    samples: HashMap<SocketAddr, VecDeque<(u64, Arc<Counters>)>>,
    /// Per service: its series, oldest first.
    series: HashMap<String, VecDeque<Point>>,
}

impl Traffic {
    /// Keeps the counters of one scan (`(sidecar, at_ms, counters)`) and extends each
    /// service's series by the increase since the scan before.
    pub fn record(&self, now_ms: u64, reports: Vec<(SocketAddr, u64, Arc<Counters>)>) {
        let mut kept = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut step: BTreeMap<String, (f64, f64, f64)> = BTreeMap::new();
        for (sidecar, at_ms, counters) in reports {
            let q = kept.samples.entry(sidecar).or_default();
            if let Some((prev_at, prev)) = q.back().filter(|(t, _)| *t < at_ms) {
                let secs = (at_ms - prev_at) as f64 / 1000.0;
                for ((service, _, class), n) in window::increase(&prev.requests, &counters.requests) {
                    let e = step.entry(service).or_default();
                    e.0 += n;
                    e.1 += if class == "5xx" { n } else { 0.0 };
                    e.2 = e.2.max(secs);
                }
            }
            q.push_back((at_ms, counters));
            while q.front().is_some_and(|(t, _)| *t + WINDOW_MS + 5_000 < at_ms) {
                q.pop_front();
            }
        }
        kept.samples.retain(|_, q| q.back().is_some_and(|(t, _)| *t + 2 * WINDOW_MS > now_ms));
        for (service, (requests, failed, secs)) in step {
            let point = Point {
                at_ms: now_ms,
                rps: if secs > 0.0 { requests / secs } else { 0.0 },
                error_rate: if requests > 0.0 { failed / requests } else { 0.0 },
            };
            let s = kept.series.entry(service).or_default();
            s.push_back(point);
            while s.front().is_some_and(|p| p.at_ms + SERIES_MS < now_ms) {
                s.pop_front();
            }
        }
    }

    /// `service`'s traffic over the last minute, with `targets` (symbol → share) filled in.
    pub fn window(&self, service: &str, now_ms: u64, targets: &BTreeMap<String, f64>) -> Window {
        let kept = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let pairs = kept.samples.values().filter_map(|q| {
            let (newest_at, newest) = q.back()?;
            let (oldest_at, oldest) = q.iter().find(|(t, _)| *t + WINDOW_MS >= *newest_at)?;
            (*newest_at + WINDOW_MS > now_ms && oldest_at < newest_at)
                .then(|| ((*newest_at - oldest_at) as f64 / 1000.0, oldest.as_ref(), newest.as_ref()))
        });
        window::of(service, pairs, targets)
    }

    /// `service`'s error-rate series, oldest first.
    pub fn series(&self, service: &str) -> Vec<Point> {
        let kept = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        kept.series.get(service).map(|s| s.iter().copied().collect()).unwrap_or_default()
    }
}

/// Each symbol's target share under `policy`: its weight, or all to the default symbol.
pub fn targets(policy: &berth_core::policy::Policy) -> BTreeMap<String, f64> {
    if policy.weights.is_empty() {
        return BTreeMap::from([(policy.default.to_string(), 1.0)]);
    }
    policy.weights.iter().map(|(s, w)| (s.to_string(), f64::from(*w) / 100.0)).collect()
}
