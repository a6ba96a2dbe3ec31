//! A sidecar's outbound counters, read from its Prometheus text: requests by service, symbol
//! and status class, and the latency histogram's buckets when the sidecar exports it.

use std::collections::BTreeMap;

/// `berth_outbound_requests_total{service, symbol, status_class}`.
pub const REQUESTS: &str = "berth_outbound_requests_total";
/// `berth_outbound_request_duration_seconds{service, symbol}` (a histogram, to response headers).
pub const DURATION: &str = "berth_outbound_request_duration_seconds";

/// One sidecar's outbound counters at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counters {
    /// `(service, symbol, status_class)` → requests so far.
    pub requests: BTreeMap<(String, String, String), f64>,
    /// `(service, symbol)` → the histogram's cumulative buckets `(le, count)`, by `le`.
    pub buckets: BTreeMap<(String, String), Vec<(f64, f64)>>,
}

impl Counters {
    /// Reads the two metrics out of Prometheus text; every other line is skipped.
    pub fn parse(text: &str) -> Counters {
        let mut c = Counters::default();
        let bucket = format!("{DURATION}_bucket");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, labels, value)) = sample(line) else { continue };
            let label = |k: &str| labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            let (Some(service), Some(symbol)) = (label("service"), label("symbol")) else { continue };
            if name == REQUESTS {
                let class = label("status_class").unwrap_or_default();
                *c.requests.entry((service, symbol, class)).or_default() += value;
            } else if name == bucket {
                let le = match label("le").as_deref() {
                    Some("+Inf") => f64::INFINITY,
                    Some(v) => match v.parse() {
                        Ok(le) => le,
                        Err(_) => continue,
                    },
                    None => continue,
                };
                c.buckets.entry((service, symbol)).or_default().push((le, value));
            }
        }
        for b in c.buckets.values_mut() {
            b.sort_by(|x, y| x.0.total_cmp(&y.0));
        }
        c
    }
}

/// A sample line's labels, in order.
type Labels = Vec<(String, String)>;

/// `name{k="v",…} value` → its parts; `None` for anything else.
fn sample(line: &str) -> Option<(&str, Labels, f64)> {
    let Some(open) = line.find('{') else {
        let (name, value) = line.split_once(' ')?;
        return Some((name, Vec::new(), number(value)?));
    };
    let name = &line[..open];
    let mut labels = Vec::new();
    let mut rest = &line[open + 1..];
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if let Some(after) = rest.strip_prefix('}') {
            return Some((name, labels, number(after)?));
        }
        // A label: name, `="`, a value with `\"`, `\\` and `\n` escapes, `"`.
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        labels.push((key.trim().to_owned(), value));
        rest = &after[end + 1..];
    }
}

/// The value of a sample line (a timestamp may follow it).
fn number(s: &str) -> Option<f64> {
    match s.split_whitespace().next()? {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        v => v.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_requests_and_buckets_and_skips_the_rest() {
        let text = r#"# HELP berth_outbound_requests_total Outbound requests.
# TYPE berth_outbound_requests_total counter
berth_outbound_requests_total{service="users",status_class="2xx",symbol="canary"} 7
berth_outbound_requests_total{service="users",status_class="5xx",symbol="canary"} 1
berth_outbound_requests_total{service="users",status_class="2xx",symbol="stable"} 40 1700000000000
berth_requests_total{direction="inbound",status_class="2xx"} 99
berth_outbound_request_duration_seconds_bucket{service="users",symbol="stable",le="0.01"} 30
berth_outbound_request_duration_seconds_bucket{service="users",symbol="stable",le="+Inf"} 40
berth_outbound_request_duration_seconds_bucket{service="users",symbol="stable",le="0.005"} 10
berth_outbound_request_duration_seconds_sum{service="users",symbol="stable"} 0.3
berth_outbound_requests_total{service="we\"ird,}",status_class="2xx",symbol="stable",} 2
berth_build_info{version="0.1.0"} 1
"#;
        let c = Counters::parse(text);
        let key = |s: &str, sym: &str, class: &str| (s.to_owned(), sym.to_owned(), class.to_owned());
        assert_eq!(c.requests[&key("users", "canary", "2xx")], 7.0);
        assert_eq!(c.requests[&key("users", "canary", "5xx")], 1.0);
        assert_eq!(c.requests[&key("users", "stable", "2xx")], 40.0);
        assert_eq!(c.requests[&key("we\"ird,}", "stable", "2xx")], 2.0);
        assert_eq!(c.requests.len(), 4);
        assert_eq!(
            c.buckets[&("users".to_owned(), "stable".to_owned())],
            [(0.005, 10.0), (0.01, 30.0), (f64::INFINITY, 40.0)]
        );
        assert_eq!(
            Counters::parse("garbage {{{\nberth_outbound_requests_total{service=\"a\"} x\n"),
            Counters::default()
        );
    }
}
