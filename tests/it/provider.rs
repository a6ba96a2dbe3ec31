//! The provider side: readiness, late registration, health, the inbound proxy, metrics.

use std::time::Duration;

use crate::support::tools::{assert_valid_metrics, promtool_check};
use crate::support::{App, ClosedPort, Rnacos, Sidecar, client, dir_registry, eventually, sample};

const T: Duration = Duration::from_secs(15);

#[tokio::test]
async fn not_ready_and_not_registered_while_the_app_is_down() {
    let nacos = Rnacos::start().await;
    let app_port = ClosedPort::new();
    let sidecar = Sidecar::start("down", app_port.port, &nacos.url(), &[]).await;
    eventually(T, "the app check has failed", || async {
        sidecar.state().await["failing"].as_array().is_some_and(|f| !f.is_empty())
    })
    .await;
    let state = sidecar.state().await;
    assert_eq!(state["lifecycle"], "starting");
    assert!(state["failing"][0].as_str().unwrap().contains("app (tcp"), "{state}");
    assert_eq!(sidecar.ready().await, 503);
    assert!(nacos.instances("down").await.is_empty());
    let body = client().get(sidecar.admin_url("/ready")).send().await.unwrap().text().await.unwrap();
    assert!(body.contains("not ready") && body.contains("app"), "{body}");
    // Alive all the same: the kubelet must not restart a sidecar that waits for its app.
    let live = client().get(sidecar.admin_url("/live")).send().await.unwrap();
    assert_eq!(live.status(), 200, "/live while the app is down");
}

#[tokio::test]
async fn registers_with_metadata_only_after_the_register_delay() {
    let nacos = Rnacos::start().await;
    let app = App::start("delayed").await;
    let sidecar = Sidecar::start(
        "delayed",
        app.addr.port(),
        &nacos.url(),
        &["--register-delay", "2s", "--symbol", "canary", "--app-version", "7.1.0"],
    )
    .await;
    eventually(T, "registering", || async { sidecar.lifecycle().await == "registering" }).await;
    let registering_since = sidecar.state().await["since_ms"].as_u64().unwrap();
    // During the delay: neither ready nor in Nacos.
    assert_eq!(sidecar.ready().await, 503);
    assert!(nacos.instances("delayed").await.is_empty());
    assert_eq!(sidecar.lifecycle().await, "registering", "the delay ended too early");

    sidecar.wait_ready(T).await;
    eventually(T, "listed in Nacos", || async { nacos.lists("delayed", sidecar.inbound).await }).await;
    let hosts = nacos.instances("delayed").await;
    let meta = &hosts[0]["metadata"];
    assert_eq!(meta["berth.symbol"], "canary");
    assert_eq!(meta["berth.version"], "7.1.0");
    assert_eq!(meta["berth.protocol"], "h2c");
    let started_at: u64 = meta["berth.started_at"].as_str().unwrap().parse().unwrap();
    assert!(
        started_at >= registering_since + 1_900,
        "registered {} ms after becoming healthy; the delay is 2 s",
        started_at - registering_since
    );
    assert!(hosts[0]["ephemeral"].as_bool().unwrap());
}

#[tokio::test]
async fn app_killed_while_serving_deregisters_and_comes_back() {
    let nacos = Rnacos::start().await;
    let mut app = App::start("flaky").await;
    let port = app.addr.port();
    let sidecar = Sidecar::start("flaky", port, &nacos.url(), &[]).await;
    sidecar.wait_ready(T).await;
    eventually(T, "listed", || async { nacos.lists("flaky", sidecar.inbound).await }).await;

    app.proc.kill();
    eventually(T, "unready after the app died", || async { sidecar.ready().await == 503 }).await;
    eventually(T, "deregistered after the app died", || async {
        !nacos.lists("flaky", sidecar.inbound).await
    })
    .await;
    assert_eq!(sidecar.lifecycle().await, "starting");

    let _app = App::start_on("flaky", port).await;
    sidecar.wait_ready(T).await;
    eventually(T, "registered again", || async { nacos.lists("flaky", sidecar.inbound).await }).await;
    let m = sidecar.metrics().await;
    assert!(m.contains("berth_registrations_total 2"), "{m}");
    assert!(m.contains("berth_deregistrations_total 1"), "{m}");
}

#[tokio::test]
async fn nacos_unreachable_at_start_then_restarted() {
    let mut nacos = Rnacos::reserve();
    let app = App::start("patient").await;
    let sidecar = Sidecar::start("patient", app.addr.port(), &nacos.url(), &[]).await;
    sidecar.proc.wait_line("cannot register; not ready until registered", T).await;
    let line = sidecar.proc.wait_line("is unreachable", T).await;
    assert!(line.contains(&format!("127.0.0.1:{}", nacos.http)), "the log names the registry: {line}");
    assert_eq!(sidecar.ready().await, 503);
    assert_eq!(sidecar.lifecycle().await, "registering");

    nacos.restart().await;
    sidecar.wait_ready(Duration::from_secs(30)).await;
    eventually(T, "registered once Nacos is up", || async { nacos.lists("patient", sidecar.inbound).await })
        .await;

    // A restarted rnacos keeps no ephemeral instances: being listed again means re-registered.
    nacos.restart().await;
    eventually(Duration::from_secs(30), "registered again after rnacos restarted", || async {
        nacos.lists("patient", sidecar.inbound).await
    })
    .await;
}

#[tokio::test]
async fn a_dependency_gates_readiness() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::start("dependent").await;
    let db = ClosedPort::new();
    let dependency = format!("tcp://127.0.0.1:{}", db.port);
    let sidecar =
        Sidecar::start("dependent", app.addr.port(), &dir_registry(&dir), &["--dependency", &dependency])
            .await;
    eventually(T, "the dependency check has failed", || async {
        sidecar.state().await["failing"].to_string().contains(&dependency)
    })
    .await;
    assert_eq!(sidecar.ready().await, 503);
    let _db = db.listen();
    sidecar.wait_ready(T).await;
}

#[tokio::test]
async fn the_app_being_down_is_a_503_that_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let app_port = ClosedPort::new();
    let sidecar = Sidecar::start("gone", app_port.port, &dir_registry(&dir), &[]).await;
    // An answer, not a hang: the client gives up long before a hung request would end.
    let resp = client().get(sidecar.url("/")).timeout(T).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["x-berth-error"], "app-unavailable");
    let body = resp.text().await.unwrap();
    assert!(body.contains("not accepting connections"), "{body}");
}

#[tokio::test]
async fn proxies_http1_and_h2c_with_forwarding_headers_and_streamed_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::start("echo").await;
    // Two threads here; every other test runs the single-threaded default.
    let sidecar = Sidecar::start("echo", app.addr.port(), &dir_registry(&dir), &["--workers", "2"]).await;
    sidecar.wait_ready(T).await;

    let upload = vec![b'x'; 3 * 1024 * 1024];
    let resp = client()
        .post(sidecar.url("/echo?q=1"))
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret")
        .header("keep-alive", "timeout=5")
        .header("x-forwarded-for", "10.1.2.3")
        .header("x-end-to-end", "kept")
        .body(upload)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let echo: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(echo["body_bytes"], 3 * 1024 * 1024);
    assert_eq!(echo["path"], "/echo?q=1");
    let headers = &echo["headers"];
    assert_eq!(headers["x-forwarded-for"], "10.1.2.3, 127.0.0.1");
    assert_eq!(headers["x-end-to-end"], "kept");
    assert!(headers.get("x-hop").is_none() && headers.get("keep-alive").is_none(), "{headers}");

    let h2 = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    let resp = h2.get(sidecar.url("/echo")).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let echo: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(echo["version"], "HTTP/1.1", "the app speaks HTTP/1.1");
    assert!(echo["headers"]["host"].as_str().unwrap().starts_with("127.0.0.1:"), "{echo}");

    // A streamed response arrives in pieces: its first chunk comes through while the app is
    // still a minute away from sending the second.
    let mut resp = client().get(sidecar.url("/stream?chunks=2&ms=60000")).send().await.unwrap();
    let first = tokio::time::timeout(T, resp.chunk()).await.expect("the first chunk was held back");
    assert_eq!(String::from_utf8_lossy(&first.unwrap().unwrap()), "chunk 0\n");
}

#[tokio::test]
async fn metrics_are_valid_prometheus_text() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::start("metered").await;
    let sidecar = Sidecar::start("metered", app.addr.port(), &dir_registry(&dir), &[]).await;
    sidecar.wait_ready(T).await;
    for _ in 0..3 {
        assert_eq!(client().get(sidecar.url("/")).send().await.unwrap().status(), 200);
    }
    client().get(sidecar.url("/nope")).send().await.unwrap();
    let text = sidecar.metrics().await;
    // Prometheus's own parser and linter: a malformed line, a missing HELP or TYPE fails.
    assert_valid_metrics(&text, "the sidecar's /metrics");
    // And the check can fail: the same page with one label value left unclosed is refused.
    let broken = text.replacen("\"} ", "} ", 1);
    assert!(!promtool_check(&broken).0, "promtool took a malformed line:\n{broken}");
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let s = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{text}"));
        match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        }
    };
    assert_eq!(value("berth_requests_total", &[("direction", "inbound"), ("status_class", "2xx")]), 3.0);
    assert_eq!(value("berth_requests_total", &[("direction", "inbound"), ("status_class", "4xx")]), 1.0);
    assert_eq!(value("berth_requests_in_flight", &[("direction", "inbound")]), 0.0);
    assert_eq!(value("berth_lifecycle_state", &[("state", "warming")]), 1.0);
    assert_eq!(value("berth_lifecycle_state", &[("state", "starting")]), 0.0);
    assert_eq!(value("berth_registrations_total", &[]), 1.0);
    for name in [
        "berth_request_duration_seconds_count",
        "berth_connections_open",
        "berth_deregistrations_total",
        "berth_drain_deregistration_seconds",
        "berth_drain_requests_total",
        "berth_drain_duration_seconds",
    ] {
        assert!(scrape.samples.iter().any(|s| s.metric == name), "no {name}");
    }
    for s in &scrape.samples {
        assert!(s.metric.starts_with("berth_"), "{}", s.metric);
    }
}

#[tokio::test]
async fn an_h2c_app_is_spoken_to_in_http2() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::start("h2app").await;
    let sidecar =
        Sidecar::start("h2app", app.addr.port(), &dir_registry(&dir), &["--app-protocol", "h2c"]).await;
    sidecar.wait_ready(T).await;
    let echo: serde_json::Value =
        client().get(sidecar.url("/echo")).send().await.unwrap().json().await.unwrap();
    assert_eq!(echo["version"], "HTTP/2.0", "{echo}");
    assert!(echo["headers"]["host"].as_str().is_some_and(|h| h.starts_with("127.0.0.1:")), "{echo}");
}

#[tokio::test]
async fn upgrades_are_carried_to_the_app() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::start("ws").await;
    let sidecar = Sidecar::start("ws", app.addr.port(), &dir_registry(&dir), &[]).await;
    sidecar.wait_ready(T).await;
    let back = crate::support::upgrade_echo(sidecar.inbound, "ws", "/upgrade").await;
    assert_eq!(back, "ping through the tunnel\n");
    // The tunnel is not a request in flight: a drain does not wait for it.
    assert_eq!(sidecar.state().await["in_flight"], 0);
}

#[tokio::test]
async fn nacos_credentials_in_the_url_log_in_and_are_never_printed() {
    let nacos = Rnacos::start_with_auth("berth", "s3cret-pass-9").await;
    let app = App::start("guarded").await;
    let url = |password: &str| {
        format!("nacos://berth:{password}@127.0.0.1:{}?grpc_port={}", nacos.http, nacos.grpc)
    };

    let refused = Sidecar::start("guarded", app.addr.port(), &url("wrong-pass-1"), &[]).await;
    let line = refused.proc.wait_line("cannot register", T).await;
    assert!(line.contains("403"), "Nacos's refusal is in the log: {line}");
    assert_eq!(refused.ready().await, 503);
    assert!(!refused.proc.output().contains("wrong-pass-1"), "a password was printed");

    let admitted = Sidecar::start("guarded", app.addr.port(), &url("s3cret-pass-9"), &[]).await;
    admitted.wait_ready(Duration::from_secs(30)).await;
    eventually(T, "registered through the login", || async {
        nacos.lists("guarded", admitted.inbound).await
    })
    .await;
    assert!(!admitted.proc.output().contains("s3cret-pass-9"), "a password was printed");
}

/// The sample app's own record of its health answers (`P` passed, `F` failed).
async fn health_log(app: &App) -> String {
    client().get(format!("http://{}/healthz/log", app.addr)).send().await.unwrap().text().await.unwrap()
}

/// Sets the sample app's health: `ok`, for the next `n` checks only (then the opposite).
async fn set_health(app: &App, ok: bool, n: Option<u32>) {
    let mut url = format!("http://{}/healthz?ok={ok}", app.addr);
    if let Some(n) = n {
        url.push_str(&format!("&for={n}"));
    }
    assert!(client().post(url).send().await.unwrap().status().is_success());
}

/// Waits until the answers given after `from` contain `pattern`.
async fn answered(app: &App, from: usize, pattern: &str) {
    eventually(T, &format!("the app answered {pattern} to its checks"), || async {
        health_log(app).await.get(from..).is_some_and(|l| l.contains(pattern))
    })
    .await;
}

#[tokio::test]
async fn health_thresholds_count_consecutive_checks() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::start("counted").await;
    set_health(&app, false, None).await;
    let sidecar = Sidecar::start(
        "counted",
        app.addr.port(),
        &dir_registry(&dir),
        &["--app-health", "http:/healthz", "--healthy-threshold", "3", "--unhealthy-threshold", "3"],
    )
    .await;
    answered(&app, 0, "FF").await;
    // Two passes, then failing again: short of the healthy threshold, never registered.
    let from = health_log(&app).await.len();
    set_health(&app, true, Some(2)).await;
    answered(&app, from, "PPF").await;
    let m = sidecar.metrics().await;
    assert_eq!(sample(&m, "berth_registrations_total"), Some(0.0), "two passes made it healthy");
    assert_eq!(sidecar.lifecycle().await, "starting");
    // Three in a row: healthy, registered, ready.
    set_health(&app, true, None).await;
    sidecar.wait_ready(T).await;
    let log = health_log(&app).await;
    assert!(log.ends_with("PPP"), "ready after fewer than three passes: {log}");

    // Two failures, then passing again: short of the unhealthy threshold, never deregistered.
    let from = log.len();
    set_health(&app, false, Some(2)).await;
    answered(&app, from, "FFP").await;
    let m = sidecar.metrics().await;
    assert_eq!(sample(&m, "berth_deregistrations_total"), Some(0.0), "two failures made it unhealthy");
    assert_eq!(sidecar.ready().await, 200);
    // Three: unhealthy, deregistered, unready.
    set_health(&app, false, None).await;
    eventually(T, "deregistered after three failures", || async {
        sample(&sidecar.metrics().await, "berth_deregistrations_total") == Some(1.0)
    })
    .await;
    assert_eq!(sidecar.ready().await, 503);
    assert!(health_log(&app).await.ends_with("FFF"));
}

#[tokio::test]
async fn an_http_dependency_gates_readiness_on_its_answer() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::start("needy").await;
    let db = App::start("db").await;
    set_health(&db, false, None).await;
    let dependency = format!("http://{}/healthz", db.addr);
    let sidecar =
        Sidecar::start("needy", app.addr.port(), &dir_registry(&dir), &["--dependency", &dependency]).await;
    answered(&db, 0, "FF").await;
    let state = sidecar.state().await;
    assert!(state["failing"].to_string().contains(&dependency), "the dependency is named: {state}");
    assert_eq!(sidecar.ready().await, 503, "a 503 from the dependency is a failure");
    set_health(&db, true, None).await;
    sidecar.wait_ready(T).await;
    // A dependency answering 404 (a wrong path) fails too.
    let missing = format!("http://{}/nope", db.addr);
    let other =
        Sidecar::start("needy", app.addr.port(), &dir_registry(&dir), &["--dependency", &missing]).await;
    eventually(T, "the 404 dependency has failed", || async {
        other.state().await["failing"].to_string().contains(&missing)
    })
    .await;
    assert_eq!(other.ready().await, 503);
}

#[tokio::test]
async fn asking_a_stopped_rnacos_for_instances_is_an_error_not_an_empty_list() {
    // Every "not registered" and "deregistered" assertion reads rnacos's list: with rnacos
    // down that must fail, not read as an empty list.
    let mut nacos = Rnacos::start().await;
    assert_eq!(nacos.try_instances("anything").await, Ok(Vec::new()));
    nacos.stop();
    let err = nacos.try_instances("anything").await.unwrap_err();
    assert!(err.contains("listing anything in rnacos"), "{err}");
}
