//! Faults on the outbound path, made for real: a provider frozen with SIGSTOP (no RST, its
//! connections stay open, nothing answers), a poison request on a shared sidecar-to-sidecar
//! connection, clients that hang up, an instance on a network namespace whose packets stop,
//! a hung instance only hedging can get around — through a consumer sidecar, under load.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::netns::Netns;
use crate::support::{App, Proc, Rnacos, Sidecar, eventually};

const T: Duration = Duration::from_secs(20);
/// Longer than any request of the load may take: past it the request fails the test.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// A provider instance: the sample app behind its sidecar.
pub struct Provider {
    pub sidecar: Sidecar,
    pub app: App,
}

pub async fn provider(registry: &str, service: &str, symbol: &str, name: &str, extra: &[&str]) -> Provider {
    let app = App::start(name).await;
    let mut args = vec!["--symbol", symbol];
    args.extend_from_slice(extra);
    let sidecar = Sidecar::start(service, app.addr.port(), registry, &args).await;
    sidecar.wait_ready(T).await;
    Provider { sidecar, app }
}

/// Waits until `consumer` sees `n` instances of `service`.
pub async fn sees(consumer: &Sidecar, service: &str, n: usize) {
    eventually(T, &format!("the consumer sees {n} instances of {service}"), || async {
        consumer.endpoints().await["services"][service]["instances"].as_array().is_some_and(|a| a.len() == n)
    })
    .await;
}

/// The state the consumer gives the instance at `addr`.
async fn state_of(consumer: &Sidecar, service: &str, addr: SocketAddr) -> Option<String> {
    let endpoints = consumer.endpoints().await;
    endpoints["services"][service]["instances"].as_array()?.iter().find_map(|i| {
        (i["addr"] == addr.to_string()).then(|| i["state"].as_str().unwrap_or_default().to_owned())
    })
}

/// Sends a signal; for drop paths, where a failure must not panic.
fn signal_quietly(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
}

/// Processes frozen with SIGSTOP, resumed (SIGCONT) when this drops, even on a panic, so that
/// they can be killed and reaped.
pub(crate) struct Frozen(Vec<u32>);

impl Frozen {
    pub(crate) fn freeze(procs: &[&Proc]) -> Frozen {
        for p in procs {
            p.signal("STOP");
        }
        Frozen(procs.iter().map(|p| p.pid()).collect())
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for pid in &self.0 {
            signal_quietly(*pid, "CONT");
        }
    }
}

/// What a closed-loop load saw.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) by_app: HashMap<String, usize>,
    pub(crate) failures: Vec<String>,
    pub(crate) slowest: Duration,
}

/// `clients` closed-loop clients GETting `url` through `proxy` until `until`.
pub(crate) fn load(
    proxy: &reqwest::Client,
    url: &str,
    clients: usize,
    until: Instant,
) -> tokio::task::JoinHandle<Tally> {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut workers = Vec::new();
    for _ in 0..clients {
        let (proxy, url, tally) = (proxy.clone(), url.to_owned(), tally.clone());
        workers.push(tokio::spawn(async move {
            while Instant::now() < until {
                let started = Instant::now();
                let outcome = match proxy.get(&url).timeout(CLIENT_TIMEOUT).send().await {
                    Ok(r) if r.status() == 200 => {
                        Ok(r.headers()["x-app-name"].to_str().unwrap_or_default().to_owned())
                    }
                    Ok(r) => Err(format!("{} {:?}", r.status(), r.headers().get("x-berth-error"))),
                    Err(e) => Err(format!("{e}")),
                };
                let took = started.elapsed();
                let mut t = tally.lock().unwrap();
                t.slowest = t.slowest.max(took);
                match outcome {
                    Ok(app) => *t.by_app.entry(app).or_default() += 1,
                    Err(e) => t.failures.push(e),
                }
            }
        }));
    }
    tokio::spawn(async move {
        for w in workers {
            w.await.unwrap();
        }
        Arc::try_unwrap(tally).unwrap().into_inner().unwrap()
    })
}

/// A frozen provider among three, under load: its idempotent requests are hedged or retried
/// elsewhere (none fails, none waits past the client's timeout), its HTTP/2 PINGs go
/// unanswered and it is ejected while the registry still lists it; a POST sent to it fails
/// fast, as a broken connection that was not retried, not at the request timeout.
#[tokio::test]
async fn a_frozen_provider_is_ejected_and_costs_no_idempotent_request() {
    let nacos = Rnacos::start().await;
    let registry = nacos.url();
    let _a = provider(&registry, "stock", "stable", "a", &[]).await;
    let _b = provider(&registry, "stock", "stable", "b", &[]).await;
    let victim = provider(&registry, "stock", "blue", "victim", &[]).await;
    nacos
        .publish_config(
            "berth.traffic.stock",
            r#"{"schema":1,"version":1,"weights":{"stable":67,"blue":33}}"#,
        )
        .await;
    let capp = App::start("consumer").await;
    let consumer = Sidecar::start("consumer", capp.addr.port(), &registry, &["--services", "stock"]).await;
    sees(&consumer, "stock", 3).await;
    eventually(T, "the policy applies", || async {
        consumer.endpoints().await["services"]["stock"]["policy"]["version"] == 1
    })
    .await;
    let proxy = consumer.outbound_client();
    let started = Instant::now();
    let running = load(&proxy, "http://stock/slow?ms=10", 8, started + Duration::from_secs(12));
    tokio::time::sleep(Duration::from_secs(2)).await;

    let frozen = Frozen::freeze(&[&victim.sidecar.proc, &victim.app.proc]);
    let frozen_at = Instant::now();
    // Pinned to the victim's symbol, before anything has noticed.
    let post = tokio::spawn({
        let proxy = proxy.clone();
        async move {
            let started = Instant::now();
            let resp = proxy
                .post("http://stock/echo")
                .header("x-berth-symbol", "blue")
                .body("order 7")
                .timeout(Duration::from_secs(20))
                .send()
                .await
                .unwrap();
            let code = resp.headers().get("x-berth-error").map(|v| v.to_str().unwrap().to_owned());
            (resp.status(), code, resp.text().await.unwrap(), started.elapsed())
        }
    });
    let mut ejected_while_listed = None;
    while ejected_while_listed.is_none() && frozen_at.elapsed() < Duration::from_secs(9) {
        if state_of(&consumer, "stock", victim.sidecar.inbound).await.as_deref() == Some("ejected") {
            ejected_while_listed =
                Some((frozen_at.elapsed(), nacos.lists("stock", victim.sidecar.inbound).await));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tally = running.await.unwrap();
    eprintln!(
        "frozen provider: {} answered, {} failed, slowest {:?}; ejected {:?} after the freeze",
        tally.by_app.values().sum::<usize>(),
        tally.failures.len(),
        tally.slowest,
        ejected_while_listed.map(|e| e.0),
    );
    let (status, code, body, post_took) = post.await.unwrap();
    drop(frozen);
    eprintln!("frozen provider: POST {status} after {post_took:?}: {body}");
    assert!(tally.failures.is_empty(), "idempotent requests failed: {:?}", tally.failures);
    assert!(tally.by_app["victim"] > 0 && tally.by_app["a"] > 0, "{:?}", tally.by_app);
    let (_, listed) = ejected_while_listed.expect("the frozen instance was never ejected");
    assert!(listed, "the instance was ejected only after the registry dropped it");
    assert_eq!(status, 502, "{body}");
    assert_eq!(code.as_deref(), Some("upstream-reset"), "{body}");
    assert!(body.contains("not idempotent") && body.contains(&victim.sidecar.inbound.to_string()), "{body}");
    let m = consumer.metrics().await;
    assert!(m.contains(r#"berth_outbound_ejections_total{service="stock"}"#), "{m}");
}

/// The value of metric `name` with exactly `labels` in Prometheus text (0 when absent).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    want.sort();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
            let mut got: Vec<String> =
                rest.trim_end_matches('}').split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect();
            got.sort();
            (n == name && got == want).then(|| value.parse().unwrap())
        })
        .unwrap_or(0.0)
}

/// One provider sidecar, a consumer sidecar calling it; a directory registry.
pub async fn pair(
    dir: &tempfile::TempDir,
    service: &str,
    provider_args: &[&str],
    consumer_args: &[&str],
) -> (Provider, Sidecar, App) {
    let registry = crate::support::dir_registry(dir);
    let p = provider(&registry, service, "stable", "p", provider_args).await;
    let capp = App::start("consumer").await;
    let mut args = vec!["--services", service];
    args.extend_from_slice(consumer_args);
    let consumer = Sidecar::start("consumer", capp.addr.port(), &registry, &args).await;
    sees(&consumer, service, 1).await;
    (p, consumer, capp)
}

/// A request whose header list the provider's HTTP/2 server would refuse is refused by the
/// consumer's sidecar itself, with 431: the connection it would have killed, and the slow
/// requests multiplexed on it, carry on.
#[tokio::test]
async fn an_oversized_header_is_refused_locally_and_spares_the_shared_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (provider, consumer, _capp) = pair(&dir, "cart", &[], &["--no-hedge"]).await;
    let proxy = consumer.outbound_client();
    let slow: Vec<_> = (0..5)
        .map(|_| {
            let proxy = proxy.clone();
            tokio::spawn(
                async move { proxy.get("http://cart/slow?ms=2500").send().await.map(|r| r.status()) },
            )
        })
        .collect();
    let inbound = |m: &str, name: &str| metric(m, name, &[("direction", "inbound")]);
    eventually(T, "five slow requests in flight at the provider", || async {
        inbound(&provider.sidecar.metrics().await, "berth_requests_in_flight") == 5.0
    })
    .await;
    // Sidecar to sidecar is HTTP/2: the five share one connection.
    assert_eq!(inbound(&provider.sidecar.metrics().await, "berth_connections_open"), 1.0);
    let big = "x".repeat(70 * 1024);
    let resp = proxy.get("http://cart/").header("x-big", &big).send().await.unwrap();
    let (status, code) = (resp.status(), resp.headers().get("x-berth-error").cloned());
    let body = resp.text().await.unwrap();
    let mut shared = Vec::new();
    for s in slow {
        shared.push(s.await.unwrap().map_err(|e| e.to_string()));
    }
    assert!(
        shared.iter().all(|s| s.as_ref().is_ok_and(|s| *s == 200)),
        "requests sharing the connection: {shared:?}"
    );
    assert_eq!(status, 431, "{body}");
    assert_eq!(code.unwrap(), "headers-too-large");
    assert!(body.contains("16384"), "{body}");
    // A header under the limit goes through.
    assert_eq!(
        proxy.get("http://cart/").header("x-small", "y".repeat(8 * 1024)).send().await.unwrap().status(),
        200
    );
}

/// Clients that hang up leave no request counted in flight, so a sidecar drained while its app
/// exits stops once its drain is quiet, not at --drain-timeout.
#[tokio::test]
async fn aborted_outbound_requests_leak_no_in_flight_count_and_the_drain_ends_on_time() {
    let dir = tempfile::tempdir().unwrap();
    let drain = ["--drain-min", "1s", "--drain-quiet", "500ms", "--drain-timeout", "60s"];
    let (_provider, mut consumer, mut capp) = pair(&dir, "slowpoke", &[], &drain).await;
    consumer.wait_ready(T).await;
    let proxy = consumer.outbound_client();
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let proxy = proxy.clone();
            tokio::spawn(async move {
                proxy.get("http://slowpoke/slow?ms=30000").send().await.map(|r| r.status())
            })
        })
        .collect();
    let outbound = |m: &str| metric(m, "berth_requests_in_flight", &[("direction", "outbound")]);
    eventually(T, "three outbound calls in flight", || async { outbound(&consumer.metrics().await) == 3.0 })
        .await;
    for c in calls {
        c.abort();
    }
    eventually(T, "the outbound in-flight count returns to 0", || async {
        outbound(&consumer.metrics().await) == 0.0
    })
    .await;
    capp.proc.kill();
    consumer.proc.signal("TERM");
    // drain-min + drain-quiet + a little, far below drain-timeout.
    let status = consumer.proc.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "{}", consumer.proc.output());
}

/// A provider on another "node" (a network namespace) whose packets are suddenly all dropped:
/// the same as a frozen one — no idempotent request fails, it is ejected while the registry
/// still lists it; and a new connection to it fails at the connect timeout and moves on, even
/// for a POST (it was never sent).
#[tokio::test]
async fn a_blackholed_provider_is_ejected_and_connects_to_it_fail_over() {
    let ns = Netns::create();
    let dir = tempfile::tempdir().unwrap();
    let registry = crate::support::dir_registry(&dir);
    let policy = dir.path().join("public/config/BERTH");
    std::fs::create_dir_all(&policy).unwrap();
    std::fs::write(
        policy.join("berth.traffic.stock"),
        r#"{"schema":1,"version":1,"weights":{"stable":67,"blue":33}}"#,
    )
    .unwrap();
    let _a = provider(&registry, "stock", "stable", "a", &[]).await;
    let _b = provider(&registry, "stock", "stable", "b", &[]).await;
    let mut cmd = crate::support::berth();
    cmd.args(["sample-app", "--name", "victim", "--listen", "127.0.0.1:0"]);
    let app = Proc::spawn("app victim (namespace)", ns.wrap(&cmd));
    let line = app.wait_line("listening on ", T).await;
    let app_port = line.rsplit(':').next().unwrap().trim().to_owned();
    let mut cmd = crate::support::berth();
    let at = format!("{}:0", ns.ns_ip);
    cmd.args(["proxy", "--service", "stock", "--symbol", "blue", "--app-port", &app_port])
        .args(["--inbound", &at, "--admin", &at, "--outbound", "127.0.0.1:0", "--registry", &registry])
        .env("POD_IP", ns.ns_ip.to_string());
    let victim = Sidecar::spawn("sidecar victim (namespace)", ns.wrap(&cmd)).await;
    victim.wait_ready(T).await;
    let capp = App::start("consumer").await;
    let consumer = Sidecar::start("consumer", capp.addr.port(), &registry, &["--services", "stock"]).await;
    sees(&consumer, "stock", 3).await;
    let proxy = consumer.outbound_client();
    let running = load(&proxy, "http://stock/slow?ms=10", 8, Instant::now() + Duration::from_secs(10));
    tokio::time::sleep(Duration::from_secs(2)).await;
    ns.blackhole();
    let blackholed = Instant::now();
    let mut ejected = None;
    while ejected.is_none() && blackholed.elapsed() < Duration::from_secs(8) {
        if state_of(&consumer, "stock", victim.inbound).await.as_deref() == Some("ejected") {
            ejected = Some(blackholed.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tally = running.await.unwrap();
    eprintln!(
        "blackholed provider: {} answered, {} failed, slowest {:?}; ejected {ejected:?} after the packets stopped",
        tally.by_app.values().sum::<usize>(),
        tally.failures.len(),
        tally.slowest
    );
    assert!(tally.failures.is_empty(), "idempotent requests failed: {:?}", tally.failures);
    assert!(tally.by_app["victim"] > 0, "{:?}", tally.by_app);
    assert!(ejected.is_some(), "the blackholed instance was never ejected");

    // A consumer with no connection to it yet: its connect times out, and the POST moves on.
    let capp2 = App::start("consumer-2").await;
    let fresh = Sidecar::start("consumer-2", capp2.addr.port(), &registry, &["--services", "stock"]).await;
    sees(&fresh, "stock", 3).await;
    let resp = fresh
        .outbound_client()
        .post("http://stock/echo")
        .header("x-berth-symbol", "blue")
        .body("order 8")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(["a", "b"].contains(&resp.headers()["x-app-name"].to_str().unwrap()));
    let m = fresh.metrics().await;
    assert_eq!(
        metric(&m, "berth_outbound_retries_total", &[("service", "stock"), ("reason", "connect")]),
        1.0,
        "{m}"
    );
}

/// With PINGs off, only hedging saves idempotent requests from a hung instance: each goes to
/// another instance of its symbol once the service's usual answer time has passed, and the
/// first answer wins. A POST is never hedged: sent to the hung instance, it waits for the
/// request timeout.
#[tokio::test]
async fn hedged_attempts_save_idempotent_requests_from_a_hung_instance() {
    let dir = tempfile::tempdir().unwrap();
    let registry = crate::support::dir_registry(&dir);
    // Warming for ten minutes next to a warm instance, `good` is drawn first one time in
    // twenty: most first attempts go to `hung`.
    let _good = provider(&registry, "quote", "stable", "good", &["--warmup", "10m"]).await;
    let hung = provider(&registry, "quote", "stable", "hung", &["--warmup", "0s"]).await;
    let capp = App::start("consumer").await;
    let args = [
        "--services",
        "quote",
        "--h2-keepalive-interval",
        "0s",
        "--eject-after",
        "1000",
        "--request-timeout",
        "3s",
    ];
    let consumer = Sidecar::start("consumer", capp.addr.port(), &registry, &args).await;
    sees(&consumer, "quote", 2).await;
    let proxy = consumer.outbound_client();
    for _ in 0..10 {
        assert_eq!(proxy.get("http://quote/").send().await.unwrap().status(), 200);
    }
    let hedges =
        |m: &str| metric(m, "berth_outbound_retries_total", &[("service", "quote"), ("reason", "hedge")]);
    let before = hedges(&consumer.metrics().await);
    let frozen = Frozen::freeze(&[&hung.sidecar.proc, &hung.app.proc]);
    // POSTs until one reaches the hung instance: it is not hedged, and times out.
    let mut timed_out = false;
    for _ in 0..6 {
        let post = proxy.post("http://quote/echo").body("x").send().await.unwrap();
        match post.status().as_u16() {
            200 => assert_eq!(post.headers()["x-app-name"], "good"),
            504 => {
                timed_out = true;
                break;
            }
            other => panic!("POST answered {other}: {}", post.text().await.unwrap()),
        }
    }
    assert!(timed_out, "no POST reached the hung instance");
    assert_eq!(hedges(&consumer.metrics().await), before, "a POST was hedged");
    // GETs, until one has been hedged around the hung instance: every one answered by `good`
    // within the client's 2 s (the request timeout is 3 s).
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut answered = 0;
    while hedges(&consumer.metrics().await) == before {
        assert!(Instant::now() < deadline, "no GET was hedged ({answered} answered)");
        let resp = proxy.get("http://quote/").timeout(Duration::from_secs(2)).send().await.unwrap();
        assert_eq!((resp.status().as_u16(), resp.headers()["x-app-name"].to_str().unwrap()), (200, "good"));
        answered += 1;
    }
    drop(frozen);
}
