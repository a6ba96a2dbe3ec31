use std::collections::HashMap;
use std::time::Duration;

use berth_core::metadata;
use berth_core::policy::Policy;

use super::*;
use crate::endpoint::{Ejection, Endpoint, PeerSettings, clock_ms};

struct Req(HashMap<&'static str, &'static str>);

impl RequestView for Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.0.get(name).copied()
    }
    fn cookie(&self, _: &str) -> Option<&str> {
        None
    }
}

fn no_headers() -> Req {
    Req(HashMap::new())
}

fn instance(port: u16, symbol: Option<&str>, started_at: Option<u64>) -> Instance {
    let mut i = Instance::new(SocketAddr::from(([10, 0, 0, 1], port)));
    if let Some(s) = symbol {
        i.metadata.insert(metadata::SYMBOL.into(), s.into());
    }
    if let Some(t) = started_at {
        i.metadata.insert(metadata::STARTED_AT.into(), t.to_string());
        i.metadata.insert(metadata::WARMUP.into(), "10000".into());
    }
    i
}

fn snapshot(instances: &[Instance], policy: &CompiledPolicy) -> Snapshot {
    Snapshot::build(instances, policy, &Snapshot::default(), 30_000)
}

fn shares(snap: &Snapshot, policy: &CompiledPolicy, req: &Req, n: usize, now_ms: u64) -> HashMap<u16, usize> {
    let mut out = HashMap::new();
    for _ in 0..n {
        let ask = Ask { explicit: None, request: req, tried: &[], now_ms, hedge: false, jitter_micros: 0.0 };
        let (i, _) = choose(snap, policy, &ask).unwrap();
        *out.entry(snap.entries[i].endpoint.addr.port()).or_default() += 1;
    }
    out
}

#[test]
fn without_a_policy_everything_goes_to_stable_or_to_all_when_none_has_a_symbol() {
    let policy = CompiledPolicy::fallback();
    let snap = snapshot(&[instance(1, Some("stable"), None), instance(2, Some("canary"), None)], &policy);
    let got = shares(&snap, &policy, &no_headers(), 200, 0);
    assert_eq!(got.get(&1), Some(&200));
    let snap = snapshot(&[instance(1, None, None), instance(2, None, None)], &policy);
    let got = shares(&snap, &policy, &no_headers(), 400, 0);
    assert!(got[&1] > 100 && got[&2] > 100, "{got:?}");
}

#[test]
fn wanted_symbols_and_strict_fallback() {
    // Rules are the route layer's (`crate::lane`): the balancer gets the symbol they picked.
    let policy = Policy::parse(
        r#"{"schema":1,"rules":[{"match":[{"header":"x-beta","exact":"1"}],"symbol":"canary"}]}"#,
    )
    .unwrap();
    let snap = snapshot(&[instance(1, Some("stable"), None), instance(2, Some("canary"), None)], &policy);
    let canary: Symbol = "canary".parse().unwrap();
    let ask = Ask {
        explicit: Some(&canary),
        request: &no_headers(),
        tried: &[],
        now_ms: 0,
        hedge: false,
        jitter_micros: 0.0,
    };
    assert_eq!(snap.entries[choose(&snap, &policy, &ask).unwrap().0].endpoint.addr.port(), 2);
    let blue: Symbol = "blue".parse().unwrap();
    let ask = Ask {
        explicit: Some(&blue),
        request: &no_headers(),
        tried: &[],
        now_ms: 0,
        hedge: false,
        jitter_micros: 0.0,
    };
    let (i, s) = choose(&snap, &policy, &ask).unwrap();
    assert_eq!(
        (snap.entries[i].endpoint.addr.port(), s.as_str()),
        (1, "stable"),
        "falls back to the default"
    );

    let strict = Policy::parse(r#"{"schema":1,"strict":true}"#).unwrap();
    let snap = snapshot(&[instance(1, Some("stable"), None)], &strict);
    let ask = Ask {
        explicit: Some(&blue),
        request: &no_headers(),
        tried: &[],
        now_ms: 0,
        hedge: false,
        jitter_micros: 0.0,
    };
    assert_eq!(choose(&snap, &strict, &ask), Err(NoChoice::StrictSymbol { symbol: blue.clone() }));
}

#[test]
fn draining_and_ejected_instances_are_avoided_but_not_to_the_point_of_failing() {
    let policy = CompiledPolicy::fallback();
    let peer = PeerSettings {
        ejection: Ejection { after: 1, base: Duration::from_secs(60) },
        ..PeerSettings::default()
    };
    let instances = [instance(1, None, None), instance(2, None, None), instance(3, None, None)];
    let snap = Snapshot::build_with(&instances, &policy, &Snapshot::default(), 30_000, &peer);
    snap.entries[0].endpoint.mark_draining();
    assert!(snap.entries[1].endpoint.failure(), "one failure ejects");
    assert_eq!(shares(&snap, &policy, &no_headers(), 100, 0), HashMap::from([(3, 100)]));
    snap.entries[2].endpoint.mark_draining();
    // Only a draining and an ejected one are left: the ejected one may have recovered.
    assert_eq!(shares(&snap, &policy, &no_headers(), 50, 0), HashMap::from([(2, 50)]));
}

#[test]
fn a_new_registration_clears_the_draining_mark() {
    let policy = CompiledPolicy::fallback();
    let first = snapshot(&[instance(1, None, Some(1_000))], &policy);
    first.entries[0].endpoint.mark_draining();
    assert!(first.entries[0].endpoint.is_draining());
    let same = Snapshot::build(&[instance(1, None, Some(1_000))], &policy, &first, 30_000);
    assert!(same.entries[0].endpoint.is_draining(), "same registration");
    let again = Snapshot::build(&[instance(1, None, Some(2_000))], &policy, &same, 30_000);
    assert!(!again.entries[0].endpoint.is_draining(), "registered again");
}

#[test]
fn weights_split_between_symbols() {
    let policy = Policy::parse(r#"{"schema":1,"weights":{"stable":70,"canary":20,"blue":10}}"#).unwrap();
    let snap = snapshot(
        &[
            instance(1, Some("stable"), None),
            instance(2, Some("canary"), None),
            instance(3, Some("blue"), None),
        ],
        &policy,
    );
    let got = shares(&snap, &policy, &no_headers(), 10_000, 0);
    // Binomial, n = 10 000: 5 standard deviations are under 2.5 points for every share here.
    for (port, pct) in [(1, 70.0), (2, 20.0), (3, 10.0)] {
        let share = got[&port] as f64 / 100.0;
        assert!((share - pct).abs() < 2.5, "{port}: {share}% vs {pct}%");
    }
}

#[test]
fn sticky_keeps_a_key_on_one_symbol() {
    let policy =
        Policy::parse(r#"{"schema":1,"weights":{"stable":50,"canary":50},"sticky":{"header":"x-user"}}"#)
            .unwrap();
    let snap = snapshot(&[instance(1, Some("stable"), None), instance(2, Some("canary"), None)], &policy);
    for user in ["alice", "bob", "carol", "dave"] {
        let req = Req(HashMap::from([("x-user", user)]));
        assert_eq!(shares(&snap, &policy, &req, 30, 0).len(), 1, "{user} moved between symbols");
    }
}

#[test]
fn warming_instances_get_a_growing_share_unless_most_are_warming() {
    let policy = CompiledPolicy::fallback();
    let t0 = 1_000_000;
    let instances = [instance(1, None, None), instance(2, None, None), instance(3, None, Some(t0))];
    let snap = snapshot(&instances, &policy);
    let early = shares(&snap, &policy, &no_headers(), 6_000, t0 + 1_000).get(&3).copied().unwrap_or(0);
    let late = shares(&snap, &policy, &no_headers(), 6_000, t0 + 9_000).get(&3).copied().unwrap_or(0);
    let warm = shares(&snap, &policy, &no_headers(), 6_000, t0 + 20_000)[&3];
    // Expected shares: 0.1/2.1 ≈ 5%, 0.9/2.9 ≈ 31%, 1/3 ≈ 33%.
    assert!(early < 600, "{early}");
    assert!((1_600..2_100).contains(&late), "{late}");
    assert!((1_800..2_200).contains(&warm), "{warm}");

    let restart =
        [instance(1, None, Some(t0)), instance(2, None, Some(t0)), instance(3, None, Some(t0 + 5_000))];
    let snap = snapshot(&restart, &policy);
    assert!(!snap.warmup_applies(t0 + 6_000), "all warming: a full restart");
    let got = shares(&snap, &policy, &no_headers(), 6_000, t0 + 6_000);
    assert!(got[&3] > 1_700, "{got:?}");
}

#[test]
fn power_of_two_prefers_the_less_loaded() {
    let policy = CompiledPolicy::fallback();
    let snap = snapshot(&[instance(1, None, None), instance(2, None, None)], &policy);
    let busy: Vec<_> = (0..20).map(|_| snap.entries[0].endpoint.start()).collect();
    let got = shares(&snap, &policy, &no_headers(), 1_000, 0);
    // The two candidates are always distinct: the busy one never wins.
    assert_eq!(got.get(&1), None, "{got:?}");
    drop(busy);
}

#[test]
fn overrides_change_an_instances_symbol_and_tried_instances_are_skipped() {
    let policy =
        Policy::parse(r#"{"schema":1,"default":"canary","overrides":{"10.0.0.1:2":"canary"}}"#).unwrap();
    let snap = snapshot(&[instance(1, Some("canary"), None), instance(2, Some("stable"), None)], &policy);
    let got = shares(&snap, &policy, &no_headers(), 200, 0);
    assert!(got[&1] > 50 && got[&2] > 50, "{got:?}");
    let tried = [SocketAddr::from(([10, 0, 0, 1], 1))];
    let ask = Ask {
        explicit: None,
        request: &no_headers(),
        tried: &tried,
        now_ms: 0,
        hedge: false,
        jitter_micros: 0.0,
    };
    let (i, _) = choose(&snap, &policy, &ask).unwrap();
    assert_eq!(snap.entries[i].endpoint.addr.port(), 2);
    let all = [tried[0], SocketAddr::from(([10, 0, 0, 1], 2))];
    let ask = Ask {
        explicit: None,
        request: &no_headers(),
        tried: &all,
        now_ms: 0,
        hedge: false,
        jitter_micros: 0.0,
    };
    assert_eq!(choose(&snap, &policy, &ask), Err(NoChoice::Exhausted { tried: 2 }));
    let empty = Snapshot::build(&[], &policy, &Snapshot::default(), 0);
    let ask = Ask {
        explicit: None,
        request: &no_headers(),
        tried: &[],
        now_ms: 0,
        hedge: false,
        jitter_micros: 0.0,
    };
    assert_eq!(choose(&empty, &policy, &ask), Err(NoChoice::NoInstances { listed: 0 }));
}

#[test]
fn uneven_weights_within_a_symbol_follow_the_weights() {
    let policy = CompiledPolicy::fallback();
    let (mut light, mut heavy) = (instance(1, None, None), instance(2, None, None));
    light.weight = 1.0;
    heavy.weight = 3.0;
    let snap = snapshot(&[light, heavy], &policy);
    let got = shares(&snap, &policy, &no_headers(), 8_000, 0);
    // With nothing in flight the first pick wins: shares are the weights', 25% and 75%.
    // Binomial, n = 8 000: 5 standard deviations are 2.4 points.
    let share = got[&1] as f64 / 80.0;
    assert!((share - 25.0).abs() < 2.5, "{got:?}");
}

#[test]
fn when_sampling_keeps_missing_the_exact_path_still_finds_the_one_fresh_instance() {
    let policy = CompiledPolicy::fallback();
    let instances: Vec<Instance> = (1..=200).map(|p| instance(p, None, None)).collect();
    let snap = snapshot(&instances, &policy);
    for e in &snap.entries[1..] {
        e.endpoint.mark_draining();
    }
    // One fresh instance in 200: most samples miss, and every choice must still be it.
    assert_eq!(shares(&snap, &policy, &no_headers(), 500, 0), HashMap::from([(1, 500)]));
    let tried: Vec<SocketAddr> = snap.entries[..199].iter().map(|e| e.endpoint.addr).collect();
    let ask = Ask {
        explicit: None,
        request: &no_headers(),
        tried: &tried,
        now_ms: 0,
        hedge: false,
        jitter_micros: 0.0,
    };
    let (i, _) = choose(&snap, &policy, &ask).unwrap();
    assert_eq!(snap.entries[i].endpoint.addr.port(), 200, "only the untried one, draining or not");
}

#[test]
fn sticky_keys_hash_with_fnv1a_to_known_rolls() {
    // 64-bit FNV-1a: the published test vector for "a" is 0xaf63dc4c8601ec8c.
    assert_eq!(0xaf63_dc4c_8601_ec8c_u64 % 100, 96);
    for (key, roll) in [("", 37), ("a", 96), ("user-1", 8), ("alice", 83), ("bob", 92)] {
        assert_eq!(sticky_roll(key), roll, "{key:?}");
    }
    // With 50/50 weights a roll under 50 is the first symbol in alphabetical order: canary.
    let policy =
        Policy::parse(r#"{"schema":1,"weights":{"canary":50,"stable":50},"sticky":{"header":"x-user"}}"#)
            .unwrap();
    let snap = snapshot(&[instance(1, Some("stable"), None), instance(2, Some("canary"), None)], &policy);
    let of = |user: &'static str| {
        let req = Req(HashMap::from([("x-user", user)]));
        shares(&snap, &policy, &req, 1, 0).into_keys().next().unwrap()
    };
    assert_eq!(of("user-1"), 2, "roll 8: canary");
    assert_eq!((of("alice"), of("bob")), (1, 1), "rolls 83 and 92: stable");
}

#[test]
fn the_two_candidates_are_distinct_and_the_faster_wins() {
    let policy = CompiledPolicy::fallback();
    let snap =
        snapshot(&[instance(1, None, None), instance(2, None, None), instance(3, None, None)], &policy);
    // Instance 1 answered slowly once: peak-EWMA takes the peak at once.
    let mut slow = snap.entries[0].endpoint.start();
    std::thread::sleep(Duration::from_millis(30));
    slow.answered();
    drop(slow);
    let got = shares(&snap, &policy, &no_headers(), 3_000, 0);
    // With draws that could repeat, it would win whenever both land on it (1/9 of the time).
    assert_eq!(got.get(&1), None, "a slow instance loses every comparison: {got:?}");
    assert!(got[&2] > 1_200 && got[&3] > 1_200, "{got:?}");
}

#[test]
fn load_is_latency_times_requests_in_flight() {
    let policy = CompiledPolicy::fallback();
    let snap = snapshot(&[instance(1, None, None), instance(2, None, None)], &policy);
    let (a, b) = (&snap.entries[0].endpoint, &snap.entries[1].endpoint);
    let now = clock_ms();
    assert_eq!(a.load(now), b.load(now), "equal before any answer");
    let held: Vec<_> = (0..3).map(|_| a.start()).collect();
    assert!((a.load(now) - 4.0 * b.load(now)).abs() < 1e-6, "three in flight: four times the load");
    drop(held);
    // The estimate decays: a second later it is a third of what it was (e⁻¹).
    let later = now + 1_000;
    assert!((a.rtt_micros(later) / a.rtt_micros(now) - (-1.0f64).exp()).abs() < 1e-3);
}

#[test]
fn a_symbol_whose_instances_are_all_ejected_goes_to_the_default_symbol() {
    let policy = CompiledPolicy::fallback();
    let peer = PeerSettings {
        ejection: Ejection { after: 1, base: Duration::from_secs(60) },
        ..PeerSettings::default()
    };
    let instances = [instance(1, Some("stable"), None), instance(2, Some("canary"), None)];
    let snap = Snapshot::build_with(&instances, &policy, &Snapshot::default(), 30_000, &peer);
    assert!(snap.entries[1].endpoint.failure());
    let canary: Symbol = "canary".parse().unwrap();
    let ask = Ask {
        explicit: Some(&canary),
        request: &no_headers(),
        tried: &[],
        now_ms: 0,
        hedge: false,
        jitter_micros: 0.0,
    };
    let (i, symbol) = choose(&snap, &policy, &ask).unwrap();
    assert_eq!((snap.entries[i].endpoint.addr.port(), symbol.as_str()), (1, "stable"));
    // A strict policy keeps to the symbol, ejected or not.
    let strict = Policy::parse(r#"{"schema":1,"strict":true}"#).unwrap();
    let snap = Snapshot::build_with(&instances, &strict, &Snapshot::default(), 30_000, &peer);
    assert!(snap.entries[1].endpoint.failure());
    let (i, _) = choose(&snap, &strict, &ask).unwrap();
    assert_eq!(snap.entries[i].endpoint.addr.port(), 2);
}

#[test]
fn ejections_double_up_to_ten_times_and_a_success_resets_them() {
    let e = Ejection { after: 2, base: Duration::from_secs(5) };
    let lengths: Vec<u64> = (0..7).map(|n| e.length(n).as_secs()).collect();
    assert_eq!(lengths, [5, 10, 20, 40, 50, 50, 50]);
    let peer = PeerSettings { ejection: e, ..PeerSettings::default() };
    let endpoint = Endpoint::instance(SocketAddr::from(([10, 0, 0, 1], 1)), true, 0, peer);
    assert!(!endpoint.failure(), "one failure of two");
    assert!(endpoint.failure());
    let first = endpoint.ejected_for();
    assert!(first > Duration::from_secs(4) && first <= Duration::from_secs(5), "{first:?}");
    assert!(!endpoint.failure());
    assert!(endpoint.failure(), "ejected again");
    let second = endpoint.ejected_for();
    assert!(second > Duration::from_secs(9) && second <= Duration::from_secs(10), "{second:?}");
    endpoint.success();
    assert!(!endpoint.is_ejected(), "an answer ends the ejection");
    assert!(!endpoint.failure());
    assert!(endpoint.failure());
    assert!(endpoint.ejected_for() <= Duration::from_secs(5), "and the back-off starts over");
}

#[test]
fn a_hedge_stays_on_its_symbol_and_only_goes_to_a_healthy_instance() {
    let policy = Policy::parse(r#"{"schema":1,"weights":{"stable":50,"canary":50}}"#).unwrap();
    let instances = [
        instance(1, Some("stable"), None),
        instance(2, Some("canary"), None),
        instance(3, Some("canary"), None),
    ];
    let snap = snapshot(&instances, &policy);
    let canary: Symbol = "canary".parse().unwrap();
    let first = [SocketAddr::from(([10, 0, 0, 1], 2))];
    let hedge = Ask {
        explicit: Some(&canary),
        request: &no_headers(),
        tried: &first,
        now_ms: 0,
        hedge: true,
        jitter_micros: 0.0,
    };
    for _ in 0..50 {
        let (i, symbol) = choose(&snap, &policy, &hedge).unwrap();
        assert_eq!((snap.entries[i].endpoint.addr.port(), symbol.as_str()), (3, "canary"));
    }
    snap.entries[2].endpoint.mark_draining();
    assert_eq!(
        choose(&snap, &policy, &hedge),
        Err(NoChoice::Exhausted { tried: 1 }),
        "never to stable, nor to one draining"
    );
    // A retry, unlike a hedge, may go to the default symbol when its own has nothing left.
    let retry = Ask { hedge: false, ..hedge };
    let (i, _) = choose(&snap, &policy, &retry).unwrap();
    assert_eq!(snap.entries[i].endpoint.addr.port(), 1);
}
