//! The registry failing under a running service: a three-node rnacos cluster (raft) behind
//! providers and a consumer under steady load. One node is killed — the one the consumer's
//! registry connection is on — and a provider is replaced while it is down; then the rest of
//! the registry goes away too (frozen), a drain starts meanwhile, and the registry comes back.
//! No request may fail, and the registry and the consumer must end up with what is really
//! running.

use std::time::Duration;

use crate::support::load::Load;
use crate::support::process::connected_ports;
use crate::support::{App, Rnacos, Sidecar, eventually};

const T: Duration = Duration::from_secs(30);
const SERVICE: &str = "ledger";

/// Three rnacos nodes in one raft cluster, each with its gRPC port at http + 1000 (what Nacos
/// clients derive when the URL names none).
struct Cluster {
    nodes: Vec<Rnacos>,
}

impl Cluster {
    async fn start() -> Cluster {
        let first = Rnacos::start_node(1, None).await;
        let join = Some(first.grpc);
        let mut cluster = Cluster { nodes: vec![first] };
        // A node asks to join once, at its start: the cluster must be ready to take it.
        for id in 2..=3 {
            cluster.formed(cluster.nodes.len()).await;
            cluster.nodes.push(Rnacos::start_node(id, join).await);
        }
        cluster.formed(3).await;
        cluster
    }

    /// Waits until every running node counts `n` members and knows a leader.
    async fn formed(&self, n: usize) {
        let deadline = std::time::Instant::now() + T;
        loop {
            let mut views = Vec::new();
            for node in self.nodes.iter().filter(|n| n.pid().is_some()) {
                views.push(node.raft_metrics().await.unwrap_or_default());
            }
            let agreed = views.iter().all(|m| {
                m["membership_config"]["members"].as_array().is_some_and(|a| a.len() == n)
                    && m["current_leader"].is_u64()
            });
            if agreed {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no raft cluster of {n} with a leader within {T:?}: {views:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The registry URL naming every node.
    fn url(&self) -> String {
        let hosts: Vec<String> = self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.http)).collect();
        format!("nacos://{}", hosts.join(","))
    }

    /// Whether every running node lists exactly the instances at `addrs`.
    async fn all_list_exactly(&self, addrs: Vec<std::net::SocketAddr>) -> bool {
        for node in self.nodes.iter().filter(|n| n.pid().is_some()) {
            let Ok(hosts) = node.try_instances(SERVICE).await else { return false };
            let mut listed: Vec<String> =
                hosts.iter().map(|h| format!("{}:{}", h["ip"].as_str().unwrap_or(""), h["port"])).collect();
            let mut want: Vec<String> = addrs.iter().map(ToString::to_string).collect();
            listed.sort();
            want.sort();
            if listed != want {
                return false;
            }
        }
        true
    }
}

/// A provider: the sample app named `name` behind its sidecar, registered in `registry`.
async fn provider(registry: &str, name: &str) -> (App, Sidecar) {
    let app = App::start(name).await;
    let sidecar = Sidecar::start(
        SERVICE,
        app.addr.port(),
        registry,
        &["--drain-min", "2s", "--drain-quiet", "300ms", "--warmup", "0s"],
    )
    .await;
    sidecar.wait_ready(T).await;
    (app, sidecar)
}

/// The addresses of `SERVICE`'s instances the consumer routes to (not draining, not ejected).
async fn routed(consumer: &Sidecar) -> Vec<String> {
    let e = consumer.endpoints().await;
    let instances = e["services"][SERVICE]["instances"].as_array().cloned().unwrap_or_default();
    let mut addrs: Vec<String> = instances
        .iter()
        .filter(|i| ["serving", "warming"].contains(&i["state"].as_str().unwrap_or("")))
        .map(|i| i["addr"].as_str().unwrap().to_owned())
        .collect();
    addrs.sort();
    addrs
}

async fn routes_to(consumer: &Sidecar, sidecars: &[&Sidecar]) -> bool {
    let mut want: Vec<String> = sidecars.iter().map(|s| s.inbound.to_string()).collect();
    want.sort();
    routed(consumer).await == want
}

#[tokio::test]
async fn a_node_lost_and_then_the_whole_registry_lose_no_request() {
    let mut cluster = Cluster::start().await;
    let registry = cluster.url();
    let (_a_app, mut a) = provider(&registry, "a").await;
    let (_b_app, mut b) = provider(&registry, "b").await;
    let capp = App::start("consumer").await;
    let consumer = Sidecar::start("consumer", capp.addr.port(), &registry, &["--services", SERVICE]).await;
    eventually(T, "the consumer routes to a and b", || async { routes_to(&consumer, &[&a, &b]).await }).await;
    // About 200 requests a second (each takes 20 ms, four at a time), at most 60,000.
    let load = Load::start(&consumer.outbound_client(), &format!("http://{SERVICE}/slow?ms=20"), 4, 60_000);
    eventually(T, "the load reaches a and b", || async { load.by("a") >= 20 && load.by("b") >= 20 }).await;

    // 1. The node the consumer's registry connection is on dies.
    let ports = connected_ports(consumer.proc.pid());
    let victim = cluster
        .nodes
        .iter()
        .position(|n| ports.contains(&n.grpc))
        .unwrap_or_else(|| panic!("the consumer holds no connection to any node's gRPC port: {ports:?}"));
    cluster.nodes[victim].stop();
    load.wait_for_more(200, "requests after the node died").await;
    // While it is down, a replaces itself with c: c registers, a drains and leaves.
    let (_c_app, c) = provider(&registry, "c").await;
    eventually(T, "the consumer routes to c too", || async { routes_to(&consumer, &[&a, &b, &c]).await })
        .await;
    a.proc.signal("TERM");
    assert_eq!(a.proc.wait_exit(T).await.code(), Some(0), "a drained cleanly");
    eventually(T, "the surviving nodes list b and c only", || {
        cluster.all_list_exactly(vec![b.inbound, c.inbound])
    })
    .await;
    eventually(T, "the consumer routes to b and c only", || async { routes_to(&consumer, &[&b, &c]).await })
        .await;
    load.wait_for_more(200, "requests after a left").await;
    // The dead node stays down. (rnacos 0.8.8 restarts a SIGKILLed node with the raft
    // membership it last wrote, now and then an old one that leaves it a non-voter: a fact of
    // rnacos, not of berth.)

    // 2. The whole registry goes away — every node frozen (SIGSTOP): connections to it hang,
    // nothing answers. (Killing all three is no test of berth: rnacos 0.8.8 restarted after
    // a SIGKILL of every node comes back with node 1 alone in its raft membership.) The
    // consumer keeps routing on what it knew, and b drains meanwhile: the consumer stops
    // sending to it on its read-only signal, and b's deregistration cannot reach anyone.
    for node in &cluster.nodes {
        node.pause();
    }
    load.wait_for_more(200, "requests with the registry away").await;
    b.proc.signal("TERM");
    assert_eq!(b.proc.wait_exit(T).await.code(), Some(0), "b drained cleanly with the registry away");
    load.wait_for_more(200, "requests after b drained, the registry still away").await;
    let served_by_b = load.by("b");
    load.wait_for_more(100, "more requests").await;
    assert_eq!(load.by("b"), served_by_b, "requests still went to b after it drained");

    // 3. The registry is back (the two live nodes): b, whose connection closed while it was away, is gone from it
    // and from the consumer; c is still registered; requests still flow.
    for node in &cluster.nodes {
        node.resume();
    }
    cluster.formed(3).await;
    eventually(T, "the registry lists c only", || cluster.all_list_exactly(vec![c.inbound])).await;
    eventually(T, "the consumer routes to c only", || async { routes_to(&consumer, &[&c]).await }).await;
    load.wait_for_more(200, "requests after the registry came back").await;

    let tally = load.stop().await;
    assert_eq!(Load::failures(&tally, &["a", "b", "c"]), 0, "failed requests: {tally:?}");
    assert!(["a", "b", "c"].iter().all(|n| tally.get(*n).copied().unwrap_or(0) > 0), "{tally:?}");
}
