//! `berth gateway` through real processes and rnacos: path routing to exposed services and
//! their symbols, refusals that proxy nothing, a lane started at the edge, a rolling restart
//! behind the gateway under load, and the gateway's own drain under load.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::faults_outbound::{metric, provider, sees};
use crate::lanes::Hop;
use crate::support::{Proc, Rnacos, berth, client, eventually};

const T: Duration = Duration::from_secs(20);

/// A running `berth gateway` on 127.0.0.1.
#[derive(Debug)]
pub struct Gateway {
    pub proc: Proc,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
}

impl Gateway {
    /// `berth gateway --registry REGISTRY` plus `extra`, both listeners on ephemeral ports.
    pub async fn start(registry: &str, extra: &[&str]) -> Gateway {
        let mut cmd = berth();
        cmd.args(["gateway", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--registry", registry])
            .args(extra);
        Gateway::spawn(cmd).await
    }

    async fn spawn(cmd: Command) -> Gateway {
        let proc = Proc::spawn("gateway", cmd);
        let line = proc.wait_line("berth gateway listening", Duration::from_secs(10)).await;
        let field = |key: &str| -> SocketAddr {
            let start = line.find(&format!(" {key}=")).unwrap_or_else(|| panic!("no {key} in {line}"))
                + key.len()
                + 2;
            line[start..].split(' ').next().unwrap().parse().unwrap()
        };
        Gateway { listen: field("listen"), admin: field("admin"), proc }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
    }

    pub async fn ready(&self) -> u16 {
        client().get(format!("http://{}/ready", self.admin)).send().await.map_or(0, |r| r.status().as_u16())
    }

    pub async fn wait_ready(&self) {
        eventually(T, "the gateway is ready", || async { self.ready().await == 200 }).await;
    }

    pub async fn metrics(&self) -> String {
        client().get(format!("http://{}/metrics", self.admin)).send().await.unwrap().text().await.unwrap()
    }

    /// Waits until the gateway sees `n` instances of `service` (its `/endpoints`).
    pub async fn sees(&self, service: &str, n: usize) {
        let url = format!("http://{}/endpoints", self.admin);
        eventually(T, &format!("the gateway sees {n} instances of {service}"), || async {
            let doc: serde_json::Value = client().get(&url).send().await.unwrap().json().await.unwrap();
            doc["services"][service]["instances"].as_array().is_some_and(|a| a.len() == n)
        })
        .await;
    }
}

/// The app that answered (`x-app-name`), or the status and `x-berth-error` of a failure.
async fn who(resp: reqwest::Response) -> String {
    match (resp.status().as_u16(), resp.headers().get("x-app-name")) {
        (200, Some(name)) => name.to_str().unwrap().to_owned(),
        (status, _) => format!("{status} {:?}", resp.headers().get("x-berth-error")),
    }
}

/// Requests that reached `sidecar`'s inbound side, by its metrics.
fn inbound_requests(metrics: &str) -> f64 {
    ["1xx", "2xx", "3xx", "4xx", "5xx"]
        .iter()
        .map(|class| {
            metric(metrics, "berth_requests_total", &[("direction", "inbound"), ("status_class", class)])
        })
        .sum()
}

/// Paths name an exposed service and perhaps its symbol; a lane the path starts travels on;
/// a service that is not exposed is refused whichever way the request names it, and nothing
/// reaches it.
#[tokio::test]
async fn the_gateway_routes_exposed_services_and_nothing_else() {
    let nacos = Rnacos::start().await;
    let registry = nacos.url();
    let mut hops = Vec::new();
    for (service, symbol) in
        [("user", "stable"), ("user", "canary"), ("orders", "stable"), ("orders", "canary")]
    {
        let hop =
            Hop::start(&registry, service, symbol, &format!("{service}-{symbol}"), &["--services", "orders"])
                .await;
        hop.sidecar.wait_ready(T).await;
        hops.push(hop);
    }
    let secret = provider(&registry, "secret", "stable", "secret", &[]).await;
    let gw = Gateway::start(&registry, &["--expose", "user"]).await;
    gw.wait_ready().await;
    gw.sees("user", 2).await;
    for hop in &hops {
        sees(&hop.sidecar, "orders", 2).await;
    }
    let c = client();
    assert_eq!(who(c.get(gw.url("/user/")).send().await.unwrap()).await, "user-stable");
    assert_eq!(who(c.get(gw.url("/user.canary/")).send().await.unwrap()).await, "user-canary");
    let pinned = c.get(gw.url("/user.stable/")).header("x-berth-symbol", "canary").send().await.unwrap();
    assert_eq!(who(pinned).await, "user-canary", "the request's own pin beats the path's symbol");

    // The instance sees the path without the prefix, Host naming the service, and the client.
    let echo: serde_json::Value =
        c.get(gw.url("/user.canary/echo?x=1")).send().await.unwrap().json().await.unwrap();
    assert_eq!(echo["path"], "/echo?x=1");
    assert_eq!(echo["headers"]["host"], "user");
    assert_eq!(echo["headers"]["x-forwarded-for"], "127.0.0.1, 127.0.0.1", "the client, then the gateway");
    assert_eq!(echo["headers"]["x-berth-symbol"], "canary", "the path's symbol is the lane");
    // An outside client does not decide that its POST may be sent twice.
    let post =
        c.post(gw.url("/user/echo")).header("x-berth-retryable", "true").body("x").send().await.unwrap();
    let echo: serde_json::Value = post.json().await.unwrap();
    assert!(echo["headers"].get("x-berth-retryable").is_none(), "{echo}");

    // The lane started by the path travels on through user-canary's own sidecar.
    let chain = c.get(gw.url("/user.canary/call?next=orders&forward=baggage")).send().await.unwrap();
    let lines = chain.text().await.unwrap();
    let names: Vec<&str> = lines.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(names, ["user-canary", "orders-canary"], "{lines}");

    // Not exposed: by path, with a symbol, as a proxy request, by Host (not asked for).
    let refused = [
        c.get(gw.url("/secret/")).send().await.unwrap(),
        c.get(gw.url("/secret.stable/")).send().await.unwrap(),
        c.get(gw.url("/orders/")).send().await.unwrap(),
        c.get(gw.url("/")).send().await.unwrap(),
        c.get(gw.url("/")).header("host", "secret").send().await.unwrap(),
    ];
    for resp in refused {
        assert_eq!(resp.status(), 404);
        assert_eq!(resp.headers()["x-berth-error"], "not-exposed");
        assert!(resp.text().await.unwrap().contains("no exposed service"));
    }
    let via_proxy = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(format!("http://{}", gw.listen)).unwrap())
        .build()
        .unwrap();
    assert_eq!(via_proxy.get("http://secret/").send().await.unwrap().status(), 404);
    let bad = c.get(gw.url("/user.Not_A_Symbol/")).send().await.unwrap();
    assert_eq!(
        (bad.status().as_u16(), &bad.headers()["x-berth-error"]),
        (400, &"bad-symbol".parse().unwrap())
    );
    assert_eq!(inbound_requests(&secret.sidecar.metrics().await), 0.0, "nothing reached the secret service");
    let m = gw.metrics().await;
    assert!(
        metric(
            &m,
            "berth_outbound_requests_total",
            &[("service", "user"), ("symbol", "canary"), ("status_class", "2xx")]
        ) >= 4.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "berth_requests_total", &[("direction", "gateway"), ("status_class", "4xx")]),
        7.0,
        "{m}"
    );
}

/// `/ready` waits for the registry: a gateway started while rnacos is frozen answers 503
/// naming the service it waits for, and 200 once rnacos answers again.
#[tokio::test]
async fn the_gateway_is_ready_only_once_its_registry_view_is_loaded() {
    let nacos = Rnacos::start().await;
    let registry = nacos.url();
    let _web = provider(&registry, "web", "stable", "web-1", &[]).await;
    nacos.pause();
    let gw = Gateway::start(&registry, &["--expose", "web"]).await;
    let url = format!("http://{}/ready", gw.admin);
    for _ in 0..5 {
        let resp = client().get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 503);
        assert!(resp.text().await.unwrap().contains("waiting for the registry's instances of web"));
    }
    nacos.resume();
    gw.wait_ready().await;
    assert_eq!(who(client().get(gw.url("/web/")).send().await.unwrap()).await, "web-1");
}

/// Closed-loop clients GETting a URL until stopped (at most `max` requests in all), each
/// request on a new connection, as independent outside clients.
struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<HashMap<String, usize>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(url: impl Fn() -> String + Send + Sync + 'static, workers: usize, max: usize) -> Load {
        let (stop, sent) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
        let tally = Arc::new(Mutex::new(HashMap::new()));
        let url = Arc::new(url);
        let workers = (0..workers)
            .map(|_| {
                let (stop, sent, tally, url) = (stop.clone(), sent.clone(), tally.clone(), url.clone());
                tokio::spawn(async move {
                    let c = client();
                    while !stop.load(Ordering::Relaxed) && sent.fetch_add(1, Ordering::Relaxed) < max {
                        let outcome = match c.get(url()).send().await {
                            Ok(resp) => who(resp).await,
                            Err(e) => format!("error {e}"),
                        };
                        *tally.lock().unwrap().entry(outcome).or_insert(0) += 1;
                    }
                })
            })
            .collect();
        Load { stop, tally, workers }
    }

    fn done(&self) -> usize {
        self.tally.lock().unwrap().values().sum()
    }

    async fn wait_for_more(&self, more: usize) {
        let target = self.done() + more;
        eventually(Duration::from_secs(60), "the load goes on", || async { self.done() >= target }).await;
    }

    async fn stop(self) -> HashMap<String, usize> {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            w.await.unwrap();
        }
        Arc::try_unwrap(self.tally).unwrap().into_inner().unwrap()
    }
}

/// The failures in a tally: every outcome not answered by an app named `web-…`.
fn failures(tally: &HashMap<String, usize>) -> usize {
    tally.iter().filter(|(k, _)| !k.starts_with("web-")).map(|(_, n)| n).sum()
}

/// Every instance of a service behind the gateway is replaced, one after another, under load:
/// the gateway stops sending to each as it drains, and not one request fails. (The providers'
/// drains carry this one on their own; what only the gateway's failover saves is in
/// `gateway_faults.rs`.)
#[tokio::test]
async fn a_rolling_restart_behind_the_gateway_loses_no_request() {
    let nacos = Rnacos::start().await;
    let registry = nacos.url();
    let fast = ["--drain-min", "2s", "--warmup", "1s"];
    let mut old = vec![
        provider(&registry, "web", "stable", "web-1", &fast).await,
        provider(&registry, "web", "stable", "web-2", &fast).await,
    ];
    let gw = Gateway::start(&registry, &["--expose", "web"]).await;
    gw.wait_ready().await;
    gw.sees("web", 2).await;
    let url = gw.url("/web/slow?ms=20");
    let load = Load::start(move || url.clone(), 4, 20_000);
    load.wait_for_more(50).await;
    let mut new = Vec::new();
    for (i, mut gone) in old.drain(..).enumerate() {
        new.push(provider(&registry, "web", "stable", &format!("web-new-{i}"), &fast).await);
        gw.sees("web", 3).await;
        load.wait_for_more(50).await;
        gone.sidecar.proc.signal("TERM");
        assert!(gone.sidecar.proc.wait_exit(T).await.success(), "the old instance drained cleanly");
        drop(gone);
        gw.sees("web", 2).await;
        load.wait_for_more(50).await;
    }
    let tally = load.stop().await;
    let total: usize = tally.values().sum();
    assert_eq!(failures(&tally), 0, "{tally:?}");
    assert!(tally.get("web-new-1").copied().unwrap_or(0) > 0, "the new instances served: {tally:?}");
    assert!(total >= 250, "{total} requests");
}

/// The gateway's own drain: `/ready` answers 503 at once while it keeps serving for drain-min,
/// every response closing its connection; requests in flight finish; clients that leave it as
/// a load balancer would (once `/ready` fails) lose nothing; it exits 0 once quiet.
#[tokio::test]
async fn the_gateway_drains_without_losing_a_request() {
    let nacos = Rnacos::start().await;
    let registry = nacos.url();
    let _web = provider(&registry, "web", "stable", "web-1", &[]).await;
    let args = ["--expose", "web", "--drain-min", "2s", "--drain-quiet", "300ms"];
    let mut first = Gateway::start(&registry, &args).await;
    let second = Gateway::start(&registry, &args).await;
    for gw in [&first, &second] {
        gw.wait_ready().await;
        gw.sees("web", 1).await;
    }
    // The "load balancer": every client goes to the first gateway until its /ready fails.
    let left = Arc::new(AtomicBool::new(false));
    let (to_first, to_second) = (first.url("/web/slow?ms=20"), second.url("/web/slow?ms=20"));
    let l = left.clone();
    let load = Load::start(
        move || if l.load(Ordering::Relaxed) { to_second.clone() } else { to_first.clone() },
        4,
        20_000,
    );
    load.wait_for_more(50).await;
    let slow: Vec<_> =
        (0..3).map(|_| tokio::spawn(client().get(first.url("/web/slow?ms=1500")).send())).collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    first.proc.signal("TERM");
    eventually(T, "the first gateway's /ready fails", || async { first.ready().await == 503 }).await;
    // Still serving during drain-min, each response closing its connection.
    let during = client().get(first.url("/web/")).send().await.unwrap();
    assert_eq!(during.status(), 200);
    assert_eq!(during.headers()["connection"], "close");
    left.store(true, Ordering::Relaxed);
    for s in slow {
        let resp = s.await.unwrap().unwrap();
        assert_eq!(resp.status(), 200, "a request in flight when the drain began finished");
    }
    assert!(first.proc.wait_exit(T).await.success(), "the drain ended on its own");
    assert!(first.proc.output().contains("stopped: drain complete"), "{}", first.proc.output());
    load.wait_for_more(50).await;
    let tally = load.stop().await;
    assert_eq!(failures(&tally), 0, "{tally:?}");
}

/// Every bad input exits 64 naming the option; `--help` explains the allow-list and shows no
/// registry password from the environment.
#[test]
fn bad_gateway_configuration_exits_64_naming_the_option() {
    let ok = ["--registry", "dir:///tmp/berth-test-unused", "--expose", "user"];
    let cases: &[(&[&str], &str, &str)] = &[
        (&["--expose", "user"], "--registry", "registry"),
        (&["--expose", "bad/name"], "--expose", "service name"),
        (&["--lane-headers", "baggage"], "--lane-headers", "read already"),
        (&["--drain-quiet", "0s"], "--drain-quiet", "longer than zero"),
        (&["--drain-min", "30s", "--drain-timeout", "10s"], "--drain-timeout", "longer than --drain-min"),
        (&["--listen", "0.0.0.0:9000", "--admin", "127.0.0.1:9000"], "--admin", "--listen"),
        (&["--hedge-delay-min", "0s"], "--hedge-delay-min", "--no-hedge"),
        (&["--registry", "http://nacos:8848"], "--registry", "nacos://"),
        (&["--no-own-lane"], "--no-own-lane", ""),
    ];
    for (extra, option, allowed) in cases {
        let mut cmd = berth();
        cmd.arg("gateway");
        // The first case leaves the registry out; the others take the good options first, so
        // that theirs is the one that is wrong.
        if extra[0] != "--expose" || extra[1] != "user" {
            cmd.args(ok);
        }
        let out = cmd.args(*extra).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{extra:?}: {stderr}");
        assert!(stderr.contains(option) && stderr.contains(allowed), "{extra:?}: {stderr}");
    }
    let help = berth()
        .args(["gateway", "--help"])
        .env("BERTH_REGISTRY", "nacos://u:hunter2-secret@nacos:8848")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("--expose") && text.contains("404 not-exposed"), "{text}");
    assert!(!text.contains("hunter2-secret"), "{text}");
}

/// The chart's gateway: off by default; on, a Deployment, Service, PDB and Ingress that agree
/// with each other and validate against the Kubernetes schemas, the registry URL from its
/// Secret; on without `gateway.expose`, a clear failure.
#[test]
fn chart_gateway_is_off_by_default_and_renders_what_it_promises() {
    use crate::chart::{find, helm, objects, template, validate};
    let default = objects(&template(&[]));
    assert!(
        default.iter().all(|o| o["metadata"]["labels"]["app.kubernetes.io/component"] != "gateway"),
        "no gateway object by default"
    );
    let yaml = template(&["ci/gateway-values.yaml"]);
    validate(&yaml, "the gateway values");
    let all = objects(&yaml);
    let deployment = find(&all, "Deployment", "berth-gateway");
    let pod = &deployment["spec"]["template"];
    let container = &pod["spec"]["containers"][0];
    let args: Vec<&str> = container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    for want in [
        "gateway",
        "--listen=0.0.0.0:8080",
        "--admin=0.0.0.0:15020",
        "--expose=user,orders",
        "--route-by-host",
        "--lane-headers=x-mse-tag",
        "--drain-min=10s",
        "--drain-timeout=60s",
        "--request-timeout=10s",
    ] {
        assert!(args.contains(&want), "{want} in {args:?}");
    }
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 65, "longer than the drain");
    assert_eq!(pod["metadata"]["annotations"]["berth.io/inject"], "disabled");
    let env = container["env"].to_string();
    assert!(env.contains("secretKeyRef") && env.contains("nacos-credentials"), "{env}");
    assert!(!args.iter().any(|a| a.starts_with("--registry")), "no URL on the command line");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "admin");
    let service = find(&all, "Service", "berth-gateway");
    assert_eq!(service["spec"]["type"], "LoadBalancer");
    for (k, v) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&pod["metadata"]["labels"][k], v, "selector {k}");
    }
    let target = service["spec"]["ports"][0]["targetPort"].as_str().unwrap();
    assert!(
        container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == target && p["containerPort"] == 8080)
    );
    assert_eq!(find(&all, "PodDisruptionBudget", "berth-gateway")["spec"]["minAvailable"], 2);
    let ingress = find(&all, "Ingress", "berth-gateway");
    let backend = &ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"];
    assert_eq!(
        (backend["name"].as_str(), backend["port"]["name"].as_str()),
        (Some("berth-gateway"), Some("http"))
    );
    assert_eq!(ingress["spec"]["ingressClassName"], "nginx");

    let out = helm()
        .args(["template", "berth", crate::chart::CHART, "--set", "gateway.enabled=true"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("gateway.expose: name the services"));
    let out = helm()
        .args([
            "template",
            "berth",
            crate::chart::CHART,
            "--set",
            "gateway.enabled=true,gateway.expose={Bad Name}",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("/gateway/expose/0"), "{stderr}");
}
