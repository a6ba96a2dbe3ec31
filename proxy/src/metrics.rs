//! The sidecar's Prometheus metrics, served as text on the admin port's `/metrics`.
//!
//! Names are prefixed `berth_` and carry their unit; labels are bounded (direction, status
//! class, lifecycle state, and later service and symbol), never paths or instance ids.

use berth_core::Lifecycle;
use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Every metric of the sidecar.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// `berth_requests_total{direction, status_class}`.
    pub requests: IntCounterVec,
    /// `berth_request_duration_seconds{direction}`: until the response headers.
    pub request_duration: HistogramVec,
    /// `berth_requests_in_flight{direction}`: until the response body ends.
    pub in_flight: IntGaugeVec,
    /// `berth_connections_open{direction}`.
    pub connections: IntGaugeVec,
    /// `berth_lifecycle_state{state}`: 1 for the current state, 0 for the others.
    pub lifecycle: IntGaugeVec,
    /// `berth_registrations_total`.
    pub registrations: IntCounter,
    /// `berth_registration_failures_total`.
    pub registration_failures: IntCounter,
    /// `berth_deregistrations_total`.
    pub deregistrations: IntCounter,
    /// `berth_drain_deregistration_seconds`: from drain start to deregistration.
    pub drain_deregistration: Gauge,
    /// `berth_drain_requests_total`: requests received while draining.
    pub drain_requests: IntCounter,
    /// `berth_drain_duration_seconds`: from drain start to its end (or so far).
    pub drain_duration: Gauge,
    /// `berth_drain_signal_ignored_total`: requests received while draining from a peer that
    /// had been sent the read-only signal (a consumer without a sidecar, or with a stale cache).
    pub drain_signal_ignored: IntCounter,
    /// `berth_nacos_weight`: the weight this instance is registered with.
    pub nacos_weight: Gauge,
    /// `berth_nacos_weight_updates_total{result}`: re-registrations for a new weight (`ok`,
    /// `failed`).
    pub nacos_weight_updates: IntCounterVec,
    /// `berth_outbound_requests_total{service, symbol, status_class}`.
    pub outbound_requests: IntCounterVec,
    /// `berth_outbound_request_duration_seconds{service, symbol}`: until the response headers.
    pub outbound_duration: HistogramVec,
    /// `berth_outbound_grpc_responses_total{service, symbol, grpc_status}`: gRPC answers.
    pub outbound_grpc: IntCounterVec,
    /// `berth_outbound_retries_total{service, reason}`: attempts sent again to another
    /// instance (`reason`: what the failed attempt saw) or hedged (`hedge`).
    pub outbound_retries: IntCounterVec,
    /// `berth_outbound_ejections_total{service}`.
    pub outbound_ejections: IntCounterVec,
    /// `berth_outbound_lane_fallbacks_total{service}`: requests whose lane the service had no
    /// usable instance of, answered by another symbol (its default).
    pub outbound_lane_fallbacks: IntCounterVec,
    /// `berth_outbound_readonly_signals_total{service}`: responses that said "draining".
    pub readonly_signals: IntCounterVec,
    /// `berth_outbound_instances{service, symbol, state}`: as this sidecar sees them.
    pub outbound_instances: IntGaugeVec,
    /// `berth_policy_version{service}`: the traffic policy version in use.
    pub policy_version: IntGaugeVec,
    /// `berth_policy_rejections_total{service}`: invalid policies rejected.
    pub policy_rejections: IntCounterVec,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    // Registration fails only for a duplicate name, which the names below rule out.
    if let Err(e) = registry.register(Box::new(metric.clone())) {
        tracing::error!(error = %e, "metric registration failed");
    }
    metric
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
        let r = &registry;
        // Metric definitions are constants: `expect` states that they are well formed.
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            register(r, IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            register(r, IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
        };
        let counter =
            |name: &str, help: &str| register(r, IntCounter::new(name, help).expect("valid metric"));
        let gauge = |name: &str, help: &str| register(r, Gauge::new(name, help).expect("valid metric"));
        let buckets =
            vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
        let request_duration = register(
            r,
            HistogramVec::new(
                HistogramOpts::new(
                    "berth_request_duration_seconds",
                    "Time from request to response headers.",
                )
                .buckets(buckets),
                &["direction"],
            )
            .expect("valid metric"),
        );
        let outbound_duration = register(
            r,
            HistogramVec::new(
                HistogramOpts::new(
                    "berth_outbound_request_duration_seconds",
                    "Outbound requests' time to response headers, retries and hedges included.",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ]),
                &["service", "symbol"],
            )
            .expect("valid metric"),
        );
        let build = register(
            r,
            IntGaugeVec::new(Opts::new("berth_build_info", "berth's version."), &["version"])
                .expect("valid metric"),
        );
        build.with_label_values(&[berth_core::VERSION]).set(1);
        let metrics = Metrics {
            requests: counter_vec(
                "berth_requests_total",
                "Requests by direction and status class.",
                &["direction", "status_class"],
            ),
            request_duration,
            in_flight: gauge_vec(
                "berth_requests_in_flight",
                "Requests whose response has not ended.",
                &["direction"],
            ),
            connections: gauge_vec("berth_connections_open", "Open client connections.", &["direction"]),
            lifecycle: gauge_vec(
                "berth_lifecycle_state",
                "1 for the sidecar's current lifecycle state.",
                &["state"],
            ),
            registrations: counter("berth_registrations_total", "Successful registrations in the registry."),
            registration_failures: counter(
                "berth_registration_failures_total",
                "Failed registration attempts (each is retried).",
            ),
            deregistrations: counter("berth_deregistrations_total", "Successful deregistrations."),
            drain_deregistration: gauge(
                "berth_drain_deregistration_seconds",
                "Time from the start of the drain to the deregistration.",
            ),
            drain_requests: counter("berth_drain_requests_total", "Requests received while draining."),
            drain_duration: gauge(
                "berth_drain_duration_seconds",
                "Time from the start of the drain to its end.",
            ),
            drain_signal_ignored: counter(
                "berth_drain_signal_ignored_total",
                "Requests received while draining from peers already sent the read-only signal.",
            ),
            nacos_weight: gauge("berth_nacos_weight", "The weight this instance is registered with."),
            nacos_weight_updates: counter_vec(
                "berth_nacos_weight_updates_total",
                "Re-registrations for a new Nacos weight, by result.",
                &["result"],
            ),
            outbound_requests: counter_vec(
                "berth_outbound_requests_total",
                "Outbound requests by service, symbol and status class.",
                &["service", "symbol", "status_class"],
            ),
            outbound_duration,
            outbound_grpc: counter_vec(
                "berth_outbound_grpc_responses_total",
                "Outbound gRPC answers by grpc-status, berth's own included.",
                &["service", "symbol", "grpc_status"],
            ),
            outbound_retries: counter_vec(
                "berth_outbound_retries_total",
                "Outbound requests sent again to another instance, by what the failed attempt saw, or hedged.",
                &["service", "reason"],
            ),
            outbound_ejections: counter_vec(
                "berth_outbound_ejections_total",
                "Instances ejected after failures.",
                &["service"],
            ),
            outbound_lane_fallbacks: counter_vec(
                "berth_outbound_lane_fallbacks_total",
                "Outbound requests whose lane had no usable instance in the service and went to another symbol.",
                &["service"],
            ),
            readonly_signals: counter_vec(
                "berth_outbound_readonly_signals_total",
                "Responses carrying the read-only signal (the instance drains).",
                &["service"],
            ),
            outbound_instances: gauge_vec(
                "berth_outbound_instances",
                "Instances of each followed service by symbol and state.",
                &["service", "symbol", "state"],
            ),
            policy_version: gauge_vec(
                "berth_policy_version",
                "Version of the traffic policy in use.",
                &["service"],
            ),
            policy_rejections: counter_vec(
                "berth_policy_rejections_total",
                "Traffic policies rejected as invalid (the last good one is kept).",
                &["service"],
            ),
            registry,
        };
        metrics.set_lifecycle(Lifecycle::Starting);
        metrics
    }

    /// Marks `now` as the current lifecycle state.
    pub fn set_lifecycle(&self, now: Lifecycle) {
        for l in Lifecycle::ALL {
            self.lifecycle.with_label_values(&[l.as_str()]).set(i64::from(l == now));
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The `status_class` label values.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The index in [`STATUS_CLASSES`] of a status code's class.
pub fn class_index(status: http::StatusCode) -> usize {
    usize::from(status.as_u16() / 100).clamp(1, 5) - 1
}

/// `2xx`, `4xx`, … for a status code.
pub fn status_class(status: http::StatusCode) -> &'static str {
    STATUS_CLASSES[class_index(status)]
}
