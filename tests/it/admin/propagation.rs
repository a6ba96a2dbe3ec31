//! Whether a change took effect: admin reads each consumer sidecar's applied policy version
//! from its admin port (named in its registration), `GET /services/{s}` counts them, and
//! `berth ctl … --wait` returns only once every consumer routes by the new version — or
//! exits 1 naming the one that does not (a consumer frozen with SIGSTOP).

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::admin::{ALICE, Admin, VIEWER};
use crate::support::{App, Proc, Rnacos, Sidecar, eventually};

const T: Duration = Duration::from_secs(30);

/// Sends SIGCONT when dropped, so a frozen sidecar is resumed (and then killed) even when the
/// test fails while it is stopped.
struct Resume<'a>(&'a Proc);

impl Drop for Resume<'_> {
    fn drop(&mut self) {
        let _ = self.0.try_signal("CONT");
    }
}

/// The policy version a consumer sidecar routes `service` by, from its own `/endpoints`.
async fn applied(consumer: &Sidecar, service: &str) -> Option<u64> {
    consumer.endpoints().await["services"][service]["policy"]["version"].as_u64()
}

async fn propagation(admin: &Admin) -> Value {
    admin.get("/api/v1/services/users", VIEWER).await.body["propagation"].clone()
}

#[tokio::test]
async fn wait_returns_once_consumers_applied_and_names_a_frozen_consumer_on_timeout() {
    let nacos = Rnacos::start().await;
    let (users, web) = (App::start("users").await, App::start("web").await);
    let provider = Sidecar::start("users", users.addr.port(), &nacos.url(), &[]).await;
    let canary = Sidecar::start("users", users.addr.port(), &nacos.url(), &["--symbol", "canary"]).await;
    // Two consumers of users: sidecars of web that follow users from the start.
    let follow = ["--services", "users"];
    let one = Sidecar::start("web", web.addr.port(), &nacos.url(), &follow).await;
    let two = Sidecar::start("web", web.addr.port(), &nacos.url(), &follow).await;
    for s in [&provider, &canary, &one, &two] {
        s.wait_ready(T).await;
    }
    let admin = Admin::start(&nacos.url(), &["--scan-interval", "200ms"]).await;
    // The provider sidecars follow nothing: they are no consumers of users.
    eventually(T, "admin finds both consumers at the default version", || async {
        let p = propagation(&admin).await;
        (p["version"].as_u64(), p["consumers"].as_u64(), p["applied"].as_u64()) == (Some(0), Some(2), Some(2))
            && p["lagging"] == json!([])
            && p["scanned_at"].is_string()
    })
    .await;

    let ok = admin.ctl(Some(ALICE), &["weights", "users", "stable=90", "canary=10", "--wait=20s"]);
    assert_eq!(ok.code, 0, "{ok:?}");
    assert!(ok.stdout.contains("users is at version 1"), "{ok:?}");
    assert!(ok.stdout.contains("version 1 applied by 2 consumer sidecar(s) of users"), "{ok:?}");
    // It returned only once both consumers route by version 1: ask them, not admin.
    assert_eq!((applied(&one, "users").await, applied(&two, "users").await), (Some(1), Some(1)));
    let show = admin.ctl(Some(VIEWER), &["show", "users"]);
    assert!(show.stdout.contains("version 1 applied by 2 of 2 consumer sidecar(s)"), "{show:?}");

    // Freeze the second consumer: it cannot apply the next version.
    two.proc.signal("STOP");
    let _resume = Resume(&two.proc);
    let late = admin.ctl(Some(ALICE), &["promote", "users", "canary", "--wait=3s"]);
    assert_eq!(late.code, 1, "{late:?}");
    assert!(late.stdout.contains("users is at version 2"), "the change was written: {late:?}");
    let named = format!("web {} (not answering", two.inbound);
    assert!(late.stderr.contains("not applied within 3s") && late.stderr.contains(&named), "{late:?}");
    assert!(!late.stderr.contains(&one.inbound.to_string()), "the live consumer applied it: {late:?}");
    assert_eq!(applied(&one, "users").await, Some(2));
    let p = propagation(&admin).await;
    assert_eq!(
        (p["version"].as_u64(), p["consumers"].as_u64(), p["applied"].as_u64()),
        (Some(2), Some(2), Some(1))
    );
    assert_eq!(p["lagging"][0]["instance"], two.inbound.to_string(), "{p}");
    assert_eq!(p["lagging"][0]["version"], 1, "its last report: {p}");
    let show = admin.ctl(Some(VIEWER), &["show", "users"]);
    assert!(show.stdout.contains(&format!("lagging: web {}", two.inbound)), "{show:?}");

    // Resumed, it applies version 2, and a wait on the unchanged policy passes.
    two.proc.signal("CONT");
    let again = admin.ctl(Some(ALICE), &["promote", "users", "canary", "--wait=20s"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stdout.contains("(nothing written)"), "promoting twice changes nothing: {again:?}");
    assert!(again.stdout.contains("version 2 applied by 2 consumer sidecar(s)"), "{again:?}");
    assert_eq!(applied(&two, "users").await, Some(2));
}

#[tokio::test]
async fn a_consumer_that_rejects_a_policy_lags_with_the_reason() {
    let nacos = Rnacos::start().await;
    let (users, web) = (App::start("users").await, App::start("web").await);
    let provider = Sidecar::start("users", users.addr.port(), &nacos.url(), &[]).await;
    let consumer = Sidecar::start("web", web.addr.port(), &nacos.url(), &["--services", "users"]).await;
    provider.wait_ready(T).await;
    consumer.wait_ready(T).await;
    let admin = Admin::start(&nacos.url(), &["--scan-interval", "200ms"]).await;
    assert_eq!(admin.put("/api/v1/services/users/weights", ALICE, json!({"stable": 100})).await.status, 200);
    eventually(T, "the consumer applies version 1", || async {
        applied(&consumer, "users").await == Some(1)
    })
    .await;
    // An operator writes an invalid document into Nacos by hand: sidecars keep version 1.
    nacos
        .publish_config("berth.traffic.users", r#"{"schema": 1, "version": 2, "weights": {"stable": 5}}"#)
        .await;
    eventually(T, "admin says the consumer rejected version 2", || async {
        let p = propagation(&admin).await;
        p["version"] == 2
            && p["lagging"][0]["reason"].as_str().is_some_and(|r| r.contains("rejected the newer one"))
    })
    .await;
    let show = admin.ctl(Some(VIEWER), &["show", "users"]);
    let line = format!("lagging: web {} (at version 1; rejected the newer one:", consumer.inbound);
    assert!(show.stdout.contains(&line) && show.stdout.contains("sum to 100"), "{show:?}");
}

#[tokio::test]
async fn two_admin_replicas_agree_and_each_streams_the_others_changes() {
    let nacos = Rnacos::start().await;
    let (users, web) = (App::start("users").await, App::start("web").await);
    let provider = Sidecar::start("users", users.addr.port(), &nacos.url(), &[]).await;
    let consumer = Sidecar::start("web", web.addr.port(), &nacos.url(), &["--services", "users"]).await;
    provider.wait_ready(T).await;
    consumer.wait_ready(T).await;
    let a = Admin::start(&nacos.url(), &["--scan-interval", "200ms"]).await;
    let b = Admin::start(&nacos.url(), &["--scan-interval", "200ms"]).await;
    let mut on_b = crate::admin::events::Events::open(&b, "").await;
    eventually(T, "both replicas see the consumer", || async {
        propagation(&a).await["consumers"] == 1 && propagation(&b).await["consumers"] == 1
    })
    .await;
    // b's scanner has its baseline (the first scan) before the change.
    eventually(T, "b scanned twice", || async {
        crate::admin::events::metric(&b, "berth_admin_scans_total").await >= 2.0
    })
    .await;
    assert_eq!(a.put("/api/v1/services/users/weights", ALICE, json!({"stable": 100})).await.status, 200);
    // b learns of a's change from the registry, with its author from the history.
    let e = on_b.until("policy.changed", |e| e["data"]["version"] == 1).await;
    assert_eq!((e["data"]["author"].as_str(), e["id"].as_str()), (Some("alice"), Some("policy/users/1")));
    eventually(T, "both replicas say the consumer applied version 1", || async {
        let (pa, pb) = (propagation(&a).await, propagation(&b).await);
        pa["applied"] == 1 && pa["version"] == 1 && pb["applied"] == 1 && pb["version"] == 1
    })
    .await;
}
