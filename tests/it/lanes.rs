//! Lanes through real sidecars and rnacos: services `a → b → c` (and `d`), where `a` and `b`
//! have `stable` and `feature-x` instances and `c` only `stable`; every app calls the next
//! service of the chain through its own sidecar's outbound port (`/call`), forwarding only
//! `baggage` or nothing. Requests enter through an edge sidecar, as from a stable client.

use std::time::Duration;

use crate::faults_outbound::metric;
use crate::support::{App, Rnacos, Sidecar, client};

const T: Duration = Duration::from_secs(20);

/// One instance: a sample app calling through its own sidecar.
#[derive(Debug)]
pub struct Hop {
    pub sidecar: Sidecar,
    pub app: App,
}

impl Hop {
    /// `name` of `service` with `symbol`, its sidecar started with `extra`.
    pub async fn start(registry: &str, service: &str, symbol: &str, name: &str, extra: &[&str]) -> Hop {
        let app = App::start_with(name, 0, &["--symbol", symbol]).await;
        let mut args = vec!["--symbol", symbol];
        args.extend_from_slice(extra);
        let sidecar = Sidecar::start(service, app.addr.port(), registry, &args).await;
        let url = format!("http://{}/outbound?addr={}", app.addr, sidecar.outbound);
        assert_eq!(client().post(url).send().await.unwrap().status(), 200);
        Hop { sidecar, app }
    }
}

/// Waits until `sidecar` sees `n` instances of `service`.
pub async fn sees(sidecar: &Sidecar, service: &str, n: usize) {
    crate::faults_outbound::sees(sidecar, service, n).await;
}

/// The services of the chain and an edge sidecar in front of them.
pub struct Fleet {
    pub _nacos: Rnacos,
    pub edge: Hop,
    pub hops: Vec<Hop>,
}

/// Every service follows the others, so that a lane's first request finds them all.
const FOLLOW: &str = "a,b,c,d";

impl Fleet {
    /// `a` and `b` with `stable` and `feature-x`, `c` with `stable`, `d` with `feature-x` only
    /// and `--no-own-lane`; every sidecar also takes `extra`. `policies` are published first.
    pub async fn start(extra: &[&str], policies: &[(&str, &str)]) -> Fleet {
        let nacos = Rnacos::start().await;
        for (service, doc) in policies {
            nacos.publish_config(&format!("berth.traffic.{service}"), doc).await;
        }
        let registry = nacos.url();
        let mut args = vec!["--services", FOLLOW];
        args.extend_from_slice(extra);
        let mut hops = Vec::new();
        for (service, symbol) in [("a", "stable"), ("a", "feature-x"), ("b", "stable"), ("b", "feature-x")] {
            hops.push(Hop::start(&registry, service, symbol, &format!("{service}-{symbol}"), &args).await);
        }
        hops.push(Hop::start(&registry, "c", "stable", "c-stable", &args).await);
        let mut d_args = args.clone();
        d_args.push("--no-own-lane");
        hops.push(Hop::start(&registry, "d", "feature-x", "d-feature-x", &d_args).await);
        let edge = Hop::start(&registry, "edge", "stable", "edge", &args).await;
        for hop in hops.iter().chain([&edge]) {
            hop.sidecar.wait_ready(T).await;
        }
        for hop in hops.iter().chain([&edge]) {
            for (service, n) in [("a", 2), ("b", 2), ("c", 1), ("d", 1)] {
                sees(&hop.sidecar, service, n).await;
            }
        }
        Fleet { _nacos: nacos, edge, hops }
    }

    pub fn hop(&self, name: &str) -> &Hop {
        self.hops.iter().find(|h| h.app.proc.name == format!("app {name}")).unwrap()
    }

    /// Sends `GET /call?next=…&forward=…` to the chain's first service through the edge, with
    /// `headers`; returns the status and every hop's line.
    pub async fn call(&self, chain: &str, forward: &str, headers: &[(&str, &str)]) -> (u16, Vec<String>) {
        let (first, rest) = chain.split_once(',').unwrap_or((chain, ""));
        let mut req = self
            .edge
            .sidecar
            .outbound_client()
            .get(format!("http://{first}/call?next={rest}&forward={forward}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap().lines().map(str::to_owned).collect())
    }

    /// The instance names a request went through.
    pub async fn path(&self, chain: &str, forward: &str, headers: &[(&str, &str)]) -> Vec<String> {
        names(self.call(chain, forward, headers).await)
    }

    /// The same, sent straight to instance `name`'s inbound port (a caller without a sidecar),
    /// for the rest of the chain.
    pub async fn path_from(&self, name: &str, rest: &str, headers: &[(&str, &str)]) -> Vec<String> {
        let mut req = client().get(self.hop(name).sidecar.url(&format!("/call?next={rest}&forward=baggage")));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        names((status, resp.text().await.unwrap().lines().map(str::to_owned).collect()))
    }
}

/// The first word of each line of a successful chain.
fn names((status, lines): (u16, Vec<String>)) -> Vec<String> {
    assert_eq!(status, 200, "{lines:?}");
    lines.iter().map(|l| l.split(' ').next().unwrap().to_owned()).collect()
}

const FX: &[(&str, &str)] = &[("x-berth-symbol", "feature-x")];

/// A pin, the baggage entry or an alias header at the edge keeps the request on `feature-x`
/// of every service that has it and on `stable` of the one that has not; an unpinned request
/// stays on stable; a lane that fell back still travels on; its fallback is counted.
#[tokio::test]
async fn a_lane_follows_the_request_down_the_call_chain() {
    let fleet = Fleet::start(&["--lane-headers", "x-mse-tag,dubbo-tag"], &[]).await;
    let lane = ["a-feature-x", "b-feature-x", "c-stable"];
    assert_eq!(fleet.path("a,b,c", "baggage", FX).await, lane, "pinned with x-berth-symbol");
    for _ in 0..10 {
        assert_eq!(fleet.path("a,b,c", "baggage", &[]).await, ["a-stable", "b-stable", "c-stable"]);
    }
    let baggage = [("baggage", "userId=7;ttl=1, berth.symbol=feature-x")];
    let (_, lines) = fleet.call("a,b,c", "baggage", &baggage).await;
    assert_eq!(lines.iter().map(|l| l.split(' ').next().unwrap()).collect::<Vec<_>>(), lane, "baggage");
    // The app received the lane in both forms at every hop, the baggage as the edge sent it.
    for line in &lines {
        assert!(line.contains(" symbol=feature-x "), "{line}");
        assert!(line.contains("baggage=userId=7;ttl=1, berth.symbol=feature-x"), "{line}");
    }
    assert_eq!(fleet.path("a,b,c", "baggage", &[("x-mse-tag", "feature-x")]).await, lane, "an alias");
    assert_eq!(fleet.path("a,b,c", "baggage", &[("dubbo-tag", "feature-x")]).await, lane, "an alias");
    assert_eq!(
        fleet.path("a,b,c", "baggage", &[("service-lane", "feature-x")]).await,
        ["a-stable", "b-stable", "c-stable"],
        "a header that is not configured is no lane"
    );
    // A stable service in the middle: its app forwards baggage, its sidecar keeps the lane.
    assert_eq!(fleet.path("a,c,b", "baggage", FX).await, ["a-feature-x", "c-stable", "b-feature-x"]);
    // A caller without a sidecar: the provider sidecar hands the lane to its app as baggage too.
    let through_stable = ["a-stable", "c-stable", "b-feature-x"];
    assert_eq!(fleet.path_from("a-stable", "c,b", FX).await, through_stable);
    assert_eq!(fleet.path_from("a-stable", "c,b", &[("dubbo-tag", "feature-x")]).await, through_stable);
    assert_eq!(fleet.path_from("a-stable", "c,b", &[]).await, ["a-stable", "c-stable", "b-stable"]);

    let fallbacks =
        |m: &str, service: &str| metric(m, "berth_outbound_lane_fallbacks_total", &[("service", service)]);
    let from_b = fleet.hop("b-feature-x").sidecar.metrics().await;
    assert_eq!(fallbacks(&from_b, "c"), 4.0, "b-feature-x called c on the lane 4 times:\n{from_b}");
    assert_eq!(fallbacks(&from_b, "a"), 0.0);
    let from_edge = fleet.edge.sidecar.metrics().await;
    assert_eq!(fallbacks(&from_edge, "a"), 0.0, "every lane found a-feature-x");
}

/// An app that forwards nothing: its sidecar makes its own symbol the lane of the first hop
/// out (`--no-own-lane` turns that off), and past a stable hop the lane is lost.
#[tokio::test]
async fn an_app_that_forwards_nothing_keeps_the_lane_for_its_first_hop_only() {
    let rules = r#"{"schema":1,"rules":[
      {"match":[{"header":"x-team","exact":"x"}],"symbol":"feature-x","lane":true},
      {"match":[{"header":"x-debug","present":true}],"symbol":"feature-x"}]}"#;
    let fleet = Fleet::start(&[], &[("a", rules)]).await;
    assert_eq!(fleet.path("a,b,c", "none", FX).await, ["a-feature-x", "b-feature-x", "c-stable"]);
    assert_eq!(
        fleet.path("a,c,b", "none", FX).await,
        ["a-feature-x", "c-stable", "b-stable"],
        "a stable app that forwards nothing ends the lane"
    );
    assert_eq!(fleet.path("d,b", "none", FX).await, ["d-feature-x", "b-stable"], "--no-own-lane");
    assert_eq!(fleet.path("d,b", "baggage", FX).await, ["d-feature-x", "b-feature-x"]);

    // A rule that says "lane" starts one: the app gets it and it travels past the stable `c`;
    // a rule for this hop only picks the instance and hands the app nothing.
    let team = [("x-team", "x")];
    assert_eq!(fleet.path("a,c,b", "baggage", &team).await, ["a-feature-x", "c-stable", "b-feature-x"]);
    let (_, lines) = fleet.call("a", "baggage", &team).await;
    assert_eq!(lines, ["a-feature-x symbol=feature-x baggage=berth.symbol=feature-x"]);
    let (_, lines) = fleet.call("a", "baggage", &[("x-debug", "1")]).await;
    assert_eq!(lines, ["a-feature-x symbol=- baggage=-"], "a hop-only rule is no lane");
    // The edge's lane beats the rule.
    let both = [("x-team", "x"), ("baggage", "berth.symbol=stable")];
    assert_eq!(fleet.path("a,b", "baggage", &both).await, ["a-stable", "b-stable"]);
}

/// `berth demo --lanes` shows a lane across two services, and says so only when every request
/// took the path its case wants.
#[tokio::test]
async fn the_lanes_demo_shows_a_lane_across_two_services() {
    let mut cmd = crate::support::berth();
    cmd.args(["demo", "--lanes"]);
    let mut demo = crate::support::Proc::spawn("demo --lanes", cmd);
    assert!(demo.wait_exit(Duration::from_secs(120)).await.success(), "{}", demo.output());
    let out = demo.output();
    assert_eq!(out.matches("as wanted").count(), 4, "{out}");
    assert!(out.contains("a-feature-x → b-feature-x (20)"), "{out}");
    assert!(out.contains("a-stable → b-stable (20)"), "{out}");
}
