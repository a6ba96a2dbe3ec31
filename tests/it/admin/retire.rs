//! Retiring a symbol (weights and rules lose it; refused for the default symbol; `ctl retire
//! --wait` returns once its instances have drained and left the registry) and writes that
//! change nothing (no new version, no history entry, nothing written to Nacos).

use std::time::Duration;

use berth_core::policy::Policy;
use serde_json::json;

use crate::support::admin::{ALICE, Admin, VIEWER};
use crate::support::{App, Rnacos, Sidecar, client};

const T: Duration = Duration::from_secs(30);
const S: &str = "/api/v1/services/users";

async fn stored(nacos: &Rnacos) -> Policy {
    Policy::parse(&nacos.config("berth.traffic.users").await.unwrap()).unwrap().policy
}

#[tokio::test]
async fn retire_takes_a_symbol_out_of_weights_and_rules_and_waits_for_its_instances_to_leave() {
    let nacos = Rnacos::start().await;
    let app = App::start("users").await;
    let stable = Sidecar::start("users", app.addr.port(), &nacos.url(), &[]).await;
    let canary =
        Sidecar::start("users", app.addr.port(), &nacos.url(), &["--symbol", "canary", "--drain-min", "1s"])
            .await;
    stable.wait_ready(T).await;
    canary.wait_ready(T).await;
    let admin = Admin::start(&nacos.url(), &["--scan-interval", "200ms"]).await;
    let policy = json!({"schema": 1, "weights": {"stable": 80, "canary": 10, "blue": 10},
        "rules": [{"match": [{"header": "x-beta", "present": true}], "symbol": "canary"},
                  {"match": [{"header": "x-blue", "present": true}], "symbol": "blue"}]});
    assert_eq!(admin.put(&format!("{S}/policy"), ALICE, policy).await.status, 200);

    let refused = admin.post(&format!("{S}/symbols/stable/retire"), ALICE, json!({})).await;
    assert_eq!(refused.status, 409, "{refused:?}");
    assert!(
        refused.body["detail"].as_str().unwrap().contains("`stable` is the default symbol"),
        "{refused:?}"
    );
    let read = admin.post(&format!("{S}/symbols/canary/retire"), VIEWER, json!({})).await;
    assert_eq!(read.status, 403);
    assert_eq!(stored(&nacos).await.version, 1, "refused retirements wrote nothing");

    let retired = admin.post(&format!("{S}/symbols/canary/retire"), ALICE, json!({})).await;
    assert_eq!((retired.status, retired.etag()), (200, 2), "{retired:?}");
    assert_eq!(retired.body["remaining"], json!([canary.inbound.to_string()]), "{retired:?}");
    assert_eq!(retired.body["drained"], false);
    let p = stored(&nacos).await;
    let weights: Vec<(String, u32)> = p.weights.iter().map(|(s, w)| (s.to_string(), *w)).collect();
    assert_eq!(
        weights,
        [("blue".to_owned(), 10), ("stable".to_owned(), 90)],
        "canary's share went to stable"
    );
    assert_eq!(p.rules.len(), 1);
    assert_eq!(p.rules[0].symbol.as_str(), "blue", "the canary rule is gone, the blue one stays");

    // The canary deployment goes away; `retire --wait` returns once it has left.
    let drain = client().post(canary.admin_url("/drain")).send().await.unwrap();
    assert_eq!(drain.status(), 202);
    let wait = admin.ctl(Some(ALICE), &["retire", "users", "canary", "--wait=25s"]);
    assert_eq!(wait.code, 0, "{wait:?}");
    assert!(wait.stdout.contains("retire canary: no change (nothing written)"), "retired already: {wait:?}");
    assert!(wait.stdout.contains("no instance of canary is left in the registry"), "{wait:?}");
    assert!(!nacos.lists("users", canary.inbound).await, "it has left the registry");
    // Its sidecar has stopped (or is gone): the wait did not end while it still drained.
    if let Ok(r) = client().get(canary.admin_url("/state")).send().await {
        let state: serde_json::Value = r.json().await.unwrap();
        assert_eq!(state["lifecycle"], "stopped", "{state}");
    }
    assert_eq!(stored(&nacos).await.version, 2, "the second retire wrote nothing");
}

#[tokio::test]
async fn a_change_that_changes_nothing_writes_no_version() {
    let nacos = Rnacos::start().await;
    let admin = Admin::start(&nacos.url(), &[]).await;
    let first = admin.put(&format!("{S}/weights"), ALICE, json!({"stable": 90, "canary": 10})).await;
    assert_eq!((first.status, first.etag(), first.body["changed"].as_bool()), (200, 1, Some(true)));
    let written = nacos.config("berth.traffic.users").await.unwrap();
    for _ in 0..3 {
        let again = admin.put(&format!("{S}/weights"), ALICE, json!({"canary": 10, "stable": 90})).await;
        assert_eq!(
            (again.status, again.etag(), again.body["changed"].as_bool()),
            (200, 1, Some(false)),
            "{again:?}"
        );
        assert_eq!(again.body["summary"], "set weights: no change");
    }
    let rules = admin.put(&format!("{S}/rules"), ALICE, json!([])).await;
    assert_eq!((rules.etag(), rules.body["changed"].as_bool()), (1, Some(false)));
    let ctl = admin.ctl(Some(ALICE), &["weights", "users", "stable=90", "canary=10"]);
    assert!(
        ctl.stdout.contains("users is at version 1: set weights: no change (nothing written)"),
        "{ctl:?}"
    );
    assert_eq!(nacos.config("berth.traffic.users").await.unwrap(), written, "nothing was written to Nacos");
    let history = admin.get(&format!("{S}/history"), VIEWER).await.body;
    assert_eq!(history["entries"].as_array().unwrap().len(), 1, "{history}");
    let metrics = client().get(admin.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"berth_admin_policy_writes_total{outcome="unchanged"} 5"#), "{metrics}");
    // A real change still writes.
    let moved = admin.put(&format!("{S}/weights"), ALICE, json!({"stable": 50, "canary": 50})).await;
    assert_eq!((moved.etag(), moved.body["changed"].as_bool()), (2, Some(true)));
}
