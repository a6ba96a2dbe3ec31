//! The arithmetic of a window: counter increases, sums over sidecars, histogram quantiles.

use std::collections::BTreeMap;

use super::{Counters, SymbolTraffic, Window};

/// The increase of each counter from `old` to `new`; a counter that went down belongs to a
/// restarted sidecar, and its new value is the increase.
pub fn increase<K: Ord + Clone>(old: &BTreeMap<K, f64>, new: &BTreeMap<K, f64>) -> Vec<(K, f64)> {
    new.iter()
        .map(|(k, v)| {
            let before = old.get(k).copied().unwrap_or(0.0);
            (k.clone(), if *v >= before { v - before } else { *v })
        })
        .filter(|(_, n)| *n > 0.0)
        .collect()
}

/// The increase of cumulative buckets, matched by `le`.
fn bucket_increase(old: Option<&Vec<(f64, f64)>>, new: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let before = |le: f64| old.and_then(|o| o.iter().find(|(l, _)| *l == le)).map_or(0.0, |(_, c)| *c);
    let reset = new.last().map(|(_, c)| *c) < old.and_then(|o| o.last()).map(|(_, c)| *c);
    new.iter().map(|(le, c)| (*le, if reset { *c } else { (c - before(*le)).max(0.0) })).collect()
}

/// Adds `inc` into `sum`, bucket by bucket.
fn add_buckets(sum: &mut Vec<(f64, f64)>, inc: &[(f64, f64)]) {
    for (le, c) in inc {
        match sum.iter_mut().find(|(l, _)| l == le) {
            Some(e) => e.1 += c,
            None => sum.push((*le, *c)),
        }
    }
    sum.sort_by(|a, b| a.0.total_cmp(&b.0));
}

/// The `q` quantile of cumulative buckets `(le, count)` sorted by `le`, interpolated within
/// the bucket as Prometheus's `histogram_quantile` does; `None` without observations.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut prev_le, mut prev_count) = (0.0, 0.0);
    for (le, count) in buckets {
        if *count >= rank {
            if le.is_infinite() {
                return Some(prev_le);
            }
            let width = count - prev_count;
            let into = if width > 0.0 { (rank - prev_count) / width } else { 1.0 };
            return Some(prev_le + (le - prev_le) * into);
        }
        (prev_le, prev_count) = (*le, *count);
    }
    Some(prev_le)
}

#[derive(Default)]
struct Acc {
    rps: f64,
    requests: f64,
    failed: f64,
    buckets: Vec<(f64, f64)>,
}

/// `service`'s window from each sidecar's `(seconds, oldest, newest)` counters.
pub fn of<'a>(
    service: &str,
    pairs: impl Iterator<Item = (f64, &'a Counters, &'a Counters)>,
    targets: &BTreeMap<String, f64>,
) -> Window {
    let mut per: BTreeMap<String, Acc> = BTreeMap::new();
    let mut seconds: f64 = 0.0;
    for (secs, old, new) in pairs {
        seconds = seconds.max(secs);
        for ((s, symbol, class), n) in increase(&old.requests, &new.requests) {
            if s == service {
                let a = per.entry(symbol).or_default();
                a.rps += n / secs;
                a.requests += n;
                a.failed += if class == "5xx" { n } else { 0.0 };
            }
        }
        for ((s, symbol), b) in new.buckets.iter().filter(|((s, _), _)| s == service) {
            let inc = bucket_increase(old.buckets.get(&(s.clone(), symbol.clone())), b);
            add_buckets(&mut per.entry(symbol.clone()).or_default().buckets, &inc);
        }
    }
    let total: f64 = per.values().map(|a| a.requests).sum();
    let mut symbols: BTreeMap<String, SymbolTraffic> = targets
        .iter()
        .map(|(s, t)| (s.clone(), SymbolTraffic { target_share: *t, ..SymbolTraffic::default() }))
        .collect();
    for (symbol, a) in per {
        let t = symbols.entry(symbol).or_default();
        t.rps = a.rps;
        t.requests = a.requests.round() as u64;
        t.success_rate = (a.requests > 0.0).then(|| 1.0 - a.failed / a.requests);
        t.p50_ms = quantile(0.5, &a.buckets).map(|s| s * 1000.0);
        t.p99_ms = quantile(0.99, &a.buckets).map(|s| s * 1000.0);
        t.observed_share = (total > 0.0).then(|| a.requests / total);
    }
    Window { source: "sidecars", seconds, symbols, error: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(rows: &[(&str, &str, f64)], buckets: &[(&str, &[(f64, f64)])]) -> Counters {
        Counters {
            requests: rows
                .iter()
                .map(|(symbol, class, n)| (("users".into(), (*symbol).into(), (*class).into()), *n))
                .collect(),
            buckets: buckets.iter().map(|(s, b)| (("users".into(), (*s).into()), b.to_vec())).collect(),
        }
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let b = [(0.01, 50.0), (0.1, 90.0), (1.0, 100.0), (f64::INFINITY, 100.0)];
        assert_eq!(quantile(0.5, &b), Some(0.01));
        assert!((quantile(0.7, &b).unwrap() - 0.055).abs() < 1e-9);
        assert!((quantile(0.99, &b).unwrap() - 0.91).abs() < 1e-9);
        assert_eq!(quantile(0.5, &[(0.1, 0.0), (f64::INFINITY, 0.0)]), None);
        assert_eq!(quantile(0.99, &[(0.1, 1.0), (f64::INFINITY, 10.0)]), Some(0.1), "beyond the last bound");
    }

    #[test]
    fn a_window_sums_sidecars_and_takes_a_restart_as_the_increase() {
        let a_old = counters(&[("stable", "2xx", 100.0), ("canary", "2xx", 10.0)], &[]);
        let a_new = counters(
            &[("stable", "2xx", 190.0), ("canary", "2xx", 18.0), ("canary", "5xx", 2.0)],
            &[("stable", &[(0.01, 60.0), (f64::INFINITY, 90.0)])],
        );
        // The second sidecar restarted: its counters went down.
        let b_old = counters(&[("stable", "2xx", 500.0)], &[]);
        let b_new =
            counters(&[("stable", "2xx", 90.0)], &[("stable", &[(0.01, 30.0), (f64::INFINITY, 90.0)])]);
        let targets = BTreeMap::from([("stable".into(), 0.9), ("canary".into(), 0.1), ("blue".into(), 0.0)]);
        let w = of("users", [(10.0, &a_old, &a_new), (30.0, &b_old, &b_new)].into_iter(), &targets);
        assert_eq!(w.seconds, 30.0);
        let (stable, canary) = (&w.symbols["stable"], &w.symbols["canary"]);
        assert_eq!((stable.requests, canary.requests), (180, 10));
        assert!((stable.rps - (9.0 + 3.0)).abs() < 1e-9, "{stable:?}");
        assert_eq!(canary.success_rate, Some(0.8));
        assert_eq!(stable.success_rate, Some(1.0));
        assert!((canary.observed_share.unwrap() - 10.0 / 190.0).abs() < 1e-9);
        assert_eq!((canary.target_share, stable.target_share), (0.1, 0.9));
        assert!(stable.p50_ms.unwrap() > 0.0 && stable.p99_ms.unwrap() >= stable.p50_ms.unwrap());
        assert_eq!(canary.p50_ms, None, "no histogram, no latency");
        assert_eq!(w.symbols["blue"].observed_share, None, "a target without traffic");
    }
}
