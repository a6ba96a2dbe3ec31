use std::net::SocketAddr;
use std::time::Duration;

use super::*;

fn addr() -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], 80))
}

fn reset() -> Error {
    Error::Reset { addr: addr(), detail: "connection reset".into() }
}

fn refused() -> Error {
    Error::Connect { addr: addr(), detail: "connection refused".into() }
}

/// A budget of 20% of requests and no floor: every fifth request earns one retry.
fn policy(failover: bool) -> Policy {
    let hedging = Hedging { min_delay: Duration::from_millis(50), max_delay: Duration::from_secs(1) };
    Policy::with_budget(BudgetSettings { ratio: 0.2, min_per_second: 0 }, failover, Some(hedging))
}

#[test]
fn unsent_requests_move_without_the_budget_when_their_body_is_kept() {
    let p = policy(true);
    for _ in 0..10 {
        assert_eq!(p.retry(&refused(), false, true), Ok(()), "not idempotent, never sent: moved");
    }
    assert_eq!(p.retry(&refused(), true, false), Err(Some(BODY_NOT_KEPT)));
    // The budget was never drawn on: it is still empty, not negative.
    assert!(!p.may_hedge());
}

#[test]
fn requests_the_app_may_have_seen_are_retried_only_when_idempotent_and_within_the_budget() {
    let p = policy(true);
    let why = p.retry(&reset(), false, true).unwrap_err().unwrap();
    assert!(why.contains("not idempotent"), "{why}");
    assert_eq!(p.retry(&reset(), true, true), Err(Some("not retried: the retry budget is spent")));
    for _ in 0..5 {
        p.deposit();
    }
    assert_eq!(p.retry(&reset(), true, true), Ok(()), "five requests earn one retry");
    assert_eq!(
        p.retry(&reset(), true, true),
        Err(Some("not retried: the retry budget is spent")),
        "and only one"
    );
    for _ in 0..5 {
        p.deposit();
    }
    assert!(p.may_hedge(), "hedges draw on the same budget");
    assert_eq!(p.retry(&reset(), true, true), Err(Some("not retried: the retry budget is spent")));
    let timeout = Error::AttemptTimeout { addr: addr(), after: Duration::from_secs(1) };
    assert_eq!(timeout.class(), RetryClass::Idempotent);
}

#[test]
fn some_failures_are_never_retried_and_nothing_is_without_failover() {
    let p = policy(true);
    let never = [
        Error::HeadersTooLarge { size: 70_000, limit: 16_384 },
        Error::RequestTimeout { service: "s".into(), after: Duration::from_secs(1) },
        Error::BadRequest("bad".into()),
    ];
    for e in &never {
        assert_eq!(p.retry(e, true, true), Err(None), "{e}");
    }
    let off = policy(false);
    for _ in 0..50 {
        off.deposit();
    }
    assert_eq!(off.retry(&refused(), true, true), Err(None));
    assert_eq!(off.retry(&reset(), true, true), Err(None));
    assert_eq!(off.hedge_delay(&Latency::default()), None, "no hedging without failover");
}

#[test]
fn the_hedging_delay_follows_the_services_latency_within_its_bounds() {
    let p = policy(true);
    let latency = Latency::default();
    assert_eq!(p.hedge_delay(&latency), Some(Duration::from_secs(1)), "nothing observed: the longest wait");
    for _ in 0..50 {
        latency.observe(Duration::from_millis(100));
    }
    let usual = latency.usual().unwrap();
    assert!(usual >= Duration::from_millis(100) && usual < Duration::from_millis(120), "{usual:?}");
    assert_eq!(p.hedge_delay(&latency), Some(usual));
    let fast = Latency::default();
    fast.observe(Duration::from_micros(300));
    assert_eq!(p.hedge_delay(&fast), Some(Duration::from_millis(50)), "never below the floor");
    let slow = Latency::default();
    slow.observe(Duration::from_secs(5));
    assert_eq!(p.hedge_delay(&slow), Some(Duration::from_secs(1)), "never above the ceiling");
    // Jitter widens the wait: the deviation counts four times.
    let jittery = Latency::default();
    for i in 0..50 {
        jittery.observe(Duration::from_millis(if i % 2 == 0 { 20 } else { 180 }));
    }
    assert!(jittery.usual().unwrap() > Duration::from_millis(250), "{:?}", jittery.usual());
    let none = Policy::with_budget(BudgetSettings { ratio: 0.2, min_per_second: 0 }, true, None);
    assert_eq!(none.hedge_delay(&latency), None);
}
