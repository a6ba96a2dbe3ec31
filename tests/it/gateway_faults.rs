//! What only the gateway itself can save, through real processes and rnacos: a provider that
//! hangs behind it (SIGSTOP — no drain, no read-only signal, still registered) or dies
//! (SIGKILL) while outside clients' requests flow, or drains while the registry is silent (only
//! its read-only signal tells); and the gateway's own connections on its drain (idle HTTP/1.1 ones
//! closed after drain-min, HTTP/2 ones sent GOAWAY at once), as the sidecar's inbound side.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::drain_wire::{GOAWAY, HEADERS, SETTINGS, frame, until_frame};
use crate::faults_outbound::{Frozen, load, provider};
use crate::gateway::Gateway;
use crate::support::{Rnacos, client, eventually};

const T: Duration = Duration::from_secs(20);

/// The state the gateway gives the instance at `addr` (its `/endpoints`).
async fn state_at_gateway(gw: &Gateway, service: &str, addr: SocketAddr) -> Option<String> {
    let url = format!("http://{}/endpoints", gw.admin);
    let doc: serde_json::Value = client().get(url).send().await.ok()?.json().await.ok()?;
    doc["services"][service]["instances"].as_array()?.iter().find_map(|i| {
        (i["addr"] == addr.to_string()).then(|| i["state"].as_str().unwrap_or_default().to_owned())
    })
}

/// A provider frozen behind the gateway under load: nothing drains, nothing signals, the
/// registry still lists it — only the gateway's own failover (PINGs that go unanswered,
/// retries and hedges of idempotent requests, ejection) keeps outside clients' requests from
/// failing. None fails or waits past the client's timeout, and the gateway ejects it while
/// rnacos still lists it.
#[tokio::test]
async fn a_provider_frozen_behind_the_gateway_costs_no_idempotent_request() {
    let nacos = Rnacos::start().await;
    let registry = nacos.url();
    // No warm-up: the three share the load evenly from the start, so the victim has requests
    // of its own in flight when it freezes.
    let args = ["--warmup", "0s"];
    let _a = provider(&registry, "stock", "stable", "a", &args).await;
    let _b = provider(&registry, "stock", "stable", "b", &args).await;
    let victim = provider(&registry, "stock", "stable", "victim", &args).await;
    let gw = Gateway::start(&registry, &["--expose", "stock"]).await;
    gw.wait_ready().await;
    gw.sees("stock", 3).await;

    let running = load(&client(), &gw.url("/stock/slow?ms=10"), 8, Instant::now() + Duration::from_secs(12));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let frozen = Frozen::freeze(&[&victim.sidecar.proc, &victim.app.proc]);
    let frozen_at = Instant::now();
    let mut ejected_while_listed = None;
    while ejected_while_listed.is_none() && frozen_at.elapsed() < Duration::from_secs(9) {
        if state_at_gateway(&gw, "stock", victim.sidecar.inbound).await.as_deref() == Some("ejected") {
            ejected_while_listed =
                Some((frozen_at.elapsed(), nacos.lists("stock", victim.sidecar.inbound).await));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tally = running.await.unwrap();
    drop(frozen);
    eprintln!(
        "frozen behind the gateway: {} answered, {} failed, slowest {:?}; ejected {:?} after the freeze",
        tally.by_app.values().sum::<usize>(),
        tally.failures.len(),
        tally.slowest,
        ejected_while_listed.map(|e| e.0),
    );
    assert!(tally.failures.is_empty(), "idempotent requests failed at the gateway: {:?}", tally.failures);
    assert!(
        tally.by_app.get("victim").copied().unwrap_or(0) > 0,
        "the victim served first: {:?}",
        tally.by_app
    );
    let (_, listed) = ejected_while_listed.expect("the gateway never ejected the frozen instance");
    assert!(listed, "the instance was ejected only after the registry dropped it");
    let m = gw.metrics().await;
    assert!(m.contains(r#"berth_outbound_ejections_total{service="stock"}"#), "{m}");
    assert!(retries(&m) > 0.0, "no request was sent again: {m}");
}

/// A provider killed behind the gateway under load (SIGKILL of its sidecar and app: no drain,
/// no signal; its connections reset, new ones are refused until the registry drops it): the
/// gateway sends the idempotent requests it had in flight there, and those it picks it for
/// before rnacos's push, to the others. None fails.
#[tokio::test]
async fn a_provider_killed_behind_the_gateway_costs_no_idempotent_request() {
    let nacos = Rnacos::start().await;
    let registry = nacos.url();
    let args = ["--warmup", "0s"];
    let _a = provider(&registry, "stock", "stable", "a", &args).await;
    let _b = provider(&registry, "stock", "stable", "b", &args).await;
    let mut victim = provider(&registry, "stock", "stable", "victim", &args).await;
    let gw = Gateway::start(&registry, &["--expose", "stock"]).await;
    gw.wait_ready().await;
    gw.sees("stock", 3).await;

    let running = load(&client(), &gw.url("/stock/slow?ms=10"), 8, Instant::now() + Duration::from_secs(8));
    tokio::time::sleep(Duration::from_secs(2)).await;
    victim.sidecar.proc.kill();
    victim.app.proc.kill();
    gw.sees("stock", 2).await;
    let tally = running.await.unwrap();
    eprintln!(
        "killed behind the gateway: {} answered, {} failed, slowest {:?}",
        tally.by_app.values().sum::<usize>(),
        tally.failures.len(),
        tally.slowest
    );
    assert!(tally.failures.is_empty(), "idempotent requests failed at the gateway: {:?}", tally.failures);
    assert!(
        tally.by_app.get("victim").copied().unwrap_or(0) > 0,
        "the victim served first: {:?}",
        tally.by_app
    );
    assert!(retries(&gw.metrics().await) > 0.0, "no request was sent again");
}

/// Who answered each of `n` concurrent GETs of `url` (closed-loop single requests would all go
/// to the instance with the lower latency).
async fn batch(url: &str, n: usize) -> Vec<String> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let url = url.to_owned();
        set.spawn(async move {
            let resp = client().get(url).send().await.unwrap();
            match resp.headers().get("x-app-name") {
                Some(name) if resp.status() == 200 => name.to_str().unwrap().to_owned(),
                _ => format!("{} {:?}", resp.status(), resp.headers().get("x-berth-error")),
            }
        });
    }
    set.join_all().await
}

/// The read-only signal, with the registry silent: rnacos frozen, so it neither takes the
/// deregistration nor pushes anything, a provider drains behind the gateway — the gateway marks
/// it draining from the signal on its answers and then sends it nothing more; every request is
/// answered.
#[tokio::test]
async fn a_draining_provider_gets_nothing_from_the_gateway_after_its_signal() {
    let nacos = Rnacos::start().await;
    let registry = nacos.url();
    let leaving =
        provider(&registry, "cart", "stable", "leaving", &["--warmup", "0s", "--drain-min", "20s"]).await;
    let _staying = provider(&registry, "cart", "stable", "staying", &["--warmup", "0s"]).await;
    let gw = Gateway::start(&registry, &["--expose", "cart"]).await;
    gw.wait_ready().await;
    gw.sees("cart", 2).await;
    let url = gw.url("/cart/");
    eventually(T, "both providers answer", || async {
        let answers = batch(&url, 8).await;
        answers.iter().any(|a| a == "leaving") && answers.iter().any(|a| a == "staying")
    })
    .await;

    nacos.pause();
    client().post(leaving.sidecar.admin_url("/drain")).send().await.unwrap();
    let during = std::sync::Mutex::new(Vec::new());
    eventually(T, "the gateway sees the provider draining", || async {
        let answers = batch(&url, 8).await;
        during.lock().unwrap().extend(answers);
        state_at_gateway(&gw, "cart", leaving.sidecar.inbound).await.as_deref() == Some("draining")
    })
    .await;
    let during = during.into_inner().unwrap();
    eprintln!("signal heeded after {} requests: {during:?}", during.len());
    let mut after = Vec::new();
    for _ in 0..25 {
        after.extend(batch(&url, 8).await);
    }
    let still_listed = state_at_gateway(&gw, "cart", leaving.sidecar.inbound).await;
    nacos.resume();
    assert!(during.iter().all(|a| a == "leaving" || a == "staying"), "every request succeeded: {during:?}");
    assert!(after.iter().all(|a| a == "staying"), "after its signal, none to the draining one: {after:?}");
    assert_eq!(still_listed.as_deref(), Some("draining"), "the registry view still lists it");
}

/// Attempts the gateway sent again to another instance of `stock`, for any reason.
fn retries(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("berth_outbound_retries_total{") && l.contains(r#"service="stock""#))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// An HTTP/1.1 connection to `addr` that has carried one answered `GET path`; the task ends
/// when the gateway closes the connection.
async fn used_h1_connection(addr: SocketAddr, path: &str) -> tokio::task::JoinHandle<()> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = http::Request::get(path).header("host", "gateway").body(Empty::<Bytes>::new()).unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
    // `send` dropped here would close the connection from our side: keep it with the task.
    tokio::spawn(async move {
        let _send = send;
        let _ = conn.await;
    })
}

/// An HTTP/2 connection to `addr`, by hand, that has carried one answered `GET path`.
async fn used_h2_connection(addr: SocketAddr, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    s.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    // HPACK by hand: :method GET, :scheme http (static 2, 6), :path and :authority as literals
    // with indexed names (4, 1), not indexed.
    let mut block = vec![0x82, 0x86, 0x04, u8::try_from(path.len()).unwrap()];
    block.extend_from_slice(path.as_bytes());
    block.extend_from_slice(&[0x01, 7]);
    block.extend_from_slice(b"gateway");
    s.write_all(&frame(HEADERS, 0x1 | 0x4, 1, &block)).await.unwrap();
    let (_, stream, _) = tokio::time::timeout(T, until_frame(&mut s, HEADERS)).await.expect("a response");
    assert_eq!(stream, 1);
    s
}

/// On SIGTERM the gateway sends its HTTP/2 clients a graceful GOAWAY at once, and closes idle
/// HTTP/1.1 keep-alive connections once drain-min is over — while it still runs (drain-quiet
/// keeps it up), so it is the drain that closes them, not the exit.
#[tokio::test]
async fn the_gateway_closes_its_clients_connections_on_drain_as_inbound_does() {
    let nacos = Rnacos::start().await;
    let registry = nacos.url();
    let _web = provider(&registry, "web", "stable", "web-1", &[]).await;
    let args = ["--expose", "web", "--drain-min", "3s", "--drain-quiet", "30s", "--drain-timeout", "60s"];
    let mut gw = Gateway::start(&registry, &args).await;
    gw.wait_ready().await;
    gw.sees("web", 1).await;
    let h1 = used_h1_connection(gw.listen, "/web/").await;
    let mut h2 = used_h2_connection(gw.listen, "/web/").await;

    gw.proc.signal("TERM");
    let (_, stream, payload) = tokio::time::timeout(T, until_frame(&mut h2, GOAWAY))
        .await
        .expect("a GOAWAY frame after the drain began");
    assert_eq!(stream, 0, "GOAWAY is a connection frame");
    let error = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
    assert_eq!(error, 0, "a graceful GOAWAY carries NO_ERROR");
    assert!(!h1.is_finished(), "the idle HTTP/1.1 connection was closed at the drain's start");
    assert_eq!(gw.ready().await, 503, "draining");

    eventually(T, "the idle HTTP/1.1 connection is closed", || async { h1.is_finished() }).await;
    assert!(gw.proc.try_status().is_none(), "closed by the drain, not by the gateway's exit");
    // New connections are still taken and served, with the signal.
    let during = client().get(gw.url("/web/")).send().await.unwrap();
    assert_eq!(during.status(), 200);
    assert_eq!(during.headers()["connection"], "close");
    assert_eq!(during.headers()["x-berth-lifecycle"], "draining");
}
