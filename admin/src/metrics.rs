//! Admin's Prometheus metrics, served as text on `/metrics`.
//!
//! Names are prefixed `berth_admin_` and carry their unit; labels are bounded: the route
//! template (never the raw path), the method, the status class, an outcome, a service.

use std::time::Duration;

use http::{Method, StatusCode};
use prometheus::core::Collector;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::api::ApiError;

/// Every metric of admin.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    /// `berth_admin_requests_total{route, method, status_class}`.
    requests: IntCounterVec,
    /// `berth_admin_request_duration_seconds{route}`.
    duration: HistogramVec,
    /// `berth_admin_policy_writes_total{outcome}`: `written`, `unchanged` (nothing to write),
    /// `conflict` (412) or `invalid` (422).
    policy_writes: IntCounterVec,
    /// `berth_admin_history_write_failures_total`: policies written whose history entry was not.
    history_failures: IntCounter,
    /// `berth_admin_auth_failures_total{reason}`: `unauthenticated` (401) or `read_only` (403).
    auth_failures: IntCounterVec,
    /// `berth_admin_zombie_instances{service}`: zombies found by the last check of a service.
    zombies: IntGaugeVec,
    /// `berth_admin_webhook_deliveries_total{outcome}`: `delivered`, `failed` (an attempt) or
    /// `dropped` (every attempt failed).
    webhooks: IntCounterVec,
    /// `berth_admin_events_total{type}`: events published.
    events: IntCounterVec,
    /// `berth_admin_scans_total`: scans of the registry and the sidecars.
    scans: IntCounter,
    /// `berth_admin_sidecars{answer}`: sidecars found by the last scan, by whether they answered.
    sidecars: IntGaugeVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    #[allow(clippy::expect_used)]
    pub fn new() -> Self {
        let registry = Registry::new();
        // The definitions are constants with distinct names: `expect` states they are valid.
        fn add<C: Collector + Clone + 'static>(registry: &Registry, c: Result<C, prometheus::Error>) -> C {
            let c = c.expect("valid, unique metric definition");
            registry.register(Box::new(c.clone())).expect("valid, unique metric definition");
            c
        }
        let r = &registry;
        let build =
            add(r, IntGaugeVec::new(Opts::new("berth_admin_build_info", "berth's version."), &["version"]));
        build.with_label_values(&[berth_core::VERSION]).set(1);
        let buckets = vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
        Metrics {
            requests: add(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "berth_admin_requests_total",
                        "API requests by route, method and status class.",
                    ),
                    &["route", "method", "status_class"],
                ),
            ),
            duration: add(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "berth_admin_request_duration_seconds",
                        "Time to answer an API request.",
                    )
                    .buckets(buckets),
                    &["route"],
                ),
            ),
            policy_writes: add(
                r,
                IntCounterVec::new(
                    Opts::new("berth_admin_policy_writes_total", "Policy changes by outcome."),
                    &["outcome"],
                ),
            ),
            history_failures: add(
                r,
                IntCounter::new(
                    "berth_admin_history_write_failures_total",
                    "Policy versions written but not recorded in the history.",
                ),
            ),
            auth_failures: add(
                r,
                IntCounterVec::new(
                    Opts::new("berth_admin_auth_failures_total", "Requests refused for their token."),
                    &["reason"],
                ),
            ),
            zombies: add(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "berth_admin_zombie_instances",
                        "Zombies found by the last check of a service.",
                    ),
                    &["service"],
                ),
            ),
            webhooks: add(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "berth_admin_webhook_deliveries_total",
                        "Webhook delivery attempts by outcome.",
                    ),
                    &["outcome"],
                ),
            ),
            events: add(
                r,
                IntCounterVec::new(
                    Opts::new("berth_admin_events_total", "Events published by type."),
                    &["type"],
                ),
            ),
            scans: add(
                r,
                IntCounter::new("berth_admin_scans_total", "Scans of the registry and the sidecars."),
            ),
            sidecars: add(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "berth_admin_sidecars",
                        "Sidecars found by the last scan, by whether they answered.",
                    ),
                    &["answer"],
                ),
            ),
            registry,
        }
    }

    /// Counts and times one answered request.
    pub fn observe(&self, route: &str, method: &Method, status: StatusCode, took: Duration) {
        let class = format!("{}xx", status.as_u16() / 100);
        self.requests.with_label_values(&[route, method.as_str(), &class]).inc();
        self.duration.with_label_values(&[route]).observe(took.as_secs_f64());
    }

    /// Counts a policy write by outcome.
    pub fn policy_write(&self, outcome: &str) {
        self.policy_writes.with_label_values(&[outcome]).inc();
    }

    pub fn history_failure(&self) {
        self.history_failures.inc();
    }

    pub fn auth_failure(&self, e: &ApiError) {
        self.auth_failures.with_label_values(&[e.auth_reason()]).inc();
    }

    pub fn zombies(&self, service: &str, count: usize) {
        self.zombies.with_label_values(&[service]).set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn webhook(&self, outcome: &str) {
        self.webhooks.with_label_values(&[outcome]).inc();
    }

    pub fn event(&self, kind: &str) {
        self.events.with_label_values(&[kind]).inc();
    }

    /// Counts a scan and how many sidecars answered it.
    pub fn scan(&self, answered: usize, silent: usize) {
        self.scans.inc();
        let n = |c: usize| i64::try_from(c).unwrap_or(i64::MAX);
        self.sidecars.with_label_values(&["yes"]).set(n(answered));
        self.sidecars.with_label_values(&["no"]).set(n(silent));
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}
