//! The drain: deregistered at once, serving stragglers with the read-only signal for drain-min,
//! in-flight work finished, then a clean exit — or a forced one.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::support::netns::Netns;
use crate::support::{App, Proc, Rnacos, Sidecar, berth, client, dir_registry, eventually};

const T: Duration = Duration::from_secs(15);

async fn serving(service: &str, registry: &str, extra: &[&str]) -> (App, Sidecar) {
    let app = App::start(service).await;
    let sidecar = Sidecar::start(service, app.addr.port(), registry, extra).await;
    sidecar.wait_ready(T).await;
    (app, sidecar)
}

/// An HTTP/1.1 connection we control: one TCP connection, requests sent in order.
async fn h1_connection(
    addr: SocketAddr,
) -> (hyper::client::conn::http1::SendRequest<Empty<Bytes>>, tokio::task::JoinHandle<()>) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    (
        send,
        tokio::spawn(async move {
            let _ = conn.await;
        }),
    )
}

fn get(path: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get(path).header("host", "test").body(Empty::new()).unwrap()
}

/// The drain's own account of how long it took, from its last log line (`after=3.5s`).
fn drain_took(out: &str) -> Duration {
    let line = out.lines().rev().find(|l| l.contains("stopped: drain")).unwrap_or_else(|| panic!("{out}"));
    let after = line.split(" after=").nth(1).and_then(|r| r.split(' ').next()).unwrap();
    // `Duration`'s Debug form: `3.5s`, `812ms`, `20.1µs`.
    let digits = after.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap();
    let (number, unit) = after.split_at(digits);
    let number: f64 = number.parse().unwrap();
    let scale = match unit {
        "s" => 1.0,
        "ms" => 1e-3,
        "µs" => 1e-6,
        "ns" => 1e-9,
        other => panic!("unit {other} in {line}"),
    };
    Duration::from_secs_f64(number * scale)
}

#[tokio::test]
async fn sigterm_deregisters_at_once_serves_stragglers_and_exits_zero() {
    let nacos = Rnacos::start().await;
    let (_app, mut sidecar) =
        serving("leaving", &nacos.url(), &["--drain-min", "3s", "--drain-quiet", "500ms"]).await;
    eventually(T, "listed", || async { nacos.lists("leaving", sidecar.inbound).await }).await;

    let slow = tokio::spawn(client().get(sidecar.url("/slow?ms=2500")).send());
    eventually(T, "slow request in flight", || async { sidecar.state().await["in_flight"] == 1 }).await;

    sidecar.proc.signal("TERM");
    eventually(T, "gone from Nacos", || async { !nacos.lists("leaving", sidecar.inbound).await }).await;
    // At once: gone while the drain is still in its first phase (drain-min not over).
    let state = sidecar.state().await;
    assert_eq!(state["lifecycle"], "draining");
    assert_eq!(state["drain"]["closing"], false, "deregistered only after drain-min: {state}");
    assert_eq!(sidecar.ready().await, 503);

    // Stragglers during drain-min: served, each with the signal, each connection closed.
    for _ in 0..5 {
        let resp = client().get(sidecar.url("/")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-berth-lifecycle"], "draining");
        assert_eq!(resp.headers()["connection"], "close");
    }
    let state = sidecar.state().await;
    assert_eq!(state["drain"]["closing"], false, "the stragglers came after drain-min: {state}");

    let slow = slow.await.unwrap().unwrap();
    assert_eq!(slow.status(), 200, "the request in flight when the drain started completed");
    assert_eq!(slow.headers()["x-berth-lifecycle"], "draining");
    assert_eq!(slow.text().await.unwrap(), "hello from leaving\n");

    let status = sidecar.proc.wait_exit(T).await;
    assert_eq!(status.code(), Some(0), "exit 0 after the quiet period");
    let out = sidecar.proc.output();
    assert!(out.contains("stopped: drain complete"), "{out}");
    assert!(drain_took(&out) >= Duration::from_secs(3), "ended before drain-min: {out}");
}

#[tokio::test]
async fn a_keep_alive_connection_serves_one_more_request_then_closes() {
    let dir = tempfile::tempdir().unwrap();
    let (_app, sidecar) = serving("keepalive", &dir_registry(&dir), &["--drain-min", "5s"]).await;
    let (mut send, conn) = h1_connection(sidecar.inbound).await;
    let resp = send.send_request(get("/")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("x-berth-lifecycle").is_none());
    resp.into_body().collect().await.unwrap();

    let drain = client().post(sidecar.admin_url("/drain")).send().await.unwrap();
    assert_eq!(drain.status(), 202);
    // Not cut at the start of the drain: the idle connection still takes a request.
    send.ready().await.unwrap();
    let resp = send.send_request(get("/")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-berth-lifecycle"], "draining");
    assert_eq!(resp.headers()["connection"], "close");
    resp.into_body().collect().await.unwrap();
    tokio::time::timeout(T, conn).await.expect("closed after that response").unwrap();
}

#[tokio::test]
async fn idle_keep_alive_connections_close_after_drain_min_not_before() {
    let dir = tempfile::tempdir().unwrap();
    let (_app, sidecar) =
        serving("idle", &dir_registry(&dir), &["--drain-min", "2s", "--drain-quiet", "5s"]).await;
    let (mut send, conn) = h1_connection(sidecar.inbound).await;
    send.send_request(get("/")).await.unwrap().into_body().collect().await.unwrap();
    client().post(sidecar.admin_url("/drain")).send().await.unwrap();
    // Until the sidecar itself says drain-min is over, the connection stays open: a close
    // seen before a later `closing: false` happened during drain-min.
    loop {
        let closed = conn.is_finished();
        let closing = sidecar.state().await["drain"]["closing"] == true;
        assert!(!closed || closing, "the idle connection was closed during drain-min");
        if closing {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::timeout(T, conn).await.expect("closed after drain-min").unwrap();
}

#[tokio::test]
async fn http2_connections_get_a_graceful_goaway() {
    let dir = tempfile::tempdir().unwrap();
    let (_app, sidecar) = serving("h2", &dir_registry(&dir), &["--drain-min", "10s"]).await;
    let stream = tokio::net::TcpStream::connect(sidecar.inbound).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    let conn = tokio::spawn(conn);
    let resp = send.send_request(get("/")).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
    // A stream in flight when the drain starts still completes.
    let slow = tokio::spawn(send.send_request(get("/slow?ms=1000")));
    eventually(T, "slow stream in flight", || async { sidecar.state().await["in_flight"] == 1 }).await;

    client().post(sidecar.admin_url("/drain")).send().await.unwrap();
    let slow = slow.await.unwrap().unwrap();
    assert_eq!(slow.status(), 200);
    assert_eq!(slow.headers()["x-berth-lifecycle"], "draining");
    slow.into_body().collect().await.unwrap();
    // GOAWAY, long before drain-min is over: the connection ends.
    tokio::time::timeout(T, conn).await.expect("GOAWAY closed the connection").unwrap().unwrap();
    let state = sidecar.state().await;
    assert_eq!(state["drain"]["closing"], false, "ended by drain-min, not by a GOAWAY: {state}");
    // New connections are still accepted and served.
    let h2 = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    let resp = h2.get(sidecar.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-berth-lifecycle"], "draining");
}

#[tokio::test]
async fn drain_wait_answers_once_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let (_app, mut sidecar) =
        serving("waiter", &dir_registry(&dir), &["--drain-min", "2s", "--drain-quiet", "300ms"]).await;
    let resp = client().get(sidecar.admin_url("/drain?wait=true")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let state: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(state["lifecycle"], "stopped");
    let took = state["drain"]["elapsed_ms"].as_u64().unwrap();
    assert!(took >= 2_000, "answered {took} ms into a drain whose drain-min is 2 s: {state}");
    assert_eq!(sidecar.proc.wait_exit(T).await.code(), Some(0));
}

#[tokio::test]
async fn drain_timeout_forces_the_exit() {
    let dir = tempfile::tempdir().unwrap();
    let (_app, mut sidecar) =
        serving("stuck", &dir_registry(&dir), &["--drain-min", "500ms", "--drain-timeout", "2s"]).await;
    let slow = tokio::spawn(client().get(sidecar.url("/slow?ms=60000")).send());
    eventually(T, "slow request in flight", || async { sidecar.state().await["in_flight"] == 1 }).await;
    sidecar.proc.signal("TERM");
    let status = sidecar.proc.wait_exit(T).await;
    assert_eq!(status.code(), Some(2), "a forced drain exits non-zero");
    let out = sidecar.proc.output();
    assert!(out.contains("drain timed out") && out.contains("in_flight=1"), "{out}");
    assert!(drain_took(&out) >= Duration::from_secs(2), "forced before drain-timeout: {out}");
    slow.abort();
}

#[tokio::test]
async fn a_second_sigterm_forces_the_exit() {
    let dir = tempfile::tempdir().unwrap();
    let (_app, mut sidecar) =
        serving("impatient", &dir_registry(&dir), &["--drain-min", "30s", "--drain-timeout", "60s"]).await;
    let _slow = tokio::spawn(client().get(sidecar.url("/slow?ms=60000")).send());
    eventually(T, "slow request in flight", || async { sidecar.state().await["in_flight"] == 1 }).await;
    sidecar.proc.signal("TERM");
    eventually(T, "draining", || async { sidecar.lifecycle().await == "draining" }).await;
    sidecar.proc.signal("TERM");
    // Well before drain-min (30 s) could end it.
    assert_eq!(sidecar.proc.wait_exit(T).await.code(), Some(2));
    let out = sidecar.proc.output();
    assert!(out.contains("drain forced") && out.contains("in_flight=1"), "{out}");
}

#[tokio::test]
async fn drain_state_and_metrics_report_progress() {
    let dir = tempfile::tempdir().unwrap();
    let (_app, sidecar) = serving("progress", &dir_registry(&dir), &["--drain-min", "5s"]).await;
    client().post(sidecar.admin_url("/drain")).send().await.unwrap();
    for _ in 0..3 {
        client().get(sidecar.url("/")).send().await.unwrap();
    }
    let state = sidecar.state().await;
    assert_eq!(state["lifecycle"], "draining");
    assert_eq!(state["drain"]["received_while_draining"], 3);
    assert_eq!(state["drain"]["closing"], false);
    assert!(state["instance"].is_null());
    eventually(T, "deregistration counted", || async {
        sidecar.metrics().await.contains("berth_deregistrations_total 1")
    })
    .await;
    let m = sidecar.metrics().await;
    assert!(m.contains("berth_drain_requests_total 3"), "{m}");
    let live = client().get(sidecar.admin_url("/live")).send().await.unwrap();
    assert_eq!(live.status(), 200, "/live while draining");
    assert!(m.contains("berth_lifecycle_state{state=\"draining\"} 1"), "{m}");
}

#[tokio::test]
async fn outbound_stays_open_after_the_drain_until_the_app_stops() {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir_registry(&dir);
    let (_provider_app, provider) = serving("backend", &registry, &[]).await;
    let (mut app, mut sidecar) =
        serving("frontend", &registry, &["--drain-min", "500ms", "--drain-quiet", "200ms"]).await;
    let via = sidecar.outbound_client();
    assert_eq!(via.get("http://backend/").send().await.unwrap().status(), 200);

    let resp = client().post(sidecar.admin_url("/drain?wait=true")).send().await.unwrap();
    assert_eq!(resp.json::<serde_json::Value>().await.unwrap()["lifecycle"], "stopped");
    // Inbound is done; the app is still running and still calls out.
    assert!(sidecar.proc.try_status().is_none(), "exited while the app still runs");
    let resp = via.get("http://backend/").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "hello from backend\n");

    app.proc.kill();
    assert_eq!(sidecar.proc.wait_exit(T).await.code(), Some(0));
    assert!(sidecar.proc.output().contains("the app has stopped"));
    drop(provider);
}

#[tokio::test]
async fn sigterm_during_a_drain_started_by_the_prestop_hook_does_not_force_it() {
    // Kubernetes runs the app's preStop hook (GET /drain) and signals the sidecar at once.
    let dir = tempfile::tempdir().unwrap();
    let (_app, mut sidecar) =
        serving("hooked", &dir_registry(&dir), &["--drain-min", "1s", "--drain-quiet", "200ms"]).await;
    let hook = tokio::spawn(client().get(sidecar.admin_url("/drain?wait=true")).send());
    eventually(T, "draining", || async { sidecar.lifecycle().await == "draining" }).await;
    sidecar.proc.signal("TERM");
    let resp = hook.await.unwrap().unwrap();
    assert_eq!(resp.json::<serde_json::Value>().await.unwrap()["lifecycle"], "stopped");
    assert_eq!(sidecar.proc.wait_exit(T).await.code(), Some(0), "{}", sidecar.proc.output());
    assert!(!sidecar.proc.output().contains("drain forced"));
}

#[tokio::test]
async fn a_drain_from_another_host_needs_the_pods_token() {
    // The pod in a network namespace of its own; this test calls it from the host, through a
    // veth pair, so from a non-loopback address — as the kubelet calls a pod.
    let pod = Netns::create();
    let dir = tempfile::tempdir().unwrap();
    let mut app = berth();
    app.args(["sample-app", "--name", "guarded", "--listen", "127.0.0.1:0"]);
    let app = Proc::spawn("app guarded", pod.wrap(&app));
    let line = app.wait_line("listening on ", T).await;
    let app_port = line.rsplit(':').next().unwrap().to_owned();
    let token = "pod-token-0123456789abcdef";
    let mut cmd = berth();
    cmd.args(["proxy", "--service", "guarded", "--app-port", &app_port, "--registry", &dir_registry(&dir)])
        .args(["--inbound", "0.0.0.0:0", "--admin", "0.0.0.0:0", "--outbound", "127.0.0.1:0"])
        .args(["--health-interval", "100ms", "--drain-token", token]);
    let mut sidecar = Sidecar::spawn("sidecar guarded", pod.wrap(&cmd)).await;
    sidecar.admin = pod.addr(sidecar.admin.port());
    sidecar.inbound = pod.addr(sidecar.inbound.port());
    sidecar.wait_ready(T).await;

    let drain = |header: Option<&'static str>| {
        let mut req = client().post(sidecar.admin_url("/drain"));
        if let Some(h) = header {
            req = req.header("x-berth-drain-token", h);
        }
        req.send()
    };
    for wrong in [None, Some("not-the-pod-token-0123456")] {
        let resp = drain(wrong).await.unwrap();
        assert_eq!(resp.status(), 403, "{wrong:?}");
        let body = resp.text().await.unwrap();
        assert!(body.contains(&pod.host_ip.to_string()) && body.contains("drain token"), "{body}");
    }
    assert!(["warming", "serving"].contains(&sidecar.lifecycle().await.as_str()), "a refused drain started");
    assert_eq!(drain(Some(token)).await.unwrap().status(), 202);
    assert_eq!(sidecar.lifecycle().await, "draining");
    drop(app);
}
