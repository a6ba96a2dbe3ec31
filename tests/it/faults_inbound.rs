//! The inbound path under faults: a burst of multiplexed streams against an app with a small
//! accept backlog (and the app pool's reuse and bound), a hung app, clients that give up and
//! the drain after them, and a sidecar out of file descriptors.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::support::{App, Proc, Sidecar, client, dir_registry, eventually};

const T: Duration = Duration::from_secs(15);

/// The Python app of `apps/backlog_app.py`: the standard library's HTTP server, backlog 5.
struct PyApp {
    _proc: Proc,
    addr: SocketAddr,
}

impl PyApp {
    async fn start(extra: &[&str]) -> PyApp {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/apps/backlog_app.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script).args(extra);
        let proc = Proc::spawn("python app", cmd);
        let line = proc.wait_line("listening on ", T).await;
        let addr = line.rsplit(' ').next().unwrap().parse().unwrap();
        PyApp { _proc: proc, addr }
    }

    /// Connections that have carried a request to the app.
    async fn connections(&self) -> u64 {
        let url = format!("http://{}/connections", self.addr);
        client().get(url).send().await.unwrap().text().await.unwrap().trim().parse().unwrap()
    }
}

/// One HTTP/2 (prior knowledge) connection to `addr`, as a consumer sidecar holds.
async fn h2_connection(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    send
}

fn get(path: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get(format!("http://burst{path}")).body(Empty::new()).unwrap()
}

/// Sends `n` GETs at once as streams of one HTTP/2 connection; returns the statuses (0: the
/// stream failed) with the `x-berth-error` of each failure.
async fn burst(addr: SocketAddr, n: usize) -> Vec<(u16, String)> {
    let send = h2_connection(addr).await;
    let streams: Vec<_> = (0..n)
        .map(|_| {
            let mut send = send.clone();
            tokio::spawn(async move {
                match send.send_request(get("/")).await {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let error = resp
                            .headers()
                            .get("x-berth-error")
                            .map(|v| v.to_str().unwrap().to_owned())
                            .unwrap_or_default();
                        let body = resp.into_body().collect().await.map(|b| b.to_bytes());
                        match body {
                            Ok(b) if status == 200 => {
                                assert_eq!(&b[..], b"hello\n");
                                (status, error)
                            }
                            // The body says why: keep it with the failure.
                            Ok(b) => (status, format!("{error}: {}", String::from_utf8_lossy(&b).trim())),
                            Err(e) => (0, e.to_string()),
                        }
                    }
                    Err(e) => (0, e.to_string()),
                }
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for s in streams {
        out.push(s.await.unwrap());
    }
    out
}

#[tokio::test]
async fn a_burst_of_100_streams_against_a_backlog_of_5_all_succeed() {
    let app = PyApp::start(&[]).await;
    for round in 1..=3 {
        // A fresh sidecar each round: its app pool starts cold, as after a restart.
        let dir = tempfile::tempdir().unwrap();
        let sidecar = Sidecar::start("burst", app.addr.port(), &dir_registry(&dir), &[]).await;
        sidecar.wait_ready(T).await;
        let results = burst(sidecar.inbound, 100).await;
        let failed = failures(&results);
        let n: usize = failed.values().sum();
        assert!(failed.is_empty(), "round {round}: {n} of 100 failed: {failed:?}");
    }
}

fn failures(results: &[(u16, String)]) -> std::collections::BTreeMap<&(u16, String), usize> {
    let mut failed = std::collections::BTreeMap::new();
    for r in results.iter().filter(|(s, _)| *s != 200) {
        *failed.entry(r).or_default() += 1;
    }
    failed
}

#[tokio::test]
async fn the_app_pool_reuses_its_connections() {
    let app = PyApp::start(&["--keep-alive"]).await;
    let dir = tempfile::tempdir().unwrap();
    let sidecar = Sidecar::start("pooled", app.addr.port(), &dir_registry(&dir), &[]).await;
    sidecar.wait_ready(T).await;
    // A new client connection each time: only the sidecar's pool can reuse anything.
    for _ in 0..50 {
        let resp = client().get(sidecar.url("/")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        // Read to the end: a response abandoned mid-way cannot leave its connection reusable.
        assert_eq!(resp.text().await.unwrap(), "hello\n");
    }
    let used = app.connections().await;
    assert!(used <= 5, "50 sequential requests took {used} connections to the app");
}

#[tokio::test]
async fn a_burst_waits_for_the_bounded_app_pool_instead_of_failing() {
    let app = PyApp::start(&["--keep-alive", "--delay-ms", "20"]).await;
    let dir = tempfile::tempdir().unwrap();
    let sidecar =
        Sidecar::start("bounded", app.addr.port(), &dir_registry(&dir), &["--app-max-connections", "3"])
            .await;
    sidecar.wait_ready(T).await;
    let results = burst(sidecar.inbound, 30).await;
    let failed = failures(&results);
    assert!(failed.is_empty(), "{failed:?}");
    let used = app.connections().await;
    assert!(used <= 3, "30 streams took {used} connections with --app-max-connections 3");
}

/// An app that accepts connections and never answers; it holds them until dropped.
struct HungApp {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl HungApp {
    async fn start() -> HungApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        HungApp { addr, task }
    }
}

impl Drop for HungApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn a_hung_app_gets_a_504_at_the_app_request_timeout() {
    let app = HungApp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sidecar =
        Sidecar::start("hung", app.addr.port(), &dir_registry(&dir), &["--app-request-timeout", "1s"]).await;
    sidecar.wait_ready(T).await;
    // The test's own client waits far longer than the sidecar's timeout: only the sidecar can
    // end this request in time.
    let resp = tokio::time::timeout(T, client().get(sidecar.url("/")).send())
        .await
        .expect("the sidecar answered a hung app's request")
        .unwrap();
    assert_eq!(resp.status(), 504);
    assert_eq!(resp.headers()["x-berth-error"], "app-timeout");
    let body = resp.text().await.unwrap();
    assert!(body.contains("did not answer within 1s") && body.contains("--app-request-timeout"), "{body}");
    // HTTP/2 too, and the timed-out requests are no longer in flight.
    let mut send = h2_connection(sidecar.inbound).await;
    let resp = tokio::time::timeout(T, send.send_request(get("/"))).await.unwrap().unwrap();
    assert_eq!(resp.status(), 504);
    assert_eq!(sidecar.state().await["in_flight"], 0);
}

#[tokio::test]
async fn clients_that_give_up_leave_nothing_in_flight_and_the_drain_ends_on_evidence() {
    use tokio::io::AsyncWriteExt;
    let app = App::start("quitter").await;
    let dir = tempfile::tempdir().unwrap();
    let timings = ["--drain-min", "500ms", "--drain-quiet", "300ms", "--drain-timeout", "10m"];
    let mut sidecar = Sidecar::start("quitter", app.addr.port(), &dir_registry(&dir), &timings).await;
    sidecar.wait_ready(T).await;

    // HTTP/1.1 clients that hang up while the app is still working on their responses.
    let waiting: Vec<_> =
        (0..3).map(|_| tokio::spawn(client().get(sidecar.url("/slow?ms=600000")).send())).collect();
    // HTTP/2 streams the client resets, on a connection that stays open.
    let h2 = h2_connection(sidecar.inbound).await;
    let reset: Vec<_> = (0..3)
        .map(|_| {
            let mut h2 = h2.clone();
            tokio::spawn(async move { h2.send_request(get("/slow?ms=600000")).await })
        })
        .collect();
    // A client that hangs up in the middle of a streamed response body.
    let mut streamed = client().get(sidecar.url("/stream?chunks=100000&ms=50")).send().await.unwrap();
    assert_eq!(streamed.status(), 200);
    assert!(streamed.chunk().await.unwrap().is_some());
    // A client that hangs up in the middle of its own request body.
    let mut upload = tokio::net::TcpStream::connect(sidecar.inbound).await.unwrap();
    upload
        .write_all(b"POST /echo HTTP/1.1\r\nHost: quitter\r\nContent-Length: 100000\r\n\r\npartial body")
        .await
        .unwrap();

    eventually(T, "8 requests in flight", || async { sidecar.state().await["in_flight"] == 8 }).await;
    for task in &waiting {
        task.abort();
    }
    for task in &reset {
        task.abort();
    }
    drop(streamed);
    drop(upload);

    eventually(T, "nothing in flight after the clients left", || async {
        sidecar.state().await["in_flight"] == 0
            && sidecar.metrics().await.contains("berth_requests_in_flight{direction=\"inbound\"} 0")
    })
    .await;
    // The HTTP/2 connection whose streams were reset still serves.
    let mut h2 = h2;
    assert_eq!(h2.send_request(get("/")).await.unwrap().status(), 200);
    drop(h2);
    eventually(T, "no inbound connection counted open once the clients are gone", || async {
        sidecar.metrics().await.contains("berth_connections_open{direction=\"inbound\"} 0")
    })
    .await;

    // The drain ends on evidence — quiet, nothing in flight — not at the 10-minute timeout.
    sidecar.proc.signal("TERM");
    let status = sidecar.proc.wait_exit(T).await;
    let out = sidecar.proc.output();
    assert_eq!(status.code(), Some(0), "{out}");
    assert!(out.contains("stopped: drain complete"), "{out}");
}

#[tokio::test]
async fn out_of_file_descriptors_the_accept_loop_backs_off_and_recovers() {
    let app = App::start("crowded").await;
    let dir = tempfile::tempdir().unwrap();
    // The sidecar under a 40-descriptor limit: a few dozen connections exhaust it.
    let base = crate::support::berth();
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "ulimit -n 40 && exec \"$0\" \"$@\""]).arg(base.get_program());
    for (key, value) in base.get_envs() {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
    cmd.args(["proxy", "--service", "crowded", "--app-port", &app.addr.port().to_string()])
        .args(["--inbound", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--outbound", "127.0.0.1:0"])
        .args(["--registry", &dir_registry(&dir)]);
    let sidecar = Sidecar::spawn("sidecar crowded", cmd).await;
    sidecar.wait_ready(T).await;

    let mut held = Vec::new();
    for _ in 0..60 {
        held.push(tokio::net::TcpStream::connect(sidecar.inbound).await.unwrap());
    }
    sidecar.proc.wait_line("accept failed", T).await;
    // Hold the descriptors a while longer: a loop without back-off would log thousands of
    // failures meanwhile; one that backs off (5 ms doubling to 1 s) a handful.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let failures = sidecar.proc.output().matches("accept failed").count();
    assert!(failures <= 30, "{failures} accept failures logged in about 2 s");

    drop(held);
    eventually(T, "served again once descriptors are free", || async {
        client().get(sidecar.url("/")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
}
