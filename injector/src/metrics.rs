//! The injector's Prometheus metrics, served as text on `GET /metrics`.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric of the injector.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// `berth_injector_injections_total{result}`: reviews by what became of the pod
    /// (`injected`, `not_opted_in`, `opted_out`, `excluded_namespace`, `already_injected`,
    /// `host_network`, `denied`, `error`, `invalid`, `ignored`).
    pub injections: IntCounterVec,
    /// `berth_injector_review_duration_seconds`: from the request's body to the answer.
    pub review_duration: Histogram,
    /// `berth_injector_tls_reloads_total{result}`: certificate changes seen, `ok` or `error`.
    pub tls_reloads: IntCounterVec,
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
        // The definitions below are constants: `expect` states that they are well formed and
        // their names distinct.
        let counter_vec = |name: &str, help: &str, label: &str| {
            let m = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric");
            registry.register(Box::new(m.clone())).expect("distinct metric names");
            m
        };
        let injections = counter_vec(
            "berth_injector_injections_total",
            "Admission reviews by what became of the pod.",
            "result",
        );
        let tls_reloads = counter_vec(
            "berth_injector_tls_reloads_total",
            "Certificate file changes seen, by result.",
            "result",
        );
        let review_duration = Histogram::with_opts(
            HistogramOpts::new(
                "berth_injector_review_duration_seconds",
                "Time to answer one admission review.",
            )
            .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]),
        )
        .expect("valid metric");
        registry.register(Box::new(review_duration.clone())).expect("distinct metric names");
        let build =
            IntGaugeVec::new(Opts::new("berth_injector_build_info", "berth's version."), &["version"])
                .expect("valid metric");
        registry.register(Box::new(build.clone())).expect("distinct metric names");
        build.with_label_values(&[berth_core::VERSION]).set(1);
        Metrics { registry, injections, review_duration, tls_reloads }
    }

    /// Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}
