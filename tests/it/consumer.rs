//! The consumer side: lifecycle-aware, symbol- and weight-aware routing through the outbound
//! port, against provider sidecars registered in a real rnacos.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::support::load::Load;
use crate::support::{App, Rnacos, Sidecar, client, eventually};

const T: Duration = Duration::from_secs(20);

/// A provider instance: the sample app (answering `hello from NAME`) behind its sidecar.
struct Provider {
    sidecar: Sidecar,
    _app: App,
}

async fn provider(nacos: &Rnacos, service: &str, symbol: &str, name: &str, extra: &[&str]) -> Provider {
    let app = App::start(name).await;
    let mut args = vec!["--symbol", symbol];
    args.extend_from_slice(extra);
    let sidecar = Sidecar::start(service, app.addr.port(), &nacos.url(), &args).await;
    sidecar.wait_ready(T).await;
    Provider { sidecar, _app: app }
}

/// A consumer sidecar (with its own app) whose outbound port the tests call through.
async fn consumer(nacos: &Rnacos, extra: &[&str]) -> (Sidecar, App) {
    let app = App::start("consumer").await;
    let sidecar = Sidecar::start("consumer", app.addr.port(), &nacos.url(), extra).await;
    (sidecar, app)
}

/// Which app answered (from `x-app-name`), or the status when it failed.
async fn who(client: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> String {
    let mut req = client.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    match resp.headers().get("x-app-name") {
        Some(name) if resp.status() == 200 => name.to_str().unwrap().to_owned(),
        _ => format!("{} {}", resp.status(), resp.text().await.unwrap_or_default()),
    }
}

async fn tally(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    n: usize,
) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for _ in 0..n {
        *out.entry(who(client, url, headers).await).or_default() += 1;
    }
    out
}

/// Waits until the consumer sees `n` instances of `service`.
async fn sees(consumer: &Sidecar, service: &str, n: usize) {
    eventually(T, &format!("the consumer sees {n} instances of {service}"), || async {
        consumer.endpoints().await["services"][service]["instances"].as_array().is_some_and(|a| a.len() == n)
    })
    .await;
}

#[tokio::test]
async fn routes_by_proxy_form_host_header_and_path_prefix_and_pins_by_header() {
    let nacos = Rnacos::start().await;
    let _stable = provider(&nacos, "users", "stable", "stable-1", &[]).await;
    let _canary = provider(&nacos, "users", "canary", "canary-1", &[]).await;
    let (consumer, _app) = consumer(&nacos, &[]).await;
    let proxy = consumer.outbound_client();
    // Warm the subscription, then: no policy means everything to stable.
    assert_eq!(who(&proxy, "http://users/", &[]).await, "stable-1");
    sees(&consumer, "users", 2).await;
    assert_eq!(tally(&proxy, "http://users/", &[], 20).await, HashMap::from([("stable-1".into(), 20)]));
    // x-berth-symbol pins.
    let pinned = tally(&proxy, "http://users/", &[("x-berth-symbol", "canary")], 20).await;
    assert_eq!(pinned, HashMap::from([("canary-1".into(), 20)]));
    // Host header, straight to the outbound port.
    let direct = format!("http://{}/", consumer.outbound);
    assert_eq!(who(&client(), &direct, &[("host", "users")]).await, "stable-1");
    // Path prefix: routed by it, and stripped before the provider sees the path.
    let echo: serde_json::Value = client()
        .get(format!("http://{}/users.canary/echo?x=1", consumer.outbound))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echo["path"], "/echo?x=1");
    assert_eq!(echo["headers"]["host"], "users");
    assert_eq!(who(&client(), &format!("http://{}/users.canary/", consumer.outbound), &[]).await, "canary-1");
}

#[tokio::test]
async fn header_rules_policy_updates_invalid_policies_and_strict_symbols() {
    let nacos = Rnacos::start().await;
    let _stable = provider(&nacos, "orders", "stable", "stable-1", &[]).await;
    let _canary = provider(&nacos, "orders", "canary", "canary-1", &[]).await;
    let (consumer, _app) = consumer(&nacos, &["--services", "orders"]).await;
    sees(&consumer, "orders", 2).await;
    let proxy = consumer.outbound_client();

    let rules = r#"{"schema":1,"version":1,"rules":[{"name":"beta","match":[{"header":"x-beta","exact":"yes"}],"symbol":"canary"}]}"#;
    nacos.publish_config("berth.traffic.orders", rules).await;
    let published = Instant::now();
    // How fast is for benches/; here only that it does.
    eventually(T, "the policy takes effect", || async {
        who(&proxy, "http://orders/", &[("x-beta", "yes")]).await == "canary-1"
    })
    .await;
    let took = published.elapsed();
    assert_eq!(
        tally(&proxy, "http://orders/", &[("x-beta", "yes")], 20).await,
        HashMap::from([("canary-1".into(), 20)])
    );
    assert_eq!(
        tally(&proxy, "http://orders/", &[("x-beta", "no")], 20).await,
        HashMap::from([("stable-1".into(), 20)])
    );
    assert_eq!(tally(&proxy, "http://orders/", &[], 20).await, HashMap::from([("stable-1".into(), 20)]));

    // An invalid policy is rejected: the old one stays, and it says so.
    nacos.publish_config("berth.traffic.orders", r#"{"schema":1,"weights":{"stable":50}}"#).await;
    eventually(T, "the invalid policy is rejected", || async {
        consumer.endpoints().await["services"]["orders"]["policy"]["rejected"].is_string()
    })
    .await;
    let endpoints = consumer.endpoints().await;
    let policy = &endpoints["services"]["orders"]["policy"];
    assert_eq!(policy["version"], 1);
    assert!(policy["rejected"].as_str().unwrap().contains("sum to 100"), "{policy}");
    assert_eq!(who(&proxy, "http://orders/", &[("x-beta", "yes")]).await, "canary-1");
    let m = consumer.metrics().await;
    assert!(m.contains(r#"berth_policy_rejections_total{service="orders"} 1"#), "{m}");
    assert!(m.contains(r#"berth_policy_version{service="orders"} 1"#), "{m}");
    nacos.publish_config("berth.traffic.orders", "this is not json").await;
    eventually(T, "garbage is rejected too", || async {
        consumer.metrics().await.contains(r#"berth_policy_rejections_total{service="orders"} 2"#)
    })
    .await;
    assert_eq!(who(&proxy, "http://orders/", &[("x-beta", "yes")]).await, "canary-1");

    // Strict: a symbol without instances fails clearly instead of falling back.
    nacos.publish_config("berth.traffic.orders", r#"{"schema":1,"version":2,"strict":true}"#).await;
    eventually(T, "strict policy applied", || async {
        consumer.endpoints().await["services"]["orders"]["policy"]["version"] == 2
    })
    .await;
    let resp = proxy.get("http://orders/").header("x-berth-symbol", "blue").send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["x-berth-error"], "no-symbol-instances");
    let body = resp.text().await.unwrap();
    assert!(body.contains("orders") && body.contains("blue") && body.contains("strict"), "{body}");
    eprintln!("policy took effect after {took:?}");
}

/// Share of `name` in `t`, in percent.
fn share(t: &HashMap<String, usize>, name: &str) -> f64 {
    let total: usize = t.values().sum();
    t.get(name).copied().unwrap_or(0) as f64 * 100.0 / total as f64
}

#[tokio::test]
async fn weights_split_90_10_and_three_ways_and_sticky_keys_stay() {
    let nacos = Rnacos::start().await;
    let _a = provider(&nacos, "pay", "stable", "stable-1", &[]).await;
    let _b = provider(&nacos, "pay", "canary", "canary-1", &[]).await;
    let _c = provider(&nacos, "pay", "blue", "blue-1", &[]).await;
    let (consumer, _app) = consumer(&nacos, &["--services", "pay"]).await;
    sees(&consumer, "pay", 3).await;
    let proxy = consumer.outbound_client();

    nacos
        .publish_config(
            "berth.traffic.pay",
            r#"{"schema":1,"version":1,"weights":{"stable":90,"canary":10}}"#,
        )
        .await;
    eventually(T, "weights applied", || async {
        consumer.endpoints().await["services"]["pay"]["policy"]["version"] == 1
    })
    .await;
    let t = tally(&proxy, "http://pay/", &[], 2_000).await;
    // Each request picks canary with p = 0.1: over n = 2000 the count is binomial with
    // σ = √(n·p·(1−p)) ≈ 13.4 requests = 0.67 points. ±3.5 points is over 5σ: a correct split
    // fails this less than once in a million runs, a wrong one (say 85/15) fails it always.
    assert!((share(&t, "canary-1") - 10.0).abs() < 3.5, "{t:?}");
    assert!((share(&t, "stable-1") - 90.0).abs() < 3.5, "{t:?}");
    assert_eq!(t.values().sum::<usize>(), 2_000, "{t:?}");

    nacos
        .publish_config(
            "berth.traffic.pay",
            r#"{"schema":1,"version":2,"weights":{"stable":50,"canary":30,"blue":20}}"#,
        )
        .await;
    eventually(T, "three-way weights applied", || async {
        consumer.endpoints().await["services"]["pay"]["policy"]["version"] == 2
    })
    .await;
    let t = tally(&proxy, "http://pay/", &[], 2_000).await;
    // σ ≤ √(2000·0.25) ≈ 22 requests = 1.1 points; ±5 points is over 4.5σ.
    for (name, pct) in [("stable-1", 50.0), ("canary-1", 30.0), ("blue-1", 20.0)] {
        assert!((share(&t, name) - pct).abs() < 5.0, "{name}: {t:?}");
    }

    nacos
        .publish_config(
            "berth.traffic.pay",
            r#"{"schema":1,"version":3,"weights":{"stable":50,"canary":50},"sticky":{"header":"x-user"}}"#,
        )
        .await;
    eventually(T, "sticky applied", || async {
        consumer.endpoints().await["services"]["pay"]["policy"]["version"] == 3
    })
    .await;
    let mut seen = HashMap::new();
    for user in 0..16 {
        let user = format!("user-{user}");
        let t = tally(&proxy, "http://pay/", &[("x-user", &user)], 15).await;
        assert_eq!(t.len(), 1, "{user} moved between symbols: {t:?}");
        *seen.entry(t.into_keys().next().unwrap()).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "16 keys should land on both symbols: {seen:?}");
}

#[tokio::test]
async fn a_draining_instance_gets_nothing_after_its_first_signal() {
    let nacos = Rnacos::start().await;
    let leaving = provider(&nacos, "cart", "stable", "leaving", &["--drain-min", "10s"]).await;
    let _staying = provider(&nacos, "cart", "stable", "staying", &[]).await;
    let (consumer, _app) = consumer(&nacos, &["--services", "cart"]).await;
    sees(&consumer, "cart", 2).await;
    let proxy = consumer.outbound_client();
    let t = tally(&proxy, "http://cart/", &[], 40).await;
    assert!(t.contains_key("leaving") && t.contains_key("staying"), "{t:?}");

    // Nacos keeps listing the leaving instance for as long as this test needs: frozen, it can
    // neither take the deregistration nor push anything.
    nacos.pause();
    client().post(leaving.sidecar.admin_url("/drain")).send().await.unwrap();
    let mut answers = HashMap::new();
    for _ in 0..200 {
        *answers.entry(who(&proxy, "http://cart/", &[]).await).or_insert(0) += 1;
    }
    let listed = consumer.endpoints().await["services"]["cart"]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["addr"] == leaving.sidecar.inbound.to_string() && i["state"] == "draining");
    nacos.resume();
    assert!(listed, "the consumer's registry view still lists the instance, as draining");
    assert!(answers.get("leaving").copied().unwrap_or(0) <= 1, "{answers:?}");
    assert_eq!(
        answers.values().sum::<usize>(),
        answers.get("staying").copied().unwrap_or(0) + answers.get("leaving").copied().unwrap_or(0),
        "every request succeeded: {answers:?}"
    );
    let m = leaving.sidecar.metrics().await;
    let received: f64 =
        m.lines().find_map(|l| l.strip_prefix("berth_drain_requests_total ")).unwrap().parse().unwrap();
    assert!(
        received <= 1.0,
        "the draining instance received {received} requests from the consumer after its signal"
    );
    assert!(consumer.metrics().await.contains(r#"berth_outbound_readonly_signals_total{service="cart"}"#));
}

#[tokio::test]
async fn sigkill_of_one_of_three_under_load_fails_no_idempotent_request() {
    let nacos = Rnacos::start().await;
    let mut victim = provider(&nacos, "stock", "stable", "victim", &[]).await;
    let _b = provider(&nacos, "stock", "stable", "b", &[]).await;
    let _c = provider(&nacos, "stock", "stable", "c", &[]).await;
    let (consumer, _app) = consumer(&nacos, &["--services", "stock"]).await;
    sees(&consumer, "stock", 3).await;
    let proxy = consumer.outbound_client();
    let load = Load::start(&proxy, "http://stock/slow?ms=20", 6, 20_000);
    eventually(T, "the load reaches every instance", || async {
        ["victim", "b", "c"].iter().all(|n| load.by(n) >= 10)
    })
    .await;
    victim.sidecar.proc.kill();
    // Load goes on until the consumer routes no more to the dead instance — ejected after its
    // failures or dropped by the registry's push, whichever comes first — and for a while after.
    let dead = victim.sidecar.inbound.to_string();
    eventually(T, "the consumer stops routing to the dead instance", || async {
        let e = consumer.endpoints().await;
        e["services"]["stock"]["instances"].as_array().is_some_and(|a| {
            !a.iter().any(|i| {
                i["addr"] == dead.as_str()
                    && ["serving", "warming"].contains(&i["state"].as_str().unwrap_or(""))
            })
        })
    })
    .await;
    load.wait_for_more(200, "200 requests after it is out").await;
    let total = load.stop().await;
    let failed = Load::failures(&total, &["victim", "b", "c"]);
    assert_eq!(failed, 0, "failed requests: {total:?}");
    assert!(total["victim"] > 0 && total["b"] > 0, "{total:?}");
}

/// The share of each instance of `service` over `n` requests, once the consumer sees `count`.
async fn shares(consumer: &Sidecar, service: &str, count: usize, n: usize) -> HashMap<String, usize> {
    sees(consumer, service, count).await;
    tally(&consumer.outbound_client(), &format!("http://{service}/"), &[], n).await
}

#[tokio::test]
async fn a_full_restart_is_not_slowed_by_warm_up() {
    // Two instances registered first and three a few seconds later, all inside a 30 s
    // warm-up: every one of the five is warming, which is a full (re)start. Warm-up applied,
    // the first two would weigh their age over 30 s (≥ 0.1) against the others' 5% floor,
    // taking ≥ 29% each against ≤ 14%. Skipped, as it must be when most of a service is
    // warming, each gets 20%.
    let nacos = Rnacos::start().await;
    let warmup = ["--warmup", "30s"];
    let _early = [
        provider(&nacos, "search", "stable", "e1", &warmup).await,
        provider(&nacos, "search", "stable", "e2", &warmup).await,
    ];
    let (consumer, _app) = consumer(&nacos, &["--services", "search"]).await;
    sees(&consumer, "search", 2).await;
    // The early ones are old enough (≥ 3 s, factor ≥ 0.1) that warm-up would show.
    eventually(T, "the early instances are 3 s old", || async {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
        nacos.instances("search").await.iter().all(|i| {
            let started: u128 = i["metadata"]["berth.started_at"].as_str().unwrap().parse().unwrap();
            now >= started + 3_000
        })
    })
    .await;
    let mut late = Vec::new();
    for name in ["l1", "l2", "l3"] {
        late.push(provider(&nacos, "search", "stable", name, &warmup).await);
    }
    let t = shares(&consumer, "search", 5, 2_000).await;
    // Binomial, n = 2000, p = 0.2: σ = 0.89 points. ±4.5 points is 5σ; warm-up applied
    // would put the early two near 29% and the late three near 14%, over 9σ away.
    for name in ["e1", "e2", "l1", "l2", "l3"] {
        assert!((share(&t, name) - 20.0).abs() < 4.5, "{name} off an even split: {t:?}");
    }
}

#[tokio::test]
async fn a_new_instance_warms_up_next_to_warm_ones() {
    let nacos = Rnacos::start().await;
    let _a = provider(&nacos, "index", "stable", "a", &["--warmup", "1s"]).await;
    let _b = provider(&nacos, "index", "stable", "b", &["--warmup", "1s"]).await;
    let (consumer, _app) = consumer(&nacos, &["--services", "index"]).await;
    sees(&consumer, "index", 2).await;
    let all_serving = || async {
        consumer.endpoints().await["services"]["index"]["instances"]
            .as_array()
            .is_some_and(|a| a.iter().all(|i| i["state"] == "serving"))
    };
    eventually(T, "a and b warm", all_serving).await;
    // A newcomer next to two warm instances ramps up over its window: its weight starts at
    // 5% of a warm one's and grows with its age. The consumer says what weight it gives it
    // (`effective_weight`, read before and after a tally), and its share must follow: w/(w+2).
    let _new = provider(&nacos, "index", "stable", "new", &["--warmup", "24s"]).await;
    sees(&consumer, "index", 3).await;
    let weight_of_new = || async {
        let e = consumer.endpoints().await;
        let instances = e["services"]["index"]["instances"].as_array().unwrap().clone();
        let new = instances.iter().find(|i| i["addr"] == _new.sidecar.inbound.to_string()).unwrap().clone();
        new["effective_weight"].as_f64().unwrap()
    };
    let before = weight_of_new().await;
    let early = tally(&consumer.outbound_client(), "http://index/", &[], 300).await;
    let after = weight_of_new().await;
    assert!(after < 0.6, "the newcomer is not early in its window (weight {after})");
    let (low, high) = (before / (before + 2.0), after / (after + 2.0));
    // Binomial over n = 300 requests: 5σ either side of the range the weights allow.
    let sigma = (high * (1.0 - high) / 300.0).sqrt();
    let got = share(&early, "new") / 100.0;
    assert!(
        got > low - 5.0 * sigma && got < high + 5.0 * sigma,
        "share {got:.3} while its weight went {before:.2} → {after:.2} (σ {sigma:.3}): {early:?}"
    );
    let got = got * 100.0;
    eventually(Duration::from_secs(40), "the newcomer is warm", all_serving).await;
    assert_eq!(weight_of_new().await, 1.0);
    // p = 1/3, σ = 2.4 points: within 12 points (5σ) of a third, and far above its start. The
    // balancer is also load-aware (peak-EWMA): on a machine busy with every other test, an
    // instance whose app was descheduled for a moment is avoided while its estimate decays.
    // That passes, a skew in the weights does not: up to three tallies, one must be fair.
    let mut tallies = Vec::new();
    let mut last = 0.0;
    for _ in 0..3 {
        let warm = shares(&consumer, "index", 3, 400).await;
        last = share(&warm, "new");
        tallies.push(warm);
        if (last - 100.0 / 3.0).abs() < 12.0 {
            break;
        }
    }
    assert!((last - 100.0 / 3.0).abs() < 12.0, "a warm newcomer gets {last:.1}%: {tallies:?}");
    assert!(last > got + 10.0, "its share did not grow: {got:.1}% → {last:.1}%");
}

#[tokio::test]
async fn unknown_services_and_services_without_instances_fail_clearly() {
    let nacos = Rnacos::start().await;
    let (consumer, _app) = consumer(&nacos, &[]).await;
    let proxy = consumer.outbound_client();
    let resp = proxy.get("http://nowhere/").send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["x-berth-error"], "unknown-service");
    let body = resp.text().await.unwrap();
    assert!(body.contains("`nowhere`") && body.contains("namespace `public`"), "{body}");

    // A service that had instances and has none now.
    let gone =
        provider(&nacos, "gone", "stable", "gone-1", &["--drain-min", "500ms", "--drain-quiet", "100ms"])
            .await;
    assert_eq!(who(&proxy, "http://gone/", &[]).await, "gone-1");
    let mut sidecar = gone.sidecar;
    sidecar.proc.signal("TERM");
    sidecar.proc.wait_exit(T).await;
    eventually(T, "no instance is left", || async {
        let resp = proxy.get("http://gone/").send().await.unwrap();
        resp.status() == 503
    })
    .await;
    let resp = proxy.get("http://gone/").send().await.unwrap();
    let code = resp.headers()["x-berth-error"].to_str().unwrap().to_owned();
    let body = resp.text().await.unwrap();
    assert!(["no-instances", "connect-failed"].contains(&code.as_str()), "{code}: {body}");
    assert!(body.contains("`gone`"), "{body}");

    // No service named at all.
    let resp = client().get(format!("http://{}/plain", consumer.outbound)).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["x-berth-error"], "no-service");
}

#[tokio::test]
async fn weights_set_through_berth_ctl_move_a_consumers_traffic() {
    let nacos = Rnacos::start().await;
    let _stable = provider(&nacos, "billing", "stable", "stable-1", &[]).await;
    let _canary = provider(&nacos, "billing", "canary", "canary-1", &[]).await;
    let (consumer, _app) = consumer(&nacos, &["--services", "billing"]).await;
    sees(&consumer, "billing", 2).await;
    let admin = crate::support::admin::Admin::start(&nacos.url(), &[]).await;
    let proxy = consumer.outbound_client();
    assert_eq!(tally(&proxy, "http://billing/", &[], 20).await, HashMap::from([("stable-1".into(), 20)]));

    let ctl =
        admin.ctl(Some(crate::support::admin::ALICE), &["weights", "billing", "stable=0", "canary=100"]);
    assert_eq!(ctl.code, 0, "{ctl:?}");
    let set = Instant::now();
    eventually(T, "the consumer follows the new weights", || async {
        who(&proxy, "http://billing/", &[]).await == "canary-1"
    })
    .await;
    eprintln!("weights took effect after {:?}", set.elapsed());
    assert_eq!(tally(&proxy, "http://billing/", &[], 20).await, HashMap::from([("canary-1".into(), 20)]));

    let ctl =
        admin.ctl(Some(crate::support::admin::ALICE), &["weights", "billing", "stable=90", "canary=10"]);
    assert_eq!(ctl.code, 0, "{ctl:?}");
    eventually(T, "the 90/10 policy is in force", || async {
        consumer.endpoints().await["services"]["billing"]["policy"]["version"] == 2
    })
    .await;
    let t = tally(&proxy, "http://billing/", &[], 1_000).await;
    // Binomial, n = 1000, p = 0.1: σ ≈ 0.95 points; ±5 points is over 5σ.
    assert!((share(&t, "canary-1") - 10.0).abs() < 5.0, "{t:?}");
}

#[tokio::test]
async fn upgrades_go_through_the_outbound_port_to_an_http2_provider() {
    let dir = tempfile::tempdir().unwrap();
    let registry = crate::support::dir_registry(&dir);
    let app = App::start("chat-1").await;
    let provider = Sidecar::start("chat", app.addr.port(), &registry, &[]).await;
    provider.wait_ready(T).await;
    let capp = App::start("consumer").await;
    let consumer = Sidecar::start("consumer", capp.addr.port(), &registry, &["--services", "chat"]).await;
    sees(&consumer, "chat", 1).await;
    let endpoints = consumer.endpoints().await;
    assert_eq!(endpoints["services"]["chat"]["instances"][0]["protocol"], "h2c", "{endpoints}");
    let back = crate::support::upgrade_echo(consumer.outbound, "chat", "/upgrade").await;
    assert_eq!(back, "ping through the tunnel\n");
}

#[tokio::test]
async fn a_request_on_a_broken_connection_is_retried_only_when_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let registry = crate::support::dir_registry(&dir);
    let good_app = App::start("good").await;
    let good = Sidecar::start("orders", good_app.addr.port(), &registry, &[]).await;
    good.wait_ready(T).await;
    // A broken instance without a sidecar: every connection closes before any response byte.
    let broken = App::start_with("broken", 0, &["--reset"]).await;
    crate::support::register_in_dir(&dir, "orders", &broken, "canary");
    // And a broken app behind its sidecar, which answers 502 app-failed for it.
    let broken_app = App::start_with("broken-behind", 0, &["--reset"]).await;
    let behind = Sidecar::start("orders", broken_app.addr.port(), &registry, &["--symbol", "blue"]).await;
    behind.wait_ready(T).await;
    let capp = App::start("consumer").await;
    let consumer = Sidecar::start(
        "consumer",
        capp.addr.port(),
        &registry,
        &["--services", "orders", "--eject-after", "100"],
    )
    .await;
    sees(&consumer, "orders", 3).await;
    let proxy = consumer.outbound_client();

    for symbol in ["canary", "blue"] {
        // Pinned to the broken symbol, the retry falls back to the default symbol's instance.
        let get = proxy.get("http://orders/").header("x-berth-symbol", symbol).send().await.unwrap();
        assert_eq!(get.status(), 200, "{symbol}: an idempotent request is retried elsewhere");
        assert_eq!(get.headers()["x-app-name"], "good");

        let post = proxy
            .post("http://orders/echo")
            .header("x-berth-symbol", symbol)
            .body("order")
            .send()
            .await
            .unwrap();
        assert_eq!(post.status(), 502, "{symbol}: a POST is not repeated");
        let code = post.headers()["x-berth-error"].to_str().unwrap().to_owned();
        let body = post.text().await.unwrap();
        match symbol {
            "canary" => {
                assert!(code == "upstream-reset" && body.contains("not idempotent"), "{code}: {body}")
            }
            _ => assert_eq!(code, "app-failed", "{body}"),
        }

        let marked = proxy
            .post("http://orders/echo")
            .header("x-berth-symbol", symbol)
            .header("x-berth-retryable", "true")
            .body("order")
            .send()
            .await
            .unwrap();
        assert_eq!(marked.status(), 200, "{symbol}: a POST marked retryable is retried");
    }
    let m = consumer.metrics().await;
    assert!(m.contains(r#"berth_outbound_retries_total{reason="reset",service="orders"}"#), "{m}");
}
