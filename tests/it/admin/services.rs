//! Services through the API: the list with counts by symbol, one service's instances by symbol
//! with state and age, symbol overrides, and zombies.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::admin::{ALICE, Admin, VIEWER};
use crate::support::{App, Rnacos, Sidecar, eventually};

const T: Duration = Duration::from_secs(20);

async fn registered(nacos: &Rnacos, service: &str, sidecar: &Sidecar) {
    sidecar.wait_ready(T).await;
    eventually(T, "listed in Nacos", || async { nacos.lists(service, sidecar.inbound).await }).await;
}

fn group<'a>(show: &'a Value, symbol: &str) -> Vec<&'a Value> {
    show["symbols"][symbol].as_array().map(|v| v.iter().collect()).unwrap_or_default()
}

#[tokio::test]
async fn services_and_instances_grouped_by_symbol_with_state_and_overrides() {
    let nacos = Rnacos::start().await;
    let app = App::start("users").await;
    // The instance's own warm-up (`berth.warmup`) wins over admin's `--warmup`. Long enough
    // that a busy machine (every test at once on two cores) still reads it warming.
    let stable =
        Sidecar::start("users", app.addr.port(), &nacos.url(), &["--app-version", "1.0", "--warmup", "10s"])
            .await;
    let canary = Sidecar::start("users", app.addr.port(), &nacos.url(), &["--symbol", "canary"]).await;
    registered(&nacos, "users", &stable).await;
    registered(&nacos, "users", &canary).await;
    let admin = Admin::start(&nacos.url(), &["--warmup", "1h"]).await;

    let list = admin.get("/api/v1/services", VIEWER).await;
    let users = list.body["services"].as_array().unwrap().iter().find(|s| s["name"] == "users").cloned();
    assert_eq!(
        users,
        Some(
            json!({"name": "users", "instances": 2, "symbols": {"canary": 1, "stable": 1}, "policy_version": 0})
        )
    );

    let show = admin.get("/api/v1/services/users", VIEWER).await.body;
    assert_eq!(
        (show["version"].as_u64(), show["policy_source"].as_str()),
        (Some(0), Some("default")),
        "{show}"
    );
    let s = group(&show, "stable");
    assert_eq!(s.len(), 1, "{show}");
    assert_eq!(s[0]["address"], stable.inbound.to_string());
    assert_eq!(
        (s[0]["state"].as_str(), s[0]["weight"].as_f64(), s[0]["healthy"].as_bool()),
        (Some("warming"), Some(1.0), Some(true))
    );
    assert!(s[0]["age_seconds"].as_u64().unwrap() < 10, "{show}");
    assert_eq!(s[0]["version"], "1.0");
    assert_eq!(group(&show, "canary")[0]["address"], canary.inbound.to_string());
    eventually(T, "serving once the warm-up is over", || async {
        let show = admin.get("/api/v1/services/users", VIEWER).await.body;
        group(&show, "stable")[0]["state"] == "serving"
    })
    .await;

    let path = format!("/api/v1/services/users/symbols/{}", canary.inbound);
    assert_eq!(admin.put(&path, ALICE, json!({"symbol": "stable"})).await.status, 200);
    let show = admin.get("/api/v1/services/users", VIEWER).await.body;
    let s = group(&show, "stable");
    assert_eq!(s.len(), 2, "the override moves the canary instance to stable: {show}");
    let moved = s.iter().find(|i| i["address"] == canary.inbound.to_string()).unwrap();
    assert_eq!(moved["overridden"], true);
    assert!(group(&show, "canary").is_empty());
    let list = admin.get("/api/v1/services", VIEWER).await.body;
    let users = list["services"].as_array().unwrap().iter().find(|s| s["name"] == "users").unwrap().clone();
    assert_eq!((users["symbols"].clone(), users["policy_version"].clone()), (json!({"stable": 2}), json!(1)));

    let unknown = admin.get("/api/v1/services/nobody", VIEWER).await;
    assert_eq!(unknown.status, 404, "{unknown:?}");
    assert!(unknown.body["detail"].as_str().unwrap().contains("`nobody`"));
    assert_eq!(admin.get("/api/v1/services/.hidden", VIEWER).await.status, 400);
}

#[tokio::test]
async fn killed_and_hung_instances_still_registered_are_zombies() {
    let nacos = Rnacos::start().await;
    let app = App::start("orders").await;
    let alive = Sidecar::start("orders", app.addr.port(), &nacos.url(), &[]).await;
    registered(&nacos, "orders", &alive).await;

    // An instance whose process was killed but whose registration stays (persistent, or its
    // heartbeats not yet expired).
    let mut killed = App::start("killed").await;
    killed.proc.kill();
    nacos.register_persistent("orders", killed.addr, "canary").await;

    // A sidecar whose app died between two health checks: registered, answering 503.
    let mut sick_app = App::start("sick").await;
    let sick =
        Sidecar::start("orders", sick_app.addr.port(), &nacos.url(), &["--health-interval", "1h"]).await;
    registered(&nacos, "orders", &sick).await;
    sick_app.proc.kill();

    // A hung sidecar: the kernel accepts, nothing answers.
    let hung_app = App::start("hung").await;
    let hung = Sidecar::start("orders", hung_app.addr.port(), &nacos.url(), &[]).await;
    registered(&nacos, "orders", &hung).await;
    hung.proc.signal("STOP");

    let admin = Admin::start(&nacos.url(), &[]).await;
    let found = admin.get("/api/v1/services/orders/zombies", VIEWER).await;
    hung.proc.signal("CONT");
    assert_eq!(found.status, 200, "{found:?}");
    assert_eq!(found.body["checked"], 4, "{found:?}");
    let zombies: Vec<(String, String)> = found.body["zombies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| (z["address"].as_str().unwrap().to_owned(), z["reason"].as_str().unwrap().to_owned()))
        .collect();
    let reason = |addr: std::net::SocketAddr| {
        zombies.iter().find(|(a, _)| *a == addr.to_string()).map(|(_, r)| r.clone())
    };
    assert_eq!(reason(killed.addr).as_deref(), Some("connection refused"), "{zombies:?}");
    assert_eq!(
        reason(sick.inbound).as_deref(),
        Some("answers 503 with x-berth-error: app-unavailable"),
        "{zombies:?}"
    );
    assert!(reason(hung.inbound).is_some_and(|r| r.contains("no HTTP answer")), "{zombies:?}");
    assert_eq!(reason(alive.inbound), None, "a serving instance is no zombie: {zombies:?}");
    assert_eq!(zombies.len(), 3);
    let canary =
        found.body["zombies"].as_array().unwrap().iter().find(|z| z["address"] == killed.addr.to_string());
    assert_eq!(canary.unwrap()["symbol"], "canary");

    let metrics = admin.call(reqwest::Method::GET, "/metrics", None, None, None).await.body;
    assert!(
        metrics.as_str().unwrap().contains("berth_admin_zombie_instances{service=\"orders\"} 3"),
        "{metrics}"
    );
    // berth ctl prints a scan of its own as a table. Of the three only the sick one is sure to
    // be a zombie still: rnacos's own probe may by now have marked the killed one unhealthy
    // (seen on a loaded machine), and the hung one answers again.
    let table = admin.ctl(Some(VIEWER), &["zombies", "orders"]);
    assert_eq!(table.code, 0, "{table:?}");
    let row = table.stdout.lines().find(|l| l.starts_with(&sick.inbound.to_string()));
    assert!(
        table.stdout.starts_with("ADDRESS")
            && row.is_some_and(|r| r.contains("answers 503 with x-berth-error: app-unavailable")),
        "{table:?}"
    );
}

/// Each instance's `effective_weight` as admin reports it and as a consumer sidecar balances by
/// it (its `/endpoints`), by address.
async fn weights(admin: &Admin, consumer: &Sidecar) -> (Vec<(String, f64)>, Vec<(String, f64)>) {
    let show = admin.get("/api/v1/services/users", VIEWER).await.body;
    let mut in_admin: Vec<(String, f64)> = group(&show, "stable")
        .iter()
        .map(|i| (i["address"].as_str().unwrap().to_owned(), i["effective_weight"].as_f64().unwrap()))
        .collect();
    let endpoints = consumer.endpoints().await;
    let mut in_sidecar: Vec<(String, f64)> = endpoints["services"]["users"]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["addr"].as_str().unwrap().to_owned(), i["effective_weight"].as_f64().unwrap()))
        .collect();
    in_admin.sort_by(|a, b| a.0.cmp(&b.0));
    in_sidecar.sort_by(|a, b| a.0.cmp(&b.0));
    (in_admin, in_sidecar)
}

/// admin's `effective_weight` is what the consumer sidecars balance by: an instance new among
/// warm ones is ramped from the floor; once most of the service is warming (a full restart)
/// the sidecars skip the ramp, and so does admin — though the new instances are still
/// `warming`.
#[tokio::test]
async fn effective_weights_in_admin_are_what_the_sidecars_balance_by() {
    let nacos = Rnacos::start().await;
    let app = App::start("users").await;
    let start = |warmup: &'static str| {
        let (port, url) = (app.addr.port(), nacos.url());
        async move { Sidecar::start("users", port, &url, &["--warmup", warmup]).await }
    };
    // A ten-minute warm-up: tens of seconds in, a new instance is still at the floor (5%).
    let mut instances = vec![start("0s").await, start("0s").await, start("10m").await];
    for s in &instances {
        registered(&nacos, "users", s).await;
    }
    let capp = App::start("web").await;
    let consumer = Sidecar::start("web", capp.addr.port(), &nacos.url(), &["--services", "users"]).await;
    crate::faults_outbound::sees(&consumer, "users", 3).await;
    let admin = Admin::start(&nacos.url(), &[]).await;
    eventually(T, "admin lists three", || async {
        group(&admin.get("/api/v1/services/users", VIEWER).await.body, "stable").len() == 3
    })
    .await;
    let new = instances[2].inbound.to_string();
    let (in_admin, in_sidecar) = weights(&admin, &consumer).await;
    assert_eq!(in_admin, in_sidecar, "one of three warming");
    assert_eq!(in_admin.iter().find(|(a, _)| *a == new).map(|w| w.1), Some(0.05), "{in_admin:?}");

    // Two more new ones: three of five warming, the ramp is off everywhere.
    for _ in 0..2 {
        let s = start("10m").await;
        registered(&nacos, "users", &s).await;
        instances.push(s);
    }
    crate::faults_outbound::sees(&consumer, "users", 5).await;
    eventually(T, "admin lists five", || async {
        group(&admin.get("/api/v1/services/users", VIEWER).await.body, "stable").len() == 5
    })
    .await;
    let (in_admin, in_sidecar) = weights(&admin, &consumer).await;
    assert_eq!(in_admin, in_sidecar, "three of five warming");
    assert!(in_admin.len() == 5 && in_admin.iter().all(|(_, w)| *w == 1.0), "{in_admin:?}");
    let show = admin.get("/api/v1/services/users", VIEWER).await.body;
    let state =
        |addr: &str| group(&show, "stable").iter().find(|i| i["address"] == addr).unwrap()["state"].clone();
    assert_eq!(state(&new), "warming", "{show}");
}
