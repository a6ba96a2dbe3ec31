//! The same traffic numbers from a Prometheus that scrapes the sidecars (`--prometheus URL`),
//! for fleets too large for admin to read every sidecar's `/metrics`: PromQL over its HTTP API.
//!
//! - requests: `sum by (symbol, status_class) (increase(berth_outbound_requests_total{service="S"}[1m]))`
//! - latency: `histogram_quantile(q, sum by (symbol, le) (rate(berth_outbound_request_duration_seconds_bucket{service="S"}[1m])))`
//! - the error-rate series: the 5xx share of `rate(…[1m])` over the last hour, one point a
//!   minute (`query_range`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::counters::{DURATION, REQUESTS};
use super::{Point, SymbolTraffic, Window};

/// A Prometheus server's HTTP API.
#[derive(Clone, Debug)]
pub struct Prometheus {
    base: reqwest::Url,
    http: reqwest::Client,
}

/// One sample of an instant vector: its labels and value.
type Sample = (BTreeMap<String, String>, f64);

impl Prometheus {
    pub fn new(base: reqwest::Url, timeout: Duration) -> Result<Prometheus, reqwest::Error> {
        let http = reqwest::Client::builder().no_proxy().timeout(timeout).build()?;
        Ok(Prometheus { base, http })
    }

    async fn get(&self, path: &str, params: &[(&str, String)]) -> Result<Value, String> {
        let mut url = self.base.join(path).map_err(|e| e.to_string())?;
        url.query_pairs_mut().extend_pairs(params);
        let resp = self.http.get(url).send().await.map_err(|e| crate::fleet::sidecar::describe(&e))?;
        let status = resp.status();
        let doc: Value = resp.json().await.map_err(|e| crate::fleet::sidecar::describe(&e))?;
        if !status.is_success() || doc["status"] != "success" {
            return Err(format!(
                "Prometheus answered {}: {}",
                status.as_u16(),
                doc["error"].as_str().unwrap_or("?")
            ));
        }
        Ok(doc["data"]["result"].clone())
    }

    /// An instant query's samples.
    async fn query(&self, promql: String) -> Result<Vec<Sample>, String> {
        let result = self.get("api/v1/query", &[("query", promql)]).await?;
        Ok(result.as_array().into_iter().flatten().filter_map(sample).collect())
    }

    /// `service`'s last minute, as [`super::Traffic::window`] gives it from the sidecars.
    pub async fn window(&self, service: &str, targets: &BTreeMap<String, f64>) -> Window {
        match self.try_window(service, targets).await {
            Ok(w) => w,
            Err(e) => Window { source: "prometheus", error: Some(e), ..Window::default() },
        }
    }

    async fn try_window(&self, service: &str, targets: &BTreeMap<String, f64>) -> Result<Window, String> {
        let requests =
            format!(r#"sum by (symbol, status_class) (increase({REQUESTS}{{service="{service}"}}[1m]))"#);
        let quantile = |q: f64| {
            format!(
                r#"histogram_quantile({q}, sum by (symbol, le) (rate({DURATION}_bucket{{service="{service}"}}[1m])))"#
            )
        };
        let (requests, p50, p99) =
            tokio::try_join!(self.query(requests), self.query(quantile(0.5)), self.query(quantile(0.99)))?;
        let mut symbols: BTreeMap<String, SymbolTraffic> = targets
            .iter()
            .map(|(s, t)| (s.clone(), SymbolTraffic { target_share: *t, ..SymbolTraffic::default() }))
            .collect();
        let mut failed: BTreeMap<String, f64> = BTreeMap::new();
        for (labels, n) in &requests {
            let symbol = labels.get("symbol").cloned().unwrap_or_default();
            let t = symbols.entry(symbol.clone()).or_default();
            t.rps += n / 60.0;
            if labels.get("status_class").is_some_and(|c| c == "5xx") {
                *failed.entry(symbol).or_default() += n;
            }
        }
        let total: f64 = symbols.values().map(|t| t.rps * 60.0).sum();
        for (symbol, t) in &mut symbols {
            let n = t.rps * 60.0;
            t.requests = n.round() as u64;
            t.success_rate = (n > 0.0).then(|| 1.0 - failed.get(symbol).copied().unwrap_or(0.0) / n);
            t.observed_share = (total > 0.0).then(|| n / total);
            let find = |v: &[Sample]| {
                v.iter()
                    .find(|(l, _)| l.get("symbol") == Some(symbol))
                    .map(|(_, s)| s * 1000.0)
                    .filter(|x| x.is_finite())
            };
            (t.p50_ms, t.p99_ms) = (find(&p50), find(&p99));
        }
        Ok(Window { source: "prometheus", seconds: 60.0, symbols, error: None })
    }

    /// The error rate over the last hour, one point a minute.
    pub async fn series(&self, service: &str) -> Result<Vec<Point>, String> {
        let rate = |extra: &str| format!(r#"sum(rate({REQUESTS}{{service="{service}"{extra}}}[1m]))"#);
        let now = berth_core::now_millis() / 1000;
        let range = |q: String| {
            let params = [
                ("query", q),
                ("start", (now - 3600).to_string()),
                ("end", now.to_string()),
                ("step", "60".into()),
            ];
            async move { self.get("api/v1/query_range", &params).await }
        };
        let (all, bad) = tokio::try_join!(range(rate("")), range(rate(r#",status_class="5xx""#)))?;
        let values = |v: &Value| -> BTreeMap<u64, f64> {
            v[0]["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| Some((p[0].as_f64()? as u64, p[1].as_str()?.parse().ok()?)))
                .collect()
        };
        let bad = values(&bad);
        Ok(values(&all)
            .into_iter()
            .map(|(t, rps)| {
                let failed = bad.get(&t).copied().unwrap_or(0.0);
                Point { at_ms: t, rps, error_rate: if rps > 0.0 { failed / rps } else { 0.0 } }
            })
            .collect())
    }
}

/// `{"metric": {…}, "value": [ts, "1.5"]}` → labels and value.
fn sample(v: &Value) -> Option<Sample> {
    let labels = v["metric"]
        .as_object()?
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
        .collect();
    let value = match v["value"][1].as_str()? {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        s => s.parse().ok()?,
    };
    Some((labels, value))
}
