//! How long the outbound balancer takes to choose an instance: `balance::choose` on snapshots
//! of 10, 1,000 and 10,000 instances, for three shapes of a service:
//!
//! - **no policy**: every instance `stable`, the built-in policy;
//! - **weighted 90/10**: a policy splitting 90/10 between `stable` and `canary`, one instance
//!   in ten a canary;
//! - **10% warming**: no policy, one instance in ten registered 5 s ago with a 30 s warm-up, so
//!   warm-up applies and shares are scaled.
//!
//! `cargo bench -p berth-proxy --bench choice` (`benches/run.sh` runs it too). A plain loop
//! timed with `Instant`: a warm-up, then several repetitions of about 100 ms each; the table
//! shows the median ns per call. Nothing is asserted: this is a measurement a person reads.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use berth_core::policy::{CompiledPolicy, Policy, RequestView};
use berth_core::{Instance, metadata};
use berth_proxy::outbound::balance::{Ask, Snapshot, choose};

const SIZES: [usize; 3] = [10, 1_000, 10_000];
const REPETITIONS: usize = 9;
const REPETITION_TIME: Duration = Duration::from_millis(100);
const WARMUP_TIME: Duration = Duration::from_millis(200);

/// A request without headers: no rule matches, no stickiness.
struct NoHeaders;

impl RequestView for NoHeaders {
    fn header(&self, _: &str) -> Option<&str> {
        None
    }
    fn cookie(&self, _: &str) -> Option<&str> {
        None
    }
}

/// One shape of a service: its policy and how its `n`-th instance looks.
struct Case {
    name: &'static str,
    policy: CompiledPolicy,
    canary: fn(usize) -> bool,
    warming: fn(usize) -> bool,
}

fn every_tenth(n: usize) -> bool {
    n.is_multiple_of(10)
}

fn never(_: usize) -> bool {
    false
}

fn cases() -> Vec<Case> {
    let weighted = Policy::parse(r#"{"schema":1,"weights":{"stable":90,"canary":10}}"#)
        .unwrap_or_else(|e| panic!("the benchmark's policy is valid: {e}"));
    vec![
        Case { name: "no policy", policy: CompiledPolicy::fallback(), canary: never, warming: never },
        Case { name: "weighted 90/10", policy: weighted, canary: every_tenth, warming: never },
        Case { name: "10% warming", policy: CompiledPolicy::fallback(), canary: never, warming: every_tenth },
    ]
}

fn snapshot(case: &Case, size: usize, now_ms: u64) -> Snapshot {
    let instances: Vec<Instance> = (0..size)
        .map(|n| {
            let [a, b] = u16::try_from(n).unwrap_or(u16::MAX).to_be_bytes();
            let mut i = Instance::new(SocketAddr::from(([10, 1, a, b], 8080)));
            let symbol = if (case.canary)(n) { "canary" } else { "stable" };
            i.metadata.insert(metadata::SYMBOL.into(), symbol.into());
            // Warm instances registered an hour ago; warming ones 5 s into a 30 s warm-up.
            let age_ms = if (case.warming)(n) { 5_000 } else { 3_600_000 };
            i.metadata.insert(metadata::STARTED_AT.into(), (now_ms - age_ms).to_string());
            i.metadata.insert(metadata::WARMUP.into(), "30000".into());
            i
        })
        .collect();
    Snapshot::build(&instances, &case.policy, &Snapshot::default(), 30_000)
}

/// Median ns per `choose` call over [`REPETITIONS`] timed loops.
fn measure(snapshot: &Snapshot, policy: &CompiledPolicy, now_ms: u64) -> f64 {
    let ask =
        Ask { explicit: None, request: &NoHeaders, tried: &[], now_ms, hedge: false, jitter_micros: 0.0 };
    let run = |iterations: u64| {
        let start = Instant::now();
        for _ in 0..iterations {
            let _ = black_box(choose(black_box(snapshot), policy, &ask));
        }
        start.elapsed()
    };
    // Warm caches and the branch predictor, and learn how many calls fill one repetition.
    let (mut iterations, mut spent) = (1u64, Duration::ZERO);
    while spent < WARMUP_TIME {
        spent = run(iterations);
        iterations *= 2;
    }
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let per_rep =
        ((iterations / 2) as f64 * REPETITION_TIME.as_secs_f64() / spent.as_secs_f64()).max(1.0) as u64;
    let mut samples: Vec<f64> = (0..REPETITIONS)
        .map(|_| {
            #[allow(clippy::cast_precision_loss)]
            let ns = run(per_rep).as_nanos() as f64 / per_rep as f64;
            ns
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported, so ignore them all.
    let now_ms = berth_core::now_millis();
    let cases = cases();
    println!("berth_proxy::outbound::balance::choose, median ns per call ({REPETITIONS} repetitions)");
    println!();
    let header: Vec<&str> = cases.iter().map(|c| c.name).collect();
    println!("| instances | {} |", header.join(" | "));
    println!("|---:|{}", "---:|".repeat(cases.len()));
    for size in SIZES {
        let cells: Vec<String> = cases
            .iter()
            .map(|case| {
                let snap = snapshot(case, size, now_ms);
                format!("{:.0}", measure(&snap, &case.policy, now_ms))
            })
            .collect();
        println!("| {size} | {} |", cells.join(" | "));
    }
}
