//! Slow start, as every berth consumer applies it — and as admin reports it.
//!
//! A newly registered instance's weight ramps up over its warm-up window (`berth.warmup`, else
//! the consumer's `--warmup`), from [`MIN_FACTOR`] to 1 by its age since `berth.started_at`.
//! The ramp is skipped while most of a service's usable instances are warming (a full restart
//! or a first rollout): slowing them all down would only pile the load onto the few warm ones,
//! or, with none warm, change nothing but the order they started in. The sidecars' balancer
//! and Nacos weights and admin's `effective_weight` decide it with these functions, so that
//! what admin shows is what the sidecars do.

use std::time::Duration;

use crate::Instance;

/// The lowest share a warming instance gets, relative to a warm one.
pub const MIN_FACTOR: f64 = 0.05;

/// Whether an instance registered at `started_at` (ms since the epoch) with a warm-up of
/// `window_ms` is still warming at `now_ms`. One that does not say when it started is warm.
#[inline]
pub fn is_warming(started_at: Option<u64>, window_ms: u64, now_ms: u64) -> bool {
    started_at.is_some_and(|s| window_ms > 0 && now_ms < s.saturating_add(window_ms))
}

/// Its warm-up factor at `now_ms`: its age over the window, at least [`MIN_FACTOR`]; 1 once
/// warm.
#[inline]
pub fn factor(started_at: Option<u64>, window_ms: u64, now_ms: u64) -> f64 {
    match started_at {
        Some(s) if is_warming(started_at, window_ms, now_ms) => {
            #[allow(clippy::cast_precision_loss)]
            let f = now_ms.saturating_sub(s) as f64 / window_ms as f64;
            f.max(MIN_FACTOR)
        }
        _ => 1.0,
    }
}

/// Whether the ramp applies to a service now, with `warming` of its `usable` instances
/// warming: some are, but not most of them.
#[inline]
pub fn applies(warming: usize, usable: usize) -> bool {
    warming > 0 && warming * 2 <= usable
}

/// [`applies`] for the instances a registry lists: counted among the usable ones (healthy,
/// enabled, weighted for berth's consumers), each warming by its own `berth.warmup`, else by
/// `default_window`.
pub fn applies_to(instances: &[Instance], default_window: Duration, now_ms: u64) -> bool {
    let usable = instances.iter().filter(|i| i.is_usable());
    let (mut count, mut warming) = (0, 0);
    for i in usable {
        count += 1;
        warming += usize::from(is_warming(i.started_at(), window_ms(i, default_window), now_ms));
    }
    applies(warming, count)
}

/// The warm-up window of `i` in ms: its own `berth.warmup`, else `default_window`.
pub fn window_ms(i: &Instance, default_window: Duration) -> u64 {
    u64::try_from(i.warmup().unwrap_or(default_window).as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata;

    fn registered(port: u16, started_at: u64, warmup_ms: Option<u64>) -> Instance {
        let mut i = Instance::new(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
        i.metadata.insert(metadata::STARTED_AT.into(), started_at.to_string());
        if let Some(w) = warmup_ms {
            i.metadata.insert(metadata::WARMUP.into(), w.to_string());
        }
        i
    }

    #[test]
    fn the_factor_ramps_from_the_floor_to_one_over_the_window() {
        assert_eq!(factor(Some(1_000), 10_000, 1_000), MIN_FACTOR, "just registered");
        assert_eq!(factor(Some(1_000), 10_000, 6_000), 0.5);
        assert_eq!(factor(Some(1_000), 10_000, 11_000), 1.0, "warm");
        assert_eq!(factor(None, 10_000, 6_000), 1.0, "no start time: warm");
        assert_eq!(factor(Some(1_000), 0, 1_000), 1.0, "no window: warm");
        assert_eq!(factor(Some(9_000), 10_000, 1_000), MIN_FACTOR, "registered in the future (skew)");
        assert!(is_warming(Some(1_000), 10_000, 10_999) && !is_warming(Some(1_000), 10_000, 11_000));
    }

    #[test]
    fn the_ramp_is_skipped_while_most_of_the_service_warms() {
        assert!(!applies(0, 3), "nobody warming");
        assert!(applies(1, 3) && applies(2, 4), "a rolling update");
        assert!(!applies(2, 3) && !applies(3, 3), "most warming: a full restart");
        let now = 100_000;
        let warm = registered(1, 0, Some(1_000));
        let new = registered(2, now - 1_000, None);
        assert!(applies_to(&[warm.clone(), warm.clone(), new.clone()], Duration::from_secs(30), now));
        assert!(!applies_to(&[warm.clone(), new.clone(), new.clone()], Duration::from_secs(30), now));
        assert!(
            !applies_to(&[warm.clone(), new.clone()], Duration::from_millis(500), now),
            "its window is over"
        );
        // Only usable instances count: an unhealthy warm one does not make the new one a minority.
        let mut sick = warm.clone();
        sick.healthy = false;
        assert!(!applies_to(&[warm, sick, new.clone(), new], Duration::from_secs(30), now));
    }
}
