//! Mixed fleets: consumers without a sidecar, played by the official Python Nacos client
//! (nacos-sdk-python's gRPC client), against provider sidecars registered in a real rnacos.
//! Their Nacos weights follow the policy (weights, promote, rollback, warm-up), their metadata
//! follows other clients' conventions, and a draining instance leaves that client's list at
//! once while the requests it still sends from its cache are served — and counted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::admin::{ALICE, Admin};
use crate::support::{App, Proc, Rnacos, Sidecar, berth, client, eventually};

const T: Duration = Duration::from_secs(20);

/// The Python with nacos-sdk-python: `$BERTH_NACOS_PYTHON`, else where `scripts/test.sh`
/// installs it.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_NACOS_PYTHON") {
        return p.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"));
    let p = cache.join("berth/tools/nacos-sdk-python/bin/python");
    assert!(
        p.exists(),
        "nacos-sdk-python is not installed: run scripts/test.sh, which installs it (scripts/deps/45-nacos-sdk-python.sh)"
    );
    p
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/mixed/nacos_client.py")
}

fn nacos_client(nacos: &Rnacos, args: &[&str]) -> Command {
    let mut cmd = Command::new(python());
    cmd.arg(script())
        .args(["--server", &format!("127.0.0.1:{}", nacos.http), "--grpc-port", &nacos.grpc.to_string()])
        .args(args);
    cmd
}

/// The Python Nacos client subscribed to a service.
struct Watcher {
    proc: Proc,
}

impl Watcher {
    async fn start(nacos: &Rnacos, service: &str) -> Watcher {
        let proc =
            Proc::spawn("python nacos client", nacos_client(nacos, &["--for", "110", "watch", service]));
        proc.wait_line(r#""event": "instances""#, T).await;
        Watcher { proc }
    }

    /// Every instance list the client held, oldest first.
    fn views(&self) -> Vec<Vec<Value>> {
        self.proc
            .output()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["event"] == "instances")
            .map(|v| v["hosts"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// The instances as the client holds them now.
    fn now(&self) -> Vec<Value> {
        self.views().pop().unwrap_or_default()
    }

    fn host(&self, addr: SocketAddr) -> Option<Value> {
        self.now().into_iter().find(|h| is(h, addr))
    }

    /// `addrs`' part of the service's total weight, as a weight-honouring client splits.
    fn share(&self, addrs: &[SocketAddr]) -> f64 {
        let hosts = self.now();
        let weight = |h: &Value| h["weight"].as_f64().unwrap_or(0.0);
        let total: f64 = hosts.iter().map(weight).sum();
        let mine: f64 = hosts.iter().filter(|h| addrs.iter().any(|a| is(h, *a))).map(weight).sum();
        if total > 0.0 { mine / total } else { 0.0 }
    }
}

fn is(host: &Value, addr: SocketAddr) -> bool {
    host["ip"].as_str() == Some(&addr.ip().to_string())
        && host["port"].as_u64() == Some(u64::from(addr.port()))
}

/// A provider: the sample app (answering `hello from NAME`) behind its sidecar.
struct Provider {
    sidecar: Sidecar,
    _app: App,
}

async fn provider(nacos: &Rnacos, symbol: &str, name: &str, extra: &[&str]) -> Provider {
    let app = App::start(name).await;
    let mut args = vec!["--symbol", symbol];
    args.extend_from_slice(extra);
    let sidecar = Sidecar::start("users", app.addr.port(), &nacos.url(), &args).await;
    sidecar.wait_ready(T).await;
    Provider { sidecar, _app: app }
}

/// A consumer sidecar following `users`, and its app.
async fn consumer(nacos: &Rnacos) -> (Sidecar, App) {
    let app = App::start("consumer").await;
    let sidecar = Sidecar::start("consumer", app.addr.port(), &nacos.url(), &["--services", "users"]).await;
    (sidecar, app)
}

/// Which app answered `n` requests through the consumer (or the failures).
async fn tally(consumer: &Sidecar, pin: Option<&str>, n: usize) -> HashMap<String, usize> {
    let proxy = consumer.outbound_client();
    let mut out = HashMap::new();
    for _ in 0..n {
        let mut req = proxy.get("http://users/");
        if let Some(s) = pin {
            req = req.header("x-berth-symbol", s);
        }
        let resp = req.send().await.unwrap();
        let who = match resp.headers().get("x-app-name") {
            Some(name) if resp.status() == 200 => name.to_str().unwrap().to_owned(),
            _ => format!("{} {}", resp.status(), resp.text().await.unwrap_or_default()),
        };
        *out.entry(who).or_default() += 1;
    }
    out
}

fn ctl(admin: &Admin, args: &[&str]) {
    let out = admin.ctl(Some(ALICE), args);
    assert_eq!(out.code, 0, "berth ctl {args:?}: {out:?}");
}

async fn share_is(watcher: &Watcher, addrs: &[SocketAddr], what: &str, ok: impl Fn(f64) -> bool) {
    eventually(T, what, || async { watcher.now().len() == 3 && ok(watcher.share(addrs)) }).await;
}

#[tokio::test]
async fn a_client_without_a_sidecar_splits_by_weights_promote_and_rollback_and_berth_still_routes_by_policy()
{
    let nacos = Rnacos::start().await;
    let no_ramp = ["--warmup", "0s"];
    let s1 = provider(&nacos, "stable", "stable-1", &no_ramp).await;
    let s2 = provider(&nacos, "stable", "stable-2", &no_ramp).await;
    let c1 = provider(&nacos, "canary", "canary-1", &no_ramp).await;
    let canary = [c1.sidecar.inbound];
    let watcher = Watcher::start(&nacos, "users").await;
    // No policy: everything to stable; the canary has no share, so weight 0.
    share_is(&watcher, &canary, "the canary weighs 0 without a policy", |s| s == 0.0).await;
    assert_eq!(watcher.host(c1.sidecar.inbound).unwrap()["weight"], 0.0);
    // A berth consumer still reaches it by pin.
    let (consumer, _app) = consumer(&nacos).await;
    eventually(T, "the consumer sees all three", || async {
        consumer.endpoints().await["services"]["users"]["instances"].as_array().is_some_and(|a| a.len() == 3)
    })
    .await;
    assert_eq!(tally(&consumer, Some("canary"), 20).await, HashMap::from([("canary-1".into(), 20)]));

    let admin = Admin::start(&nacos.url(), &[]).await;
    ctl(&admin, &["weights", "users", "stable=90", "canary=10"]);
    share_is(&watcher, &canary, "the canary has 10% ±2 of the weight", |s| (0.08..=0.12).contains(&s)).await;
    // berth's consumer splits by the policy, not by the policy twice: 90/10 (400 requests:
    // 40 expected, ±20 is about three standard deviations).
    let split = tally(&consumer, None, 400).await;
    let to_canary = split.get("canary-1").copied().unwrap_or(0);
    let to_stable = split.get("stable-1").copied().unwrap_or(0) + split.get("stable-2").copied().unwrap_or(0);
    assert_eq!(to_canary + to_stable, 400, "every request answered by an instance: {split:?}");
    assert!((20..=60).contains(&to_canary), "90/10 at berth's consumer: {split:?}");

    ctl(&admin, &["promote", "users", "canary"]);
    share_is(&watcher, &canary, "the promoted canary has all the weight", |s| s == 1.0).await;
    for stable in [&s1, &s2] {
        assert_eq!(watcher.host(stable.sidecar.inbound).unwrap()["weight"], 0.0);
    }
    let pinned = tally(&consumer, Some("stable"), 20).await;
    assert!(pinned.keys().all(|k| k.starts_with("stable-")), "weight-0 stable reached by pin: {pinned:?}");

    ctl(&admin, &["rollback", "users"]);
    share_is(&watcher, &canary, "rolled back: 10% ±2 again", |s| (0.08..=0.12).contains(&s)).await;
    // /endpoints shows the Nacos weight beside the weight berth balances by.
    let canary_seen = || async {
        let seen = consumer.endpoints().await;
        let all = seen["services"]["users"]["instances"].as_array().cloned().unwrap_or_default();
        all.into_iter().find(|i| i["addr"] == c1.sidecar.inbound.to_string()).unwrap_or_default()
    };
    eventually(T, "the consumer shows the canary's Nacos weight", || async {
        canary_seen().await["nacos_weight"].as_f64().is_some_and(|w| (0.2..=0.4).contains(&w))
    })
    .await;
    let c = canary_seen().await;
    assert_eq!((c["weight"].as_f64(), c["effective_weight"].as_f64()), (Some(1.0), Some(1.0)), "{c}");
    // So does `berth ctl show`: WEIGHT for berth's consumers, NACOS for clients without one.
    let row = || {
        let show = admin.ctl(Some(ALICE), &["show", "users"]);
        let row =
            show.stdout.lines().find(|l| l.contains(&c1.sidecar.inbound.to_string())).map(str::to_owned);
        (show.stdout.contains("WEIGHT  NACOS"), row.unwrap_or_default())
    };
    eventually(T, "ctl show has the canary's Nacos weight", || async {
        let (header, row) = row();
        header && row.contains(" 1.00 ") && row.contains(" 0.30 ")
    })
    .await;
}

#[tokio::test]
async fn a_warming_instance_ramps_its_nacos_weight_for_a_client_without_a_sidecar() {
    let nacos = Rnacos::start().await;
    let no_ramp = ["--warmup", "0s"];
    let _warm = [
        provider(&nacos, "stable", "stable-1", &no_ramp).await,
        provider(&nacos, "stable", "stable-2", &no_ramp).await,
        provider(&nacos, "stable", "stable-3", &no_ramp).await,
    ];
    let watcher = Watcher::start(&nacos, "users").await;
    let new = provider(&nacos, "stable", "stable-4", &["--warmup", "20s"]).await;
    let addr = new.sidecar.inbound;
    let ramp = || -> Vec<f64> {
        let mut seen: Vec<f64> = Vec::new();
        for view in watcher.views() {
            if let Some(w) = view.iter().find(|h| is(h, addr)).and_then(|h| h["weight"].as_f64())
                && seen.last() != Some(&w)
            {
                seen.push(w);
            }
        }
        seen
    };
    eventually(T, "the new instance's weight takes three steps up", || async { ramp().len() >= 3 }).await;
    let steps = ramp();
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "the weight only rises while warming: {steps:?}");
    assert!(steps[0] > 0.0 && steps[0] <= 0.1, "it starts at the ramp's bottom: {steps:?}");
    // The warm ones weigh an average share each (1 of 4), as an instance without berth does.
    let warm = watcher
        .now()
        .iter()
        .filter(|h| !is(h, addr))
        .map(|h| h["weight"].as_f64().unwrap())
        .collect::<Vec<_>>();
    assert_eq!(warm, [1.0, 1.0, 1.0]);
}

#[tokio::test]
async fn metadata_follows_other_clients_and_a_draining_instance_leaves_their_list_at_once_and_is_served() {
    let nacos = Rnacos::start().await;
    let draining = provider(
        &nacos,
        "stable",
        "stable-1",
        &["--warmup", "0s", "--cluster", "zone-a", "--drain-min", "20s"],
    )
    .await;
    let _other = provider(&nacos, "stable", "stable-2", &["--warmup", "0s"]).await;
    let canary =
        provider(&nacos, "canary", "canary-1", &["--warmup", "0s", "--symbol-metadata", "lane"]).await;
    let watcher = Watcher::start(&nacos, "users").await;
    eventually(T, "the client sees all three", || async { watcher.now().len() == 3 }).await;

    let stable = watcher.host(draining.sidecar.inbound).unwrap();
    assert_eq!(stable["cluster"], "zone-a");
    let meta = &stable["metadata"];
    for (key, want) in [
        ("preserved.register.source", "BERTH"),
        ("berth.symbol", "stable"),
        ("version", "stable"),
        ("hint", "stable"),
        ("berth.weight", "policy"),
    ] {
        assert_eq!(meta[key], want, "{key} in {meta}");
    }
    let first = watcher.host(canary.sidecar.inbound).unwrap();
    assert_eq!((&first["metadata"]["lane"], &first["metadata"]["version"]), (&"canary".into(), &Value::Null));
    assert_eq!(first["cluster"], "DEFAULT");
    // A re-registration for a new weight keeps the registration's metadata as it was.
    let admin = Admin::start(&nacos.url(), &[]).await;
    ctl(&admin, &["weights", "users", "stable=50", "canary=50"]);
    eventually(T, "the canary's weight changed", || async {
        watcher.host(canary.sidecar.inbound).is_some_and(|h| h["weight"].as_f64() > Some(0.0))
    })
    .await;
    assert_eq!(watcher.host(canary.sidecar.inbound).unwrap()["metadata"], first["metadata"]);

    // A berth consumer sends some requests while stable-1 drains: it heeds the signal.
    let (consumer, _app) = consumer(&nacos).await;
    tally(&consumer, Some("stable"), 10).await;
    let resp = client().post(draining.sidecar.admin_url("/drain")).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    let split = tally(&consumer, Some("stable"), 30).await;
    assert_eq!(split.values().sum::<usize>(), 30, "{split:?}");
    eventually(T, "the draining instance is gone from the client's list", || async {
        watcher.host(draining.sidecar.inbound).is_none()
    })
    .await;
    assert_eq!(
        draining.sidecar.lifecycle().await,
        "draining",
        "gone at once: before drain-min (20 s) is over"
    );

    // The client had it cached: what it still sends is served, and counted as not heeding.
    let target = draining.sidecar.inbound.to_string();
    let mut call =
        nacos_client(&nacos, &["--source-ip", "127.0.0.3", "--interval-ms", "100", "call", &target, "15"]);
    let out = tokio::task::spawn_blocking(move || call.output().unwrap()).await.unwrap();
    let calls: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "call")
        .collect();
    assert_eq!(calls.len(), 15, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(calls.iter().all(|c| c["status"] == 200 && c["lifecycle"] == "draining"), "{calls:?}");
    let drain = &draining.sidecar.state().await["drain"];
    // 15 requests 100 ms apart: all but those of the first 500 ms after the first answer.
    assert!(drain["signal_ignored"].as_u64().unwrap() >= 5, "{drain}");
    assert_eq!(drain["peers_ignoring_signal"], 1, "only the client without a sidecar: {drain}");
    let metrics = draining.sidecar.metrics().await;
    assert!(
        metrics.lines().any(|l| l.starts_with("berth_drain_signal_ignored_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

#[test]
fn mixed_fleet_options_are_checked_and_exit_64_naming_the_option() {
    let ok = ["proxy", "--service", "s", "--app-port", "8080", "--registry", "dir:///tmp/berth-test-unused"];
    for (extra, option, allowed) in [
        (["--nacos-weight", "heavy"], "--nacos-weight", "policy"),
        (["--nacos-weight-scale", "0"], "--nacos-weight-scale", "above 0"),
        (["--nacos-weight-scale", "20000"], "--nacos-weight-scale", "at most 10000"),
        (["--symbol-metadata", "version,berth.symbol"], "--symbol-metadata", "not starting with `berth.`"),
        (["--cluster", "zone_a"], "--cluster", "letters, digits or `-`"),
    ] {
        let out = berth().args(ok).args(extra).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{extra:?}: {err}");
        assert!(
            err.contains(option) && err.contains(allowed),
            "{extra:?}: expected {option} and {allowed:?} in {err}"
        );
    }
}
