//! Events: `GET /api/v1/events` streams policy changes (written through admin or by hand into
//! Nacos) and instances registering, draining and deregistering; a webhook receiver that was
//! down when the first event came gets every event, in order, signed with the shared secret.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::admin::{ALICE, Admin, VIEWER};
use crate::support::{App, Rnacos, Sidecar, berth, client, eventually};

const T: Duration = Duration::from_secs(30);
const SECRET: &str = "webhook-secret-0123456789";

/// An open `GET /api/v1/events` and every event it delivered so far.
pub struct Events {
    resp: reqwest::Response,
    buf: String,
    seen: Vec<Value>,
}

impl Events {
    pub async fn open(admin: &Admin, query: &str) -> Events {
        let resp = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(admin.url(&format!("/api/v1/events{query}")))
            .bearer_auth(VIEWER)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Events { resp, buf: String::new(), seen: Vec::new() }
    }

    /// Reads until an event of `kind` for which `pred` holds arrives; returns it.
    pub async fn until(&mut self, kind: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + T;
        loop {
            if let Some(e) = self.seen.iter().find(|e| e["type"] == kind && pred(e)) {
                return e.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, self.resp.chunk()).await;
            let chunk =
                chunk.unwrap_or_else(|_| panic!("no {kind} event within {T:?}; saw {:#?}", self.seen));
            self.buf.push_str(&String::from_utf8_lossy(&chunk.unwrap().expect("the stream stays open")));
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let field = |name: &str| {
                    block.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim_start().to_owned())
                };
                let Some(data) = field("data:") else { continue };
                let event: Value = serde_json::from_str(&data).unwrap();
                assert_eq!(field("event:").as_deref(), event["type"].as_str(), "{block}");
                assert_eq!(field("id:").as_deref(), event["id"].as_str(), "{block}");
                self.seen.push(event);
            }
        }
    }
}

/// What the webhook receiver got: headers and body of each POST.
type Received = Arc<Mutex<Vec<(http::HeaderMap, Vec<u8>)>>>;

/// Serves the receiver on a socket reserved earlier (bound, not yet listening).
fn serve_webhook(socket: tokio::net::TcpSocket, received: Received) {
    let listener = socket.listen(16).unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let received = received.clone();
            let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let received = received.clone();
                async move {
                    use http_body_util::BodyExt;
                    let (parts, body) = req.into_parts();
                    let body = body.collect().await.unwrap().to_bytes().to_vec();
                    received.lock().unwrap().push((parts.headers, body));
                    Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<
                        bytes::Bytes,
                    >::new()))
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc),
            );
        }
    });
}

/// HMAC-SHA256 of `body` under `key` as Python's standard library computes it: a second,
/// independent implementation to check admin's signatures against.
fn python_hmac(key: &str, body: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("python3")
        .args(["-c", "import hmac,hashlib,sys; print('sha256=' + hmac.new(sys.argv[1].encode(), sys.stdin.buffer.read(), hashlib.sha256).hexdigest())", key])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(body).unwrap();
    String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap().trim().to_owned()
}

pub async fn metric(admin: &Admin, line_start: &str) -> f64 {
    let text = client().get(admin.url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok()).unwrap_or(0.0)
}

#[tokio::test]
async fn events_stream_policy_changes_and_a_drain_and_a_webhook_gets_them_signed_after_being_down() {
    let nacos = Rnacos::start().await;
    let app = App::start("users").await;
    let stable = Sidecar::start("users", app.addr.port(), &nacos.url(), &[]).await;
    stable.wait_ready(T).await;
    // The receiver's port is reserved but not listening: deliveries are refused until it is.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let hook: SocketAddr = socket.local_addr().unwrap();
    let url = format!("http://{hook}/hooks/berth?key=in-the-url");
    let admin = Admin::start(
        &nacos.url(),
        &["--scan-interval", "200ms", "--webhook", &url, "--webhook-secret", SECRET],
    )
    .await;
    let mut events = Events::open(&admin, "?service=users").await;
    eventually(T, "two scans (the first one is the baseline)", || async {
        metric(&admin, "berth_admin_scans_total").await >= 2.0
    })
    .await;

    assert_eq!(admin.put("/api/v1/services/users/weights", ALICE, json!({"stable": 100})).await.status, 200);
    let first = events.until("policy.changed", |e| e["data"]["version"] == 1).await;
    assert_eq!((first["id"].as_str(), first["service"].as_str()), (Some("policy/users/1"), Some("users")));
    assert_eq!(first["data"]["author"], "alice");
    assert!(first["data"]["summary"].as_str().unwrap().starts_with("set weights: weights none → stable=100"));

    // The receiver is down: the delivery fails and is retried; then it comes up.
    eventually(T, "a refused delivery", || async {
        metric(&admin, r#"berth_admin_webhook_deliveries_total{outcome="failed"}"#).await >= 1.0
    })
    .await;
    let received: Received = Arc::default();
    serve_webhook(socket, received.clone());

    // Written by hand into Nacos, not through admin: found by the scan.
    nacos
        .publish_config(
            "berth.traffic.users",
            r#"{"schema": 1, "version": 2, "weights": {"stable": 100}, "strict": true}"#,
        )
        .await;
    let by_hand = events.until("policy.changed", |e| e["data"]["version"] == 2).await;
    assert_eq!(
        (by_hand["data"]["author"].clone(), by_hand["data"]["summary"].clone()),
        (Value::Null, json!("written outside berth admin"))
    );

    let canary =
        Sidecar::start("users", app.addr.port(), &nacos.url(), &["--symbol", "canary", "--drain-min", "2s"])
            .await;
    let addr = canary.inbound.to_string();
    let registered = events.until("instance.registered", |e| e["data"]["instance"] == addr).await;
    assert_eq!(registered["data"]["symbol"], "canary");
    let drain = client().post(canary.admin_url("/drain")).send().await.unwrap();
    assert_eq!(drain.status(), 202);
    let gone = events.until("instance.deregistered", |e| e["data"]["instance"] == addr).await;
    assert_eq!(gone["data"]["reason"], "deregistered at the start of its drain", "{gone}");
    let kinds: Vec<&str> = events
        .seen
        .iter()
        .filter(|e| e["data"]["instance"] == addr)
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["instance.registered", "instance.draining", "instance.deregistered"]);

    // The webhook got the same events in the same order, each signed.
    let ids: Vec<Value> = events.seen.iter().map(|e| e["id"].clone()).collect();
    eventually(T, "the webhook receives every event", || async {
        received.lock().unwrap().len() >= ids.len()
    })
    .await;
    let got = received.lock().unwrap().clone();
    let bodies: Vec<Value> = got.iter().map(|(_, b)| serde_json::from_slice(b).unwrap()).collect();
    let hook_ids: Vec<Value> =
        bodies.iter().filter(|b| b["service"] == "users").map(|b| b["id"].clone()).collect();
    assert_eq!(hook_ids[..ids.len()], ids, "in the order they happened");
    for ((headers, body), b) in got.iter().zip(&bodies) {
        assert_eq!(headers["x-berth-signature-256"].to_str().unwrap(), python_hmac(SECRET, body), "{b}");
        assert_eq!(headers["x-berth-event"].to_str().unwrap(), b["type"].as_str().unwrap());
        assert_eq!(headers["x-berth-delivery"].to_str().unwrap(), b["id"].as_str().unwrap());
        assert_eq!(headers["content-type"], "application/json");
    }
    let out = admin.proc.output();
    assert!(!out.contains(SECRET) && !out.contains("in-the-url"), "admin logged a secret:\n{out}");
    assert!(out.contains(&format!("http://{hook}")), "the log names the receiver by its origin:\n{out}");
}

#[test]
fn the_webhook_secret_never_shows_in_help_and_is_required() {
    let help = berth().args(["admin", "--help"]).env("BERTH_WEBHOOK_SECRET", SECRET).output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("--webhook-secret") && !text.contains(SECRET), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, crate::support::admin::TOKEN_FILE).unwrap();
    let run = |extra: &[&str]| {
        let out = berth()
            .args(["admin", "--listen", "127.0.0.1:0"])
            .arg("--token-file")
            .arg(&tokens)
            .args(extra)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = run(&["--webhook", "https://hooks.example/x?token=abc"]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("--webhook-secret") && !err.contains("token=abc"), "{err}");
    let (code, err) = run(&["--webhook", "ftp://hooks.example/x", "--webhook-secret", SECRET]);
    assert!(code == Some(64) && err.contains("--webhook") && err.contains("http://"), "{err}");
    let (code, err) = run(&["--webhook", "https://hooks.example/x", "--webhook-secret", "short"]);
    assert!(code == Some(64) && err.contains("at least 16") && !err.contains("short"), "{err}");
}

#[tokio::test]
async fn a_zombie_found_by_a_check_is_an_event_once() {
    let nacos = Rnacos::start().await;
    // Registered, but nothing listens there (the port is held, bound and not listening): a
    // crashed instance whose registration outlives it.
    let held = tokio::net::TcpSocket::new_v4().unwrap();
    held.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let dead = held.local_addr().unwrap();
    nacos.register_persistent("orders", dead, "stable").await;
    let admin = Admin::start(&nacos.url(), &["--scan-interval", "200ms"]).await;
    let mut events = Events::open(&admin, "").await;
    for _ in 0..2 {
        let found = admin.get("/api/v1/services/orders/zombies", VIEWER).await;
        assert_eq!(found.body["zombies"][0]["address"], dead.to_string(), "{found:?}");
    }
    let z = events.until("zombie.found", |e| e["data"]["instance"] == dead.to_string()).await;
    assert_eq!(
        (z["service"].as_str(), z["data"]["reason"].as_str()),
        (Some("orders"), Some("connection refused"))
    );
    // The second check found the same zombie: no second event.
    assert_eq!(metric(&admin, r#"berth_admin_events_total{type="zombie.found"}"#).await, 1.0);
}

#[tokio::test]
async fn an_instance_a_consumer_ejects_is_an_event_and_shows_as_ejected() {
    let nacos = Rnacos::start().await;
    let (good_app, web) = (App::start("users").await, App::start("web").await);
    // Its app closes every connection unanswered: its sidecar answers 502 app-failed.
    let bad_app = App::start_with("users", 0, &["--reset"]).await;
    let good = Sidecar::start("users", good_app.addr.port(), &nacos.url(), &[]).await;
    let bad = Sidecar::start("users", bad_app.addr.port(), &nacos.url(), &[]).await;
    let consumer =
        Sidecar::start("web", web.addr.port(), &nacos.url(), &["--services", "users", "--eject-for", "30s"])
            .await;
    for s in [&good, &bad, &consumer] {
        s.wait_ready(T).await;
    }
    let admin = Admin::start(&nacos.url(), &["--scan-interval", "200ms"]).await;
    let mut events = Events::open(&admin, "?service=users").await;
    eventually(T, "two scans", || async { metric(&admin, "berth_admin_scans_total").await >= 2.0 }).await;
    let out = consumer.outbound_client();
    eventually(T, "the consumer ejects the failing instance", || async {
        let _ = out.get("http://users/").send().await;
        let seen = consumer.endpoints().await;
        seen["services"]["users"]["instances"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["addr"] == bad.inbound.to_string() && i["state"] == "ejected")
    })
    .await;
    let e = events.until("instance.ejected", |e| e["data"]["instance"] == bad.inbound.to_string()).await;
    assert_eq!(e["data"]["ejected_by_consumers"], 1, "{e}");
    let show = admin.get("/api/v1/services/users", VIEWER).await.body;
    let row = show["symbols"]["stable"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["address"] == bad.inbound.to_string())
        .cloned()
        .unwrap();
    assert_eq!(
        (row["state"].as_str(), row["seen_by_consumers"]["ejected"].as_u64()),
        (Some("ejected"), Some(1)),
        "{row}"
    );
}
