//! Outbound promises that need no fault: timeouts (504), the retry budget and exact retry
//! counts, `/endpoints` load and weights, h2c both ways, a provider's `app-unavailable` moving
//! a POST whose body was kept, bad symbols and bad options — through real sidecars.

use std::net::SocketAddr;
use std::time::Duration;

use crate::faults_outbound::{metric, pair, provider, sees};
use crate::support::{App, Proc, Sidecar, eventually};

const T: Duration = Duration::from_secs(20);

/// The request timeout answers 504 for the whole request; the per-attempt timeout moves an
/// idempotent request on, counts against the instance, and ends in a 504 once nothing is left.
#[tokio::test]
async fn request_and_attempt_timeouts_answer_504() {
    let dir = tempfile::tempdir().unwrap();
    let (_p, consumer, _capp) = pair(&dir, "sloth", &[], &["--request-timeout", "500ms", "--no-hedge"]).await;
    let resp = consumer.outbound_client().get("http://sloth/slow?ms=3000").send().await.unwrap();
    assert_eq!(resp.status(), 504);
    assert_eq!(resp.headers()["x-berth-error"], "timeout");
    let body = resp.text().await.unwrap();
    assert!(body.contains("`sloth` did not answer within 500ms"), "{body}");

    let registry = crate::support::dir_registry(&dir);
    let _q = provider(&registry, "sloth", "stable", "q", &[]).await;
    let capp = App::start("consumer-2").await;
    let args = ["--services", "sloth", "--attempt-timeout", "300ms", "--no-hedge", "--eject-after", "100"];
    let consumer = Sidecar::start("consumer-2", capp.addr.port(), &registry, &args).await;
    sees(&consumer, "sloth", 2).await;
    let proxy = consumer.outbound_client();
    let resp = proxy.get("http://sloth/slow?ms=3000").send().await.unwrap();
    assert_eq!(resp.status(), 504);
    assert_eq!(resp.headers()["x-berth-error"], "timeout");
    let body = resp.text().await.unwrap();
    assert!(body.contains("did not answer within 300ms"), "{body}");
    let m = consumer.metrics().await;
    assert_eq!(
        metric(&m, "berth_outbound_retries_total", &[("service", "sloth"), ("reason", "timeout")]),
        1.0,
        "{m}"
    );
    // A fast request still answers: the timeout is per attempt, not per instance.
    assert_eq!(proxy.get("http://sloth/slow?ms=10").send().await.unwrap().status(), 200);
}

/// A broken instance (every connection closed unanswered) and a good one; retries of
/// idempotent requests stop when the budget is spent, and every retry is counted exactly once.
#[tokio::test]
async fn retries_stop_when_the_budget_is_spent_and_are_counted_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let registry = crate::support::dir_registry(&dir);
    let _good = provider(&registry, "orders", "stable", "good", &[]).await;
    let broken = App::start_with("broken", 0, &["--reset"]).await;
    crate::support::register_in_dir(&dir, "orders", &broken, "canary");
    let capp = App::start("consumer").await;
    let args = [
        "--services",
        "orders",
        "--eject-after",
        "1000",
        "--no-hedge",
        "--retry-budget",
        "20",
        "--retry-min-per-second",
        "0",
    ];
    let consumer = Sidecar::start("consumer", capp.addr.port(), &registry, &args).await;
    sees(&consumer, "orders", 2).await;
    let proxy = consumer.outbound_client();
    let retries = |m: &str, reason: &str| {
        metric(m, "berth_outbound_retries_total", &[("service", "orders"), ("reason", reason)])
    };

    // A POST that is not retried is not counted as a retry.
    let post =
        proxy.post("http://orders/echo").header("x-berth-symbol", "canary").body("x").send().await.unwrap();
    assert_eq!(post.status(), 502);
    assert_eq!(retries(&consumer.metrics().await, "reset"), 0.0);

    let (mut ok, mut spent) = (0, 0);
    for _ in 0..30 {
        let resp = proxy.get("http://orders/").header("x-berth-symbol", "canary").send().await.unwrap();
        match resp.status().as_u16() {
            200 => ok += 1,
            502 => {
                let body = resp.text().await.unwrap();
                assert!(body.contains("the retry budget is spent"), "{body}");
                spent += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    let m = consumer.metrics().await;
    // 20% of 31 requests, give or take the budget's rounding.
    assert!((4..=8).contains(&ok), "retried {ok} of 30 (spent: {spent})");
    assert_eq!(retries(&m, "reset"), f64::from(ok), "each retry counted once:\n{m}");
    let requests = |symbol: &str, class: &str| {
        metric(
            &m,
            "berth_outbound_requests_total",
            &[("service", "orders"), ("symbol", symbol), ("status_class", class)],
        )
    };
    assert_eq!(
        requests("stable", "2xx"),
        f64::from(ok),
        "a retried request counts once, by where it was answered"
    );
    assert_eq!(requests("canary", "5xx"), f64::from(spent + 1));
    let count = |symbol: &str| {
        metric(
            &m,
            "berth_outbound_request_duration_seconds_count",
            &[("service", "orders"), ("symbol", symbol)],
        )
    };
    assert_eq!(count("stable") + count("canary"), 31.0);
}

/// `/endpoints` shows each instance's load, latency and effective weight: a warming instance
/// next to a warm one gets a fraction of its registry weight; an instance with a request in
/// flight shows it.
#[tokio::test]
async fn endpoints_show_load_latency_and_effective_weight() {
    let dir = tempfile::tempdir().unwrap();
    let registry = crate::support::dir_registry(&dir);
    let warm = provider(&registry, "menu", "stable", "warm", &["--warmup", "0s"]).await;
    let warming = provider(&registry, "menu", "stable", "warming", &["--warmup", "10m"]).await;
    let capp = App::start("consumer").await;
    let consumer = Sidecar::start("consumer", capp.addr.port(), &registry, &["--services", "menu"]).await;
    sees(&consumer, "menu", 2).await;
    let proxy = consumer.outbound_client();
    for _ in 0..20 {
        assert_eq!(proxy.get("http://menu/").send().await.unwrap().status(), 200);
    }
    let slow = tokio::spawn({
        let proxy = proxy.clone();
        async move {
            proxy
                .get("http://menu/slow?ms=1500")
                .header("x-berth-symbol", "stable")
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    let instance = |doc: &serde_json::Value, addr: SocketAddr| {
        doc["services"]["menu"]["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["addr"] == addr.to_string())
            .cloned()
            .unwrap()
    };
    eventually(T, "the slow request shows in flight", || async {
        let doc = consumer.endpoints().await;
        [&warm, &warming].iter().any(|p| instance(&doc, p.sidecar.inbound)["in_flight"] == 1)
    })
    .await;
    let doc = consumer.endpoints().await;
    let (w, c) = (instance(&doc, warm.sidecar.inbound), instance(&doc, warming.sidecar.inbound));
    assert_eq!(w["state"], "serving", "{doc}");
    assert_eq!(c["state"], "warming", "{doc}");
    assert_eq!((w["weight"].as_f64(), c["weight"].as_f64()), (Some(1.0), Some(1.0)));
    assert_eq!(w["effective_weight"].as_f64(), Some(1.0));
    let e = c["effective_weight"].as_f64().unwrap();
    assert!((0.05..0.1).contains(&e), "a warming instance's effective weight: {e}");
    let busy = if w["in_flight"] == 1 { &w } else { &c };
    assert!(
        busy["load"].as_f64().unwrap() > busy["ewma_ms"].as_f64().unwrap() * 1.9,
        "load = latency × (in flight + 1): {busy}"
    );
    assert!(w["ewma_ms"].as_f64().unwrap() > 0.0, "{w}");
    assert!(doc["services"]["menu"]["hedge_after_ms"].as_f64().unwrap() >= 50.0, "{doc}");
    assert_eq!(slow.await.unwrap(), 200);
}

/// The app may speak HTTP/2 (h2c, prior knowledge) to the outbound port, and the consumer speaks
/// HTTP/2 to an instance's sidecar: many requests, one connection.
#[tokio::test]
async fn outbound_speaks_h2c_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let (provider, consumer, _capp) = pair(&dir, "chat", &[], &[]).await;
    let h2 = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    let url = format!("http://{}/chat.stable/slow?ms=800", consumer.outbound);
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let (h2, url) = (h2.clone(), url.clone());
            tokio::spawn(async move {
                let r = h2.get(&url).send().await.unwrap();
                (r.version(), r.status(), r.headers()["x-app-name"].to_str().unwrap().to_owned())
            })
        })
        .collect();
    let inbound = |m: &str, name: &str| metric(m, name, &[("direction", "inbound")]);
    eventually(T, "four requests in flight at the provider", || async {
        inbound(&provider.sidecar.metrics().await, "berth_requests_in_flight") == 4.0
    })
    .await;
    assert_eq!(inbound(&provider.sidecar.metrics().await, "berth_connections_open"), 1.0, "multiplexed");
    for c in calls {
        assert_eq!(c.await.unwrap(), (reqwest::Version::HTTP_2, reqwest::StatusCode::OK, "p".to_owned()));
    }
}

/// Bad outbound resilience options are refused before anything starts, naming the option.
#[tokio::test]
async fn bad_outbound_options_exit_64_naming_the_option() {
    let cases: [(&[&str], &str); 4] = [
        (&["--hedge-delay-min", "0s"], "--hedge-delay-min"),
        (&["--hedge-delay-min", "2s", "--hedge-delay-max", "1s"], "--hedge-delay-max"),
        (&["--h2-keepalive-timeout", "0s"], "--h2-keepalive-timeout"),
        (&["--retry-budget", "2000"], "--retry-budget"),
    ];
    for (args, option) in cases {
        let mut cmd = crate::support::berth();
        cmd.args(["proxy", "--service", "s", "--app-port", "8080"])
            .args(["--inbound", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--outbound", "127.0.0.1:0"])
            .args(args);
        // A process, killed when this test ends, in case it starts instead of refusing.
        let mut proc = Proc::spawn("berth proxy (bad option)", cmd);
        let status = proc.wait_exit(Duration::from_secs(10)).await;
        let output = proc.output();
        assert_eq!(status.code(), Some(64), "{args:?}: {output}");
        assert!(output.contains(option), "{args:?}: {output}");
    }
    let help = crate::support::berth().args(["proxy", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for option in
        ["--attempt-timeout", "--hedge-delay-min", "--h2-keepalive-interval", "--retry-budget", "--no-hedge"]
    {
        assert!(help.contains(option), "--help lacks {option}");
    }
}

/// A provider sidecar whose app is down answers `503 app-unavailable`: its app never saw the
/// request, so any request moves to another instance — a POST too, its body replayed whole,
/// whether its length was given or it came chunked.
#[tokio::test]
async fn app_unavailable_moves_any_request_whose_body_was_kept() {
    let dir = tempfile::tempdir().unwrap();
    let registry = crate::support::dir_registry(&dir);
    let _good = provider(&registry, "pay", "stable", "good", &[]).await;
    // Registered while its app ran; the app then stops, and the sidecar has not noticed yet
    // (its health checks are 10 minutes apart).
    let mut down = provider(&registry, "pay", "blue", "down", &["--health-interval", "10m"]).await;
    down.app.proc.kill();
    let capp = App::start("consumer").await;
    let consumer = Sidecar::start(
        "consumer",
        capp.addr.port(),
        &registry,
        &["--services", "pay", "--eject-after", "100"],
    )
    .await;
    sees(&consumer, "pay", 2).await;
    let proxy = consumer.outbound_client();
    let body = "order 9 ".repeat(1_000);
    let sized = proxy
        .post("http://pay/echo")
        .header("x-berth-symbol", "blue")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(sized.status(), 200);
    assert_eq!(sized.headers()["x-app-name"], "good");
    let echoed: serde_json::Value = sized.json().await.unwrap();
    assert_eq!(echoed["body_bytes"].as_u64(), Some(body.len() as u64), "{echoed}");
    // Chunked, by hand: the length is known to nobody until the body ends.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(consumer.outbound).await.unwrap();
    let mut request = String::from(
        "POST http://pay/echo HTTP/1.1\r\nHost: pay\r\nx-berth-symbol: blue\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    );
    for i in 0..8 {
        let part = format!("part {i};");
        request.push_str(&format!("{:x}\r\n{part}\r\n", part.len()));
    }
    request.push_str("0\r\n\r\n");
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(T, conn.read_to_string(&mut answer)).await.unwrap().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("x-app-name: good") && answer.contains("\"body_bytes\":56"), "{answer}");
    let m = consumer.metrics().await;
    assert_eq!(
        metric(&m, "berth_outbound_retries_total", &[("service", "pay"), ("reason", "app-unavailable")]),
        2.0,
        "{m}"
    );
}

/// A path prefix whose symbol is not one answers `400 bad-symbol`, as a bad `x-berth-symbol`
/// does, not `no-service`.
#[tokio::test]
async fn a_bad_path_prefix_symbol_is_a_bad_symbol() {
    let dir = tempfile::tempdir().unwrap();
    let registry = crate::support::dir_registry(&dir);
    let capp = App::start("consumer").await;
    let consumer = Sidecar::start("consumer", capp.addr.port(), &registry, &[]).await;
    let resp = crate::support::client()
        .get(format!("http://{}/users.Canary/x", consumer.outbound))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["x-berth-error"], "bad-symbol");
    let body = resp.text().await.unwrap();
    assert!(body.contains("path prefix") && body.contains("Canary"), "{body}");
}
