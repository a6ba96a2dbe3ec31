//! `berth ctl` against a real `berth admin` and rnacos: a canary from 10% to promoted, what
//! it writes as Nacos holds it, tables and JSON, errors and exit codes.

use std::time::Duration;

use berth_core::policy::Policy;
use serde_json::Value;

use crate::support::admin::{ALICE, Admin, BOB, VIEWER, ctl_at};
use crate::support::{App, ClosedPort, Rnacos, Sidecar, eventually};

const T: Duration = Duration::from_secs(20);

async fn in_nacos(nacos: &Rnacos) -> Policy {
    Policy::parse(&nacos.config("berth.traffic.users").await.unwrap()).unwrap().policy
}

#[tokio::test]
async fn ctl_runs_a_canary_from_10_percent_to_promoted() {
    let nacos = Rnacos::start().await;
    let app = App::start("users").await;
    let stable = Sidecar::start("users", app.addr.port(), &nacos.url(), &[]).await;
    let canary = Sidecar::start("users", app.addr.port(), &nacos.url(), &["--symbol", "canary"]).await;
    for s in [&stable, &canary] {
        eventually(T, "registered", || async { nacos.lists("users", s.inbound).await }).await;
    }
    let admin = Admin::start(&nacos.url(), &[]).await;

    let services = admin.ctl(Some(VIEWER), &["services"]);
    assert_eq!(services.code, 0, "{services:?}");
    assert!(services.stdout.starts_with("SERVICE"), "{services:?}");
    assert!(
        services.stdout.lines().any(|l| l.starts_with("users") && l.contains("canary=1 stable=1")),
        "{services:?}"
    );

    let ten = admin.ctl(Some(ALICE), &["weights", "users", "stable=90", "canary=10"]);
    assert_eq!(ten.code, 0, "{ten:?}");
    assert_eq!(ten.stdout, "users is at version 1: set weights: weights none → canary=10 stable=90\n");
    let p = in_nacos(&nacos).await;
    assert_eq!(
        p.weights.iter().map(|(s, w)| format!("{s}={w}")).collect::<Vec<_>>(),
        ["canary=10", "stable=90"]
    );

    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.json");
    std::fs::write(
        &rules,
        r#"[{"name": "beta", "match": [{"header": "x-beta", "exact": "1"}], "symbol": "canary"}]"#,
    )
    .unwrap();
    let r = admin.ctl(Some(BOB), &["rules", "users", "--file", rules.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(in_nacos(&nacos).await.rules[0].name.as_deref(), Some("beta"));
    let inline = admin.ctl(
        Some(BOB),
        &[
            "rules",
            "users",
            r#"[{"match":[{"cookie":"group","prefix":"qa-"}],"symbol":"canary","lane":true}]"#,
        ],
    );
    assert_eq!(inline.code, 0, "{inline:?}");
    let fifty = admin.ctl(Some(ALICE), &["--if-version", "3", "weights", "users", "stable=50", "canary=50"]);
    assert_eq!(fifty.code, 0, "{fifty:?}");

    let show = admin.ctl(Some(VIEWER), &["show", "users"]);
    assert_eq!(show.code, 0, "{show:?}");
    assert!(show.stdout.starts_with("users: 2 instance(s), policy version 4 (registry)"), "{show:?}");
    assert!(show.stdout.contains("weights canary=50 stable=50"), "{show:?}");
    assert!(show.stdout.contains("rule 0: cookie group ^= qa- → canary (lane)\n"), "{show:?}");
    assert!(show.stdout.contains(&canary.inbound.to_string()) && show.stdout.contains("warming"), "{show:?}");

    let json = admin.ctl(Some(VIEWER), &["show", "users", "-o", "json"]);
    let v: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["symbols"]["canary"][0]["address"], canary.inbound.to_string());

    let promote = admin.ctl(Some(ALICE), &["promote", "users", "canary"]);
    assert_eq!(promote.code, 0, "{promote:?}");
    assert!(!promote.stdout.contains("warning"), "a canary instance is registered: {promote:?}");
    let p = in_nacos(&nacos).await;
    assert_eq!((p.default.as_str(), p.weights.len(), p.version), ("canary", 1, 5));

    let symbol = admin.ctl(Some(BOB), &["symbol", "users", &stable.inbound.to_string(), "canary"]);
    assert_eq!(symbol.code, 0, "{symbol:?}");
    assert_eq!(in_nacos(&nacos).await.overrides[&stable.inbound.to_string()].as_str(), "canary");
    let unset = admin.ctl(Some(BOB), &["symbol", "users", &stable.inbound.to_string(), "-"]);
    assert_eq!(unset.code, 0, "{unset:?}");
    assert!(in_nacos(&nacos).await.overrides.is_empty());

    let rollback = admin.ctl(Some(ALICE), &["rollback", "users", "--to", "4"]);
    assert_eq!(rollback.code, 0, "{rollback:?}");
    assert_eq!(in_nacos(&nacos).await.default.as_str(), "stable");

    let history = admin.ctl(Some(VIEWER), &["history", "users"]);
    assert_eq!(history.code, 0, "{history:?}");
    let lines: Vec<&str> = history.stdout.lines().collect();
    assert!(lines[0].starts_with("VERSION") && lines.len() == 9, "{history:?}");
    assert!(
        lines[1].starts_with("8 ")
            && lines[1].contains("alice")
            && lines[1].contains("rollback to version 4")
    );
    assert!(lines[4].contains("alice") && lines[4].contains("promote canary"), "{history:?}");

    let policy = admin.ctl(Some(VIEWER), &["policy", "users"]);
    let printed: Policy = serde_json::from_str(&policy.stdout).unwrap();
    assert_eq!(printed, in_nacos(&nacos).await);
    let file = dir.path().join("policy.json");
    std::fs::write(&file, &policy.stdout).unwrap();
    let put = admin.ctl(Some(ALICE), &["policy", "users", "--file", file.to_str().unwrap(), "-o", "json"]);
    assert_eq!(put.code, 0, "{put:?}");
    // The same document again changes nothing: no new version.
    let answer = serde_json::from_str::<Value>(&put.stdout).unwrap();
    assert_eq!((answer["version"].clone(), answer["changed"].clone()), (8.into(), false.into()), "{put:?}");
}

#[tokio::test]
async fn ctl_errors_say_what_and_exit_1_or_64() {
    let dir = tempfile::tempdir().unwrap();
    let admin = Admin::start(&crate::support::dir_registry(&dir), &[]).await;

    let closed = ClosedPort::new();
    let down = format!("http://127.0.0.1:{}", closed.port);
    let out = ctl_at(&down, Some(ALICE), &["services"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains(&format!("cannot reach the admin API at {down}")), "{out:?}");
    assert!(out.stderr.to_lowercase().contains("connection refused"), "{out:?}");

    let none = admin.ctl(None, &["services"]);
    assert_eq!(none.code, 1);
    assert!(none.stderr.contains("401 unauthorized") && none.stderr.contains("BERTH_TOKEN"), "{none:?}");
    let read_only = admin.ctl(Some(VIEWER), &["weights", "users", "stable=100"]);
    assert_eq!(read_only.code, 1);
    assert!(read_only.stderr.contains("403 forbidden: token `viewer` is read-only"), "{read_only:?}");
    let invalid = admin.ctl(Some(ALICE), &["weights", "users", "stable=60", "canary=30"]);
    assert_eq!(invalid.code, 1);
    assert!(
        invalid.stderr.contains("422 invalid policy") && invalid.stderr.contains("not 90"),
        "{invalid:?}"
    );
    let stale = admin.ctl(Some(ALICE), &["--if-version", "7", "weights", "users", "stable=100"]);
    assert_eq!(stale.code, 1);
    assert!(stale.stderr.contains("412 version mismatch"), "{stale:?}");
    let flag = admin.ctl(None, &["--token", ALICE, "weights", "users", "stable=100"]);
    assert_eq!(flag.code, 0, "--token works as BERTH_TOKEN does: {flag:?}");

    for (args, why) in [
        (&["weights", "users", "stable=ninety"][..], "whole percent"),
        (&["weights", "users", "stable"][..], "SYMBOL=PERCENT"),
        (&["rules", "users", "--file", "/nonexistent/rules.json"][..], "/nonexistent/rules.json"),
        (&["rules", "users", "[not json"][..], "not JSON"),
        (&["rules", "users"][..], "required"),
        (&["symbol", "users", "10.0.0.1:80", "Bad"][..], "lower-case"),
        (&["services", "--output", "yaml"][..], "yaml"),
        (&["nonsense"][..], "nonsense"),
    ] {
        let out = admin.ctl(Some(ALICE), args);
        assert_eq!(out.code, 64, "{args:?}: {out:?}");
        assert!(out.stderr.contains(why), "{args:?}: {out:?}");
    }
    let scheme = ctl_at("ftp://example", Some(ALICE), &["services"]);
    assert_eq!(scheme.code, 64);
    assert!(scheme.stderr.contains("--server"), "{scheme:?}");
}
