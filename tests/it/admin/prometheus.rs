//! Observed traffic from the sidecars themselves (no Prometheus), and the same numbers from a
//! real Prometheus scraping the consumer sidecar (`--prometheus URL`); a Prometheus that goes
//! away is an error in the answer, not a failed request.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::admin::{ALICE, Admin, VIEWER};
use crate::support::{App, Proc, Rnacos, Sidecar, eventually};

const T: Duration = Duration::from_secs(40);

/// `$BERTH_PROMETHEUS_BIN`, else `prometheus` on `PATH`.
fn prometheus_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_PROMETHEUS_BIN") {
        return p.into();
    }
    let found = Command::new("sh").args(["-c", "command -v prometheus"]).output().ok();
    match found.filter(|o| o.status.success()) {
        Some(o) => String::from_utf8_lossy(&o.stdout).trim().into(),
        None => panic!("prometheus is not installed: run scripts/test.sh, which installs it"),
    }
}

/// A Prometheus on a loopback port it picks, scraping `targets` every second.
async fn prometheus(dir: &tempfile::TempDir, targets: &[String]) -> (Proc, String) {
    let config = dir.path().join("prometheus.yml");
    let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: berth\n    static_configs: [{{targets: [{}]}}]\n",
            targets.join(", ")
        ),
    )
    .unwrap();
    let mut cmd = Command::new(prometheus_binary());
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg("--web.listen-address=127.0.0.1:0");
    let proc = Proc::spawn("prometheus", cmd);
    let line = proc.wait_line("msg=\"Listening on\"", Duration::from_secs(30)).await;
    let addr = line.rsplit("address=").next().unwrap().trim();
    (proc, format!("http://{addr}/"))
}

/// Requests from the consumer to users every 10 ms, for at most 90 s.
fn traffic(consumer: &Sidecar) -> tokio::task::JoinHandle<()> {
    let client = consumer.outbound_client();
    tokio::spawn(async move {
        for _ in 0..9000 {
            let _ = client.get("http://users/").send().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

async fn window(admin: &Admin) -> Value {
    admin.get("/api/v1/services/users", VIEWER).await.body["traffic"].clone()
}

/// The numbers a canary at 25% should show: its target, traffic on both symbols, all
/// answered, shares near the weights, and each symbol's latency from the consumer sidecar's
/// `berth_outbound_request_duration_seconds` histogram.
fn looks_right(w: &Value, source: &str) -> bool {
    let (s, c) = (&w["symbols"]["stable"], &w["symbols"]["canary"]);
    let share = |x: &Value| x["observed_share"].as_f64().unwrap_or(0.0);
    let latency = |x: &Value| match (x["p50_ms"].as_f64(), x["p99_ms"].as_f64()) {
        (Some(p50), Some(p99)) => p50 > 0.0 && p99 >= p50,
        _ => false,
    };
    w["source"] == source
        && c["target_share"] == json!(0.25)
        && s["rps"].as_f64().unwrap_or(0.0) > 1.0
        && c["rps"].as_f64().unwrap_or(0.0) > 0.2
        && s["success_rate"] == json!(1.0)
        && (0.1..0.45).contains(&share(c))
        && (share(s) + share(c) - 1.0).abs() < 1e-6
        && latency(s)
        && latency(c)
}

#[tokio::test]
async fn traffic_per_symbol_from_the_sidecars_and_from_prometheus() {
    let nacos = Rnacos::start().await;
    let (users, web) = (App::start("users").await, App::start("web").await);
    let stable = Sidecar::start("users", users.addr.port(), &nacos.url(), &[]).await;
    let canary = Sidecar::start("users", users.addr.port(), &nacos.url(), &["--symbol", "canary"]).await;
    let consumer = Sidecar::start("web", web.addr.port(), &nacos.url(), &["--services", "users"]).await;
    for s in [&stable, &canary, &consumer] {
        s.wait_ready(T).await;
    }
    let direct = Admin::start(&nacos.url(), &["--scan-interval", "300ms"]).await;
    assert_eq!(
        direct.put("/api/v1/services/users/weights", ALICE, json!({"stable": 75, "canary": 25})).await.status,
        200
    );
    let load = traffic(&consumer);

    eventually(T, "admin's own window shows the split", || async {
        looks_right(&window(&direct).await, "sidecars")
    })
    .await;
    let series = direct.get("/api/v1/services/users/traffic", VIEWER).await.body["series"].clone();
    assert!(
        series.as_array().is_some_and(|s| !s.is_empty() && s.iter().all(|p| p["error_rate"] == 0.0)),
        "{series}"
    );
    let show = direct.ctl(Some(VIEWER), &["show", "users"]);
    assert!(
        show.stdout.contains("traffic over the last") && show.stdout.contains("TARGET  OBSERVED"),
        "{show:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let (mut prom, url) = prometheus(&dir, &[consumer.admin.to_string()]).await;
    let via = Admin::start(&nacos.url(), &["--scan-interval", "300ms", "--prometheus", &url]).await;
    eventually(T, "the same numbers from Prometheus", || async {
        looks_right(&window(&via).await, "prometheus")
    })
    .await;
    eventually(T, "an error-rate series from Prometheus", || async {
        let series = via.get("/api/v1/services/users/traffic", VIEWER).await.body["series"].clone();
        series.as_array().is_some_and(|s| !s.is_empty() && s.iter().all(|p| p["rps"].as_f64() > Some(0.0)))
    })
    .await;
    load.abort();

    prom.kill();
    let gone = window(&via).await;
    assert_eq!(gone["source"], "prometheus");
    assert!(gone["error"].as_str().is_some_and(|e| e.contains("cannot connect")), "{gone}");
    // Propagation does not need Prometheus.
    let p = via.get("/api/v1/services/users", VIEWER).await.body["propagation"].clone();
    assert_eq!((p["consumers"].as_u64(), p["applied"].as_u64()), (Some(1), Some(1)), "{p}");
}
