//! The chart's values for the sidecars themselves: how they register for Nacos clients without a
//! sidecar (`sidecar.registration.*`), carried by the injector's configuration into each
//! sidecar's environment and from there into rnacos; and the optional NetworkPolicy that keeps
//! the sidecars' admin port for the admin API.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::chart::{CHART, find, helm, injected_by_the_rendered_chart, objects, template, validate};
use crate::support::{App, Rnacos, Sidecar, berth, eventually};

const T: std::time::Duration = std::time::Duration::from_secs(20);
/// What the registration values set, by the sidecar's environment variable.
const REGISTRATION_ENV: [&str; 4] =
    ["BERTH_NACOS_WEIGHT", "BERTH_NACOS_WEIGHT_SCALE", "BERTH_SYMBOL_METADATA", "BERTH_CLUSTER"];

/// The literal `BERTH_*` variables of an injected sidecar container.
fn berth_env(sidecar: &Value) -> BTreeMap<String, String> {
    sidecar["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"].as_str().unwrap().starts_with("BERTH_"))
        .filter_map(|e| Some((e["name"].as_str()?.to_owned(), e["value"].as_str()?.to_owned())))
        .collect()
}

/// Non-default registration values reach every injected sidecar as the options they name (the
/// names `berth proxy` reads), and a sidecar started with that environment registers in rnacos
/// accordingly: weight fixed at 1, no symbol metadata, in cluster zone-a. With the defaults,
/// the pod spec carries none of them.
#[tokio::test]
async fn chart_registration_values_reach_the_sidecars_and_their_registration() {
    let (pod, yaml) = injected_by_the_rendered_chart(&["ci/registration-values.yaml"]).await;
    validate(&yaml, "the registration values");
    let env = berth_env(&pod["spec"]["initContainers"][0]);
    let set: Vec<(&str, &str)> =
        REGISTRATION_ENV.iter().filter_map(|k| Some((*k, env.get(*k)?.as_str()))).collect();
    assert_eq!(
        set,
        [
            ("BERTH_NACOS_WEIGHT", "fixed"),
            ("BERTH_NACOS_WEIGHT_SCALE", "100"),
            ("BERTH_SYMBOL_METADATA", ""),
            ("BERTH_CLUSTER", "zone-a")
        ]
    );
    let help = berth().args(["proxy", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for name in REGISTRATION_ENV {
        assert!(help.contains(&format!("[env: {name}=")), "berth proxy reads no {name}");
    }
    let (default_pod, _) = injected_by_the_rendered_chart(&[]).await;
    let default_env = berth_env(&default_pod["spec"]["initContainers"][0]);
    assert!(REGISTRATION_ENV.iter().all(|k| !default_env.contains_key(*k)), "{default_env:?}");

    // The sidecar, given that environment, registers accordingly.
    let nacos = Rnacos::start().await;
    let app = App::start("shop").await;
    let mut cmd = berth();
    cmd.args(["proxy", "--service", "shop", "--app-port", &app.addr.port().to_string()])
        .args(["--inbound", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--outbound", "127.0.0.1:0"])
        .args(["--registry", &nacos.url(), "--warmup", "0s"]);
    for name in REGISTRATION_ENV {
        cmd.env(name, &env[name]);
    }
    let sidecar = Sidecar::spawn("sidecar shop (chart's registration)", cmd).await;
    sidecar.wait_ready(T).await;
    eventually(T, "registered", || async { nacos.lists("shop", sidecar.inbound).await }).await;
    let host = nacos.instances("shop").await.into_iter().next().unwrap();
    assert_eq!(
        (host["clusterName"].as_str(), host["weight"].as_f64()),
        (Some("zone-a"), Some(1.0)),
        "{host}"
    );
    let meta = &host["metadata"];
    assert!(meta.get("version").is_none() && meta.get("hint").is_none(), "no symbol metadata: {meta}");
    assert!(meta.get("berth.weight").is_none(), "a fixed weight: {meta}");
    assert_eq!(meta["berth.symbol"], "stable", "{meta}");
}

/// The ports a NetworkPolicy's `ports` list opens, for one protocol: `(from, to)` ranges.
fn ranges(ports: &Value, protocol: &str) -> Vec<(u64, u64)> {
    ports
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["protocol"] == protocol)
        .map(|p| match p["port"].as_u64() {
            Some(from) => (from, p["endPort"].as_u64().unwrap_or(from)),
            None => (1, 65535),
        })
        .collect()
}

/// Off by default. On: one NetworkPolicy per namespace named, valid on 1.29 and 1.37, whose
/// admin-port rule admits exactly the admin API's pods (the Deployment's own labels, in the
/// release's namespace) and the configured peers, and whose other rule opens every other port
/// to anyone — so the pods it selects lose nothing else. Without namespaces, a clear failure;
/// without the admin API and peers, no rule opens the admin port at all.
#[test]
fn chart_network_policy_keeps_the_sidecars_admin_port_for_the_admin_api() {
    let default = objects(&template(&[]));
    assert!(default.iter().all(|o| o["kind"] != "NetworkPolicy"), "no NetworkPolicy by default");
    let yaml = template(&["ci/network-policy-values.yaml"]);
    validate(&yaml, "the NetworkPolicy values");
    let all = objects(&yaml);
    let policies: Vec<&Value> = all.iter().filter(|o| o["kind"] == "NetworkPolicy").collect();
    let namespaces: Vec<&str> =
        policies.iter().map(|p| p["metadata"]["namespace"].as_str().unwrap()).collect();
    assert_eq!(namespaces, ["shop", "pay"]);
    let admin_pod = &find(&all, "Deployment", "berth-admin")["spec"]["template"];
    for policy in policies {
        let spec = &policy["spec"];
        assert_eq!(spec["policyTypes"], serde_json::json!(["Ingress"]), "egress untouched");
        assert_eq!(spec["podSelector"]["matchExpressions"][0]["key"], "app.kubernetes.io/name");
        let rules = spec["ingress"].as_array().unwrap();
        assert_eq!(rules.len(), 2, "{spec}");
        let (admin_rule, rest) = (&rules[0], &rules[1]);
        assert_eq!(ranges(&admin_rule["ports"], "TCP"), [(15020, 15020)], "the sidecar's admin port");
        let from = admin_rule["from"].as_array().unwrap();
        assert_eq!(from.len(), 2, "{from:?}");
        assert_eq!(
            from[0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            "berth-system"
        );
        let selector = from[0]["podSelector"]["matchLabels"].as_object().unwrap();
        for (k, v) in selector {
            assert_eq!(&admin_pod["metadata"]["labels"][k], v, "the admin pods carry {k}");
        }
        assert_eq!(selector["app.kubernetes.io/component"], "admin");
        assert_eq!(from[1]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"], "monitoring");
        // Every other port, from anywhere (no `from`): all of TCP but 15020, all of UDP and SCTP.
        assert!(rest.get("from").is_none(), "{rest}");
        assert_eq!(ranges(&rest["ports"], "TCP"), [(1, 15019), (15021, 65535)]);
        assert_eq!(
            (ranges(&rest["ports"], "UDP"), ranges(&rest["ports"], "SCTP")),
            (vec![(1, 65535)], vec![(1, 65535)])
        );
    }

    let render = |set: &str| helm().args(["template", "berth", CHART, "--set", set]).output().unwrap();
    let out = render("networkPolicy.enabled=true");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("networkPolicy.namespaces: name the namespaces"),
        "{stderr}"
    );
    let out = render("networkPolicy.enabled=true,networkPolicy.namespaces={shop},admin.enabled=false");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let all = objects(&String::from_utf8_lossy(&out.stdout));
    let policy = all.iter().find(|o| o["kind"] == "NetworkPolicy").unwrap();
    let rules = policy["spec"]["ingress"].as_array().unwrap();
    assert_eq!(rules.len(), 1, "an empty `from` would admit everyone: {rules:?}");
    assert!(!ranges(&rules[0]["ports"], "TCP").iter().any(|(a, b)| (*a..=*b).contains(&15020)), "{rules:?}");
}
