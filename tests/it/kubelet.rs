//! The injector and the sidecar agreeing: the pod `berth inject` writes, run as the kubelet
//! would run it — the sidecar a real process with exactly the arguments and environment of its
//! container, in a network namespace of its own (the pod), probed and stopped from outside it.

use std::time::Duration;

use serde_json::Value;

use crate::injector::{inject, parse};
use crate::support::netns::Netns;
use crate::support::{Proc, Sidecar, berth, client, eventually};

/// A pod template's container named `name` (in `containers` or `initContainers`).
fn container<'a>(spec: &'a Value, name: &str) -> &'a Value {
    ["initContainers", "containers"]
        .iter()
        .filter_map(|k| spec[k].as_array())
        .flatten()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {spec}"))
}

/// A container's environment as the kubelet gives it: literal values, the downward API's
/// fields of this pod, and keys of the Secrets in `secrets`; anything else fails the test.
fn kubelet_env(
    c: &Value,
    pod: &crate::support::netns::Netns,
    secrets: &[(&str, &str, &str)],
) -> Vec<(String, String)> {
    let fields = [
        ("metadata.name", "orders-7d9f8-x2x9q".to_owned()),
        ("metadata.namespace", "shop".to_owned()),
        ("status.podIP", pod.ns_ip.to_string()),
    ];
    c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let name = e["name"].as_str().unwrap().to_owned();
            let from = &e["valueFrom"];
            let value = if let Some(v) = e["value"].as_str() {
                v.to_owned()
            } else if let Some(path) = from["fieldRef"]["fieldPath"].as_str() {
                fields.iter().find(|(f, _)| *f == path).unwrap_or_else(|| panic!("field {path}")).1.clone()
            } else if from["secretKeyRef"].is_object() {
                let (s, k) = (&from["secretKeyRef"]["name"], &from["secretKeyRef"]["key"]);
                let found = secrets.iter().find(|(n, key, _)| s == n && k == key);
                found.unwrap_or_else(|| panic!("no Secret {s} with key {k}")).2.to_owned()
            } else {
                panic!("an environment variable the test cannot fill: {e}")
            };
            (name, value)
        })
        .collect()
}

/// A GET of an `httpGet` action (probe or hook) of the pod, as the kubelet sends it: to the
/// pod's IP, from the node (here the host, a non-loopback address to the pod).
async fn kubelet_get(pod: &Netns, action: &Value) -> reqwest::Response {
    let port = u16::try_from(action["port"].as_u64().unwrap()).unwrap();
    let url = format!("http://{}{}", pod.addr(port), action["path"].as_str().unwrap());
    let mut req = client().get(url);
    for h in action["httpHeaders"].as_array().into_iter().flatten() {
        req = req.header(h["name"].as_str().unwrap(), h["value"].as_str().unwrap());
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn the_sidecar_berth_inject_writes_becomes_ready_and_its_prestop_hook_drains_it() {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("registry");
    std::fs::write(
        dir.path().join("injector.yaml"),
        "registrySecret: {name: nacos-credentials, key: url}\nports: {inbound: 16006, outbound: 16001, admin: 16020}\ndefaults: {httpProxy: true}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("orders.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: orders, namespace: shop}\nspec:\n  selector: {matchLabels: {app: orders}}\n  template:\n    metadata:\n      labels: {app: orders}\n      annotations: {berth.io/app-health: 'http:/healthz', berth.io/drain-min: 1s, berth.io/drain-quiet: 300ms}\n    spec:\n      containers:\n        - {name: orders, image: shop/orders:1, ports: [{containerPort: 8080}]}\n",
    )
    .unwrap();
    let (out, _) = inject(
        dir.path().join("orders.yaml").to_str().unwrap(),
        None,
        Some(&dir.path().join("injector.yaml")),
    );
    let spec = parse(&out)["spec"]["template"]["spec"].clone();
    let (sidecar, app) = (container(&spec, "berth-proxy"), container(&spec, "orders"));

    // The image runs berth (its ENTRYPOINT) with the container's args.
    let dockerfile = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    assert!(dockerfile.contains(r#"ENTRYPOINT ["/usr/local/bin/berth"]"#), "{dockerfile}");
    let args: Vec<String> =
        sidecar["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect();
    let url = format!("dir://{}", registry.display());
    let pod = Netns::create();
    let env = kubelet_env(sidecar, &pod, &[("nacos-credentials", "url", &url)]);
    let app_port = app["ports"][0]["containerPort"].as_u64().unwrap();
    let mut app_cmd = berth();
    app_cmd.args(["sample-app", "--name", "orders", "--listen", &format!("127.0.0.1:{app_port}")]);
    let _app = Proc::spawn("app orders", pod.wrap(&app_cmd));
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_berth"));
    let mut proxy = Sidecar::spawn("berth-proxy", pod.command_with_only(bin, &args, &env)).await;

    // The app's HTTP_PROXY is where the sidecar listens for outbound calls.
    let app_env = kubelet_env(app, &pod, &[]);
    let http_proxy = &app_env.iter().find(|(k, _)| k == "HTTP_PROXY").unwrap().1;
    assert_eq!(http_proxy, &format!("http://{}", proxy.outbound), "{app_env:?}");

    // The kubelet's probes, as written: started, then ready once registered.
    for probe in ["startupProbe", "livenessProbe"] {
        eventually(Duration::from_secs(15), probe, || async {
            kubelet_get(&pod, &sidecar[probe]["httpGet"]).await.status() == 200
        })
        .await;
    }
    eventually(Duration::from_secs(15), "readinessProbe", || async {
        kubelet_get(&pod, &sidecar["readinessProbe"]["httpGet"]).await.status() == 200
    })
    .await;
    // Registered at the pod's IP and the inbound port the spec declares.
    let inbound = container_port(sidecar, "berth-inbound");
    let file = registry.join(format!("public/naming/DEFAULT_GROUP/orders/{}_{inbound}.json", pod.ns_ip));
    assert!(file.is_file(), "not registered as {}:{inbound}", pod.ns_ip);

    // The app's preStop hook, exactly as written (path, port, token header), drains it and
    // answers once the drain is over; without its header the same call is refused.
    let hook = &app["lifecycle"]["preStop"]["httpGet"];
    let mut bare = hook.clone();
    bare.as_object_mut().unwrap().remove("httpHeaders");
    assert_eq!(kubelet_get(&pod, &bare).await.status(), 403, "a drain without the pod's token");
    let resp = kubelet_get(&pod, hook).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["lifecycle"], "stopped");
    assert_eq!(
        proxy.proc.wait_exit(Duration::from_secs(15)).await.code(),
        Some(0),
        "{}",
        proxy.proc.output()
    );
    assert!(!file.exists(), "still registered after the drain");
}

fn container_port(c: &Value, name: &str) -> u64 {
    let ports = c["ports"].as_array().unwrap();
    ports.iter().find(|p| p["name"] == name).unwrap()["containerPort"].as_u64().unwrap()
}
