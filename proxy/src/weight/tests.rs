use std::collections::BTreeMap;

use berth_core::policy::Policy;
use berth_core::{Instance, metadata};

use super::*;

fn symbol(s: &str) -> Symbol {
    s.parse().unwrap()
}

fn policy(json: &str) -> CompiledPolicy {
    Policy::parse(json).unwrap()
}

fn weights(pairs: &[(&str, u32)]) -> CompiledPolicy {
    let weights: BTreeMap<String, u32> = pairs.iter().map(|(s, w)| ((*s).to_owned(), *w)).collect();
    policy(&serde_json::json!({"schema": 1, "weights": weights}).to_string())
}

/// The share of each instance of `fleet` (symbols, one per instance).
fn shares(policy: &CompiledPolicy, fleet: &[&str]) -> Vec<f64> {
    let symbols: Vec<Symbol> = fleet.iter().map(|s| symbol(s)).collect();
    let refs: Vec<&Symbol> = symbols.iter().collect();
    symbols.iter().map(|s| share(policy, &refs, s)).collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn without_a_policy_stable_has_everything_and_a_canary_nothing() {
    let got = shares(&CompiledPolicy::fallback(), &["stable", "stable", "canary"]);
    assert!(close(got[0], 0.5) && close(got[1], 0.5) && got[2] == 0.0, "{got:?}");
}

#[test]
fn a_symbol_weight_is_divided_among_its_instances_not_by_instance_count() {
    // One canary among three instances: 10%, not a third.
    let p = weights(&[("stable", 90), ("canary", 10)]);
    let got = shares(&p, &["stable", "stable", "canary"]);
    assert!(close(got[0], 0.45) && close(got[1], 0.45) && close(got[2], 0.10), "{got:?}");
    assert!(close(got.iter().sum::<f64>(), 1.0));
    // Promote: the promoted symbol gets everything.
    let promoted = policy(r#"{"schema":1,"default":"canary","weights":{"canary":100}}"#);
    let got = shares(&promoted, &["stable", "stable", "canary"]);
    assert_eq!(got, [0.0, 0.0, 1.0]);
}

#[test]
fn a_symbol_without_instances_leaves_its_share_to_the_default_as_berths_consumers_fall_back() {
    let p = weights(&[("stable", 50), ("canary", 30), ("blue", 20)]);
    let got = shares(&p, &["stable", "canary"]);
    assert!(close(got[0], 0.70) && close(got[1], 0.30), "{got:?}");
    // No default instance either: everyone shares what is left, as berth picks any instance.
    let got = shares(&weights(&[("blue", 60), ("canary", 40)]), &["green", "canary"]);
    assert!(close(got[0], 0.30) && close(got[1], 0.70), "{got:?}");
    // Strict: those requests fail at berth's consumers; nobody gets their share.
    let strict = policy(r#"{"schema":1,"strict":true,"weights":{"stable":50,"blue":50}}"#);
    let got = shares(&strict, &["stable", "stable"]);
    assert!(close(got[0], 0.25) && close(got[1], 0.25), "{got:?}");
}

#[test]
fn nacos_weights_scale_an_average_share_to_the_scale_and_round_but_never_to_zero() {
    // 3 instances, an average share (1/3) weighs the scale.
    assert_eq!(nacos_weight(1.0 / 3.0, 3, 1.0, 1.0), 1.0);
    assert_eq!(nacos_weight(0.45, 3, 1.0, 1.0), 1.35);
    assert_eq!(nacos_weight(0.10, 3, 1.0, 1.0), 0.3);
    assert_eq!(nacos_weight(0.10, 3, 1.0, 100.0), 30.0);
    // Warm-up multiplies.
    assert_eq!(nacos_weight(0.5, 2, 0.25, 1.0), 0.25);
    // Rounded to a thousandth of the scale; a tiny share keeps the smallest weight.
    assert_eq!(nacos_weight(0.123_456, 1, 1.0, 1.0), 0.123);
    assert_eq!(nacos_weight(0.000_001, 2, 0.05, 1.0), 0.001);
    // No share, no weight; never above Nacos's largest.
    assert_eq!(nacos_weight(0.0, 3, 1.0, 1.0), 0.0);
    assert_eq!(nacos_weight(1.0, 500, 1.0, 100.0), MAX_WEIGHT);
}

#[test]
fn tiny_changes_are_skipped_but_any_change_to_or_from_zero_is_not() {
    assert!(!worth_updating(1.0, 1.0));
    assert!(!worth_updating(1.0, 1.04));
    assert!(worth_updating(1.0, 1.05));
    assert!(worth_updating(1.0, 0.9));
    assert!(worth_updating(0.0, 0.001));
    assert!(worth_updating(0.3, 0.0));
}

fn registered(port: u16, symbol: &str, started_at: u64, warmup_ms: u64) -> Instance {
    let mut i = Instance::new(SocketAddr::from(([10, 0, 0, 1], port)));
    i.metadata.insert(metadata::SYMBOL.into(), symbol.into());
    i.metadata.insert(metadata::STARTED_AT.into(), started_at.to_string());
    i.metadata.insert(metadata::WARMUP.into(), warmup_ms.to_string());
    i.metadata.insert(metadata::WEIGHT.into(), metadata::WEIGHT_POLICY.into());
    // Whatever weight the registry holds now, the computation must not feed on it.
    i.weight = 7.0;
    i
}

fn keeper(port: u16, symbol_: &str) -> Keeper {
    Keeper {
        service: None,
        scale: 1.0,
        me: SocketAddr::from(([10, 0, 0, 1], port)),
        symbol: symbol(symbol_),
        warmup: Duration::from_secs(10),
    }
}

fn view(instances: &[Instance], policy: &CompiledPolicy) -> Snapshot {
    Snapshot::build(instances, policy, &Snapshot::default(), 30_000)
}

#[test]
fn the_keeper_weighs_its_instance_by_the_view_not_by_the_weights_in_the_registry() {
    let p = weights(&[("stable", 90), ("canary", 10)]);
    let fleet = [registered(1, "stable", 0, 0), registered(2, "stable", 0, 0), registered(3, "canary", 0, 0)];
    let snap = view(&fleet, &p);
    assert_eq!(keeper(1, "stable").desired_in(&snap, &p, 0, 1_000), 1.35);
    assert_eq!(keeper(3, "canary").desired_in(&snap, &p, 0, 1_000), 0.3);
    // A policy override moves the instance to another symbol.
    let moved =
        policy(r#"{"schema":1,"weights":{"stable":90,"canary":10},"overrides":{"10.0.0.1:2":"canary"}}"#);
    let snap = view(&fleet, &moved);
    assert_eq!(keeper(2, "stable").desired_in(&snap, &moved, 0, 1_000), 0.15);
    assert_eq!(keeper(1, "stable").desired_in(&snap, &moved, 0, 1_000), 2.7);
}

#[test]
fn a_warming_instance_ramps_as_berths_consumers_ramp_it_unless_most_of_the_service_warms() {
    let p = CompiledPolicy::fallback();
    let now = 100_000;
    let fleet = [
        registered(1, "stable", 0, 0),
        registered(2, "stable", 0, 0),
        registered(3, "stable", now - 2_500, 10_000),
    ];
    let snap = view(&fleet, &p);
    let k = keeper(3, "stable");
    let ramp: Vec<f64> = [0, 2_500, 5_000, 9_999, 10_000]
        .iter()
        .map(|t| k.desired_in(&snap, &p, 0, now - 2_500 + t))
        .collect();
    assert_eq!(ramp, [0.05, 0.25, 0.5, 1.0, 1.0], "the ramp rounds to a thousandth");
    // Two of three warming: berth's consumers skip the ramp, and so does the weight.
    let restart = [
        registered(1, "stable", 0, 0),
        registered(2, "stable", now, 10_000),
        registered(3, "stable", now, 10_000),
    ];
    let snap = view(&restart, &p);
    assert_eq!(k.desired_in(&snap, &p, now, now + 1_000), 1.0);
}

#[test]
fn an_instance_not_listed_yet_counts_itself_in_and_ramps_by_its_age() {
    let p = weights(&[("stable", 90), ("canary", 10)]);
    let snap = view(&[registered(1, "stable", 0, 0), registered(2, "stable", 0, 0)], &p);
    // Registering now: a third of the service, 10% share, at the start of its ramp.
    assert_eq!(keeper(3, "canary").desired_in(&snap, &p, 50_000, 50_000), 0.015);
    assert_eq!(keeper(3, "canary").desired_in(&snap, &p, 50_000, 60_000), 0.3);
    // A third stable one without warm-up: no canary runs, so stable has all, a third each.
    let unramped = Keeper { warmup: Duration::ZERO, ..keeper(3, "stable") };
    assert_eq!(unramped.desired_in(&snap, &p, 0, 0), 1.0);
}

#[test]
fn a_fixed_weight_stays_one() {
    let k = keeper(1, "canary");
    assert!(!k.follows_policy());
    assert_eq!(k.desired(0, 0), 1.0);
}
