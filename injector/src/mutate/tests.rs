//! The mutation on AdmissionReview fixtures (`injector/tests/fixtures/`), through the same
//! [`review`](crate::review::review) the webhook uses: each patch is applied to the pod as sent,
//! and the result read back into a `Pod` and checked.

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};

use super::*;
use crate::review::review;

const DEPLOYMENT_POD: &str = include_str!("../../tests/fixtures/deployment-pod.review.json");
const ANNOTATED_POD: &str = include_str!("../../tests/fixtures/statefulset-pod-annotated.review.json");

fn fixture(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

/// What came back: the response, and the pod with its patch applied.
struct Reviewed {
    response: Value,
    pod: Value,
}

impl Reviewed {
    fn typed(&self) -> Pod {
        serde_json::from_value(self.pod.clone()).unwrap()
    }

    fn warnings(&self) -> String {
        self.response["warnings"].as_array().map(|w| format!("{w:?}")).unwrap_or_default()
    }

    fn unchanged(&self, original: &Value) -> bool {
        self.response["allowed"] == true && self.response.get("patch").is_none() && &self.pod == original
    }
}

fn run_with(config: &InjectConfig, own: Option<&str>, review_json: &Value, scope: Scope) -> Reviewed {
    let ctx = Context { config, own_namespace: own };
    let answer = review(ctx, review_json.to_string().as_bytes(), scope);
    let response = serde_json::to_value(&answer.review).unwrap()["response"].clone();
    assert_eq!(response["uid"], review_json["request"]["uid"], "the uid is echoed");
    let mut pod = review_json["request"]["object"].clone();
    if let Some(bytes) = response["patch"].as_array() {
        assert_eq!(response["patchType"], "JSONPatch");
        let bytes: Vec<u8> = bytes.iter().map(|b| u8::try_from(b.as_u64().unwrap()).unwrap()).collect();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        json_patch::patch(&mut pod, &patch).unwrap();
    }
    Reviewed { response, pod }
}

fn run(review_json: &Value, scope: Scope) -> Reviewed {
    run_with(&InjectConfig::default(), Some("berth-system"), review_json, scope)
}

fn sidecars(pod: &Pod) -> Vec<&Container> {
    let spec = pod.spec.as_ref().unwrap();
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .filter(|c| c.name == "berth-proxy")
        .collect()
}

fn env<'a>(c: &'a Container, name: &str) -> Option<&'a str> {
    c.env.as_ref()?.iter().find(|e| e.name == name)?.value.as_deref()
}

/// The invariants of every injected pod; returns the sidecar.
fn assert_injected(pod: &Pod, config: &InjectConfig) -> Container {
    let found = sidecars(pod);
    assert_eq!(found.len(), 1, "exactly one sidecar");
    let sidecar = found[0].clone();
    let spec = pod.spec.as_ref().unwrap();
    if config.native_sidecar {
        assert_eq!(spec.init_containers.as_ref().unwrap()[0].name, "berth-proxy", "first init container");
        assert_eq!(sidecar.restart_policy.as_deref(), Some("Always"));
    } else {
        assert_eq!(spec.containers[0].name, "berth-proxy", "first container");
        assert_eq!(sidecar.restart_policy, None);
    }
    let admin = i32::from(config.ports.admin);
    let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        let get = p.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(get.port, k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(admin));
        get.path.clone().unwrap()
    };
    assert_eq!(probe_path(&sidecar.startup_probe), "/live", "never /ready: the app starts after it passes");
    assert_eq!(probe_path(&sidecar.liveness_probe), "/live");
    assert_eq!(probe_path(&sidecar.readiness_probe), "/ready");
    for (name, path) in
        [("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace"), ("POD_IP", "status.podIP")]
    {
        let var = sidecar.env.as_ref().unwrap().iter().find(|e| e.name == name).unwrap();
        assert_eq!(var.value_from.as_ref().unwrap().field_ref.as_ref().unwrap().field_path, path);
    }
    let sc = sidecar.security_context.as_ref().unwrap();
    assert_eq!((sc.run_as_non_root, sc.read_only_root_filesystem), (Some(true), Some(true)));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.capabilities.as_ref().unwrap().drop.as_deref(), Some(&["ALL".to_owned()][..]));
    assert_eq!(sidecar.resources.as_ref(), Some(&config.resources));
    assert_eq!(sidecar.image.as_deref(), Some(config.image.as_str()));
    // A read-only root needs a writable /tmp for the Nacos client's cache.
    let mount = &sidecar.volume_mounts.as_ref().unwrap()[0];
    assert_eq!((mount.name.as_str(), mount.mount_path.as_str()), ("berth-tmp", "/tmp"));
    let volume = spec.volumes.as_ref().unwrap().iter().find(|v| v.name == "berth-tmp").unwrap();
    assert!(volume.empty_dir.is_some(), "{volume:?}");
    let token = env(&sidecar, "BERTH_DRAIN_TOKEN").unwrap();
    assert!(token.len() >= 16, "the sidecar accepts tokens of 16 characters or more");
    for c in spec.containers.iter().filter(|c| c.name != "berth-proxy") {
        let hook = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()).unwrap();
        if let Some(get) = hook.http_get.as_ref() {
            assert_eq!(get.path.as_deref(), Some("/drain?wait=true"));
            assert_eq!(get.port, k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(admin));
            let header = &get.http_headers.as_ref().unwrap()[0];
            assert_eq!((header.name.as_str(), header.value.as_str()), ("x-berth-drain-token", token));
        }
    }
    let settings = crate::annotations::PodSettings::read(pod, config).unwrap();
    let grace = spec.termination_grace_period_seconds.unwrap();
    assert!(grace >= settings.grace_period_seconds(config), "grace {grace} covers the drain");
    let annotations = pod.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations["berth.io/injected"], berth_core::VERSION);
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    sidecar
}

#[test]
fn a_deployment_pod_in_an_opted_in_namespace_is_injected() {
    let review_json = fixture(DEPLOYMENT_POD);
    let out = run(&review_json, Scope::Namespace);
    assert_eq!(out.response["allowed"], true);
    let pod = out.typed();
    let sidecar = assert_injected(&pod, &InjectConfig::default());
    assert_eq!(env(&sidecar, "BERTH_SERVICE"), Some("orders"), "from app.kubernetes.io/name");
    assert_eq!(env(&sidecar, "BERTH_APP_PORT"), Some("8080"), "the first container port");
    assert_eq!(env(&sidecar, "BERTH_APP_VERSION"), Some("2.4.1"));
    assert_eq!(pod.spec.as_ref().unwrap().termination_grace_period_seconds, Some(40));
    assert_eq!(pod.metadata.annotations.as_ref().unwrap()["prometheus.io/port"], "15020");
    assert_eq!(out.pod["spec"]["containers"][0]["fieldFromANewerKubernetes"], json!({ "kept": true }));
    assert_eq!(out.pod["metadata"]["generateName"], "orders-7c9f8d6b54-");
    assert_eq!(out.warnings(), "", "a defaulted 30s grace period is raised silently");
}

#[test]
fn a_pod_elsewhere_is_injected_only_when_annotated() {
    let mut review_json = fixture(DEPLOYMENT_POD);
    let original = review_json["request"]["object"].clone();
    assert!(run(&review_json, Scope::Pod).unchanged(&original), "not opted in");
    review_json["request"]["object"]["metadata"]["annotations"] = json!({ "berth.io/inject": "enabled" });
    assert_injected(&run(&review_json, Scope::Pod).typed(), &InjectConfig::default());
}

#[test]
fn opted_out_excluded_and_host_network_pods_are_left_alone() {
    let base = fixture(DEPLOYMENT_POD);
    let mut opted_out = base.clone();
    opted_out["request"]["object"]["metadata"]["annotations"] = json!({ "berth.io/inject": "disabled" });
    let mut kube_system = base.clone();
    kube_system["request"]["namespace"] = json!("kube-system");
    let mut own = base.clone();
    own["request"]["namespace"] = json!("berth-system");
    let mut excluded = base.clone();
    excluded["request"]["namespace"] = json!("infra");
    let mut host = base.clone();
    host["request"]["object"]["spec"]["hostNetwork"] = json!(true);
    let config = InjectConfig { exclude_namespaces: vec!["infra".into()], ..Default::default() };
    for (name, review_json) in [
        ("opted out", &opted_out),
        ("kube-system", &kube_system),
        ("own namespace", &own),
        ("excluded", &excluded),
    ] {
        let out = run_with(&config, Some("berth-system"), review_json, Scope::Namespace);
        assert!(out.unchanged(&review_json["request"]["object"]), "{name}: {}", out.response);
        assert_eq!(out.warnings(), "", "{name}");
    }
    let out = run(&host, Scope::Namespace);
    assert!(out.unchanged(&host["request"]["object"]));
    assert!(out.warnings().contains("hostNetwork"), "{}", out.warnings());
}

#[test]
fn an_injected_pod_is_returned_unchanged() {
    let first = run(&fixture(DEPLOYMENT_POD), Scope::Namespace);
    let mut again = fixture(DEPLOYMENT_POD);
    again["request"]["object"] = first.pod.clone();
    let second = run(&again, Scope::Namespace);
    assert!(second.unchanged(&first.pod), "reinvocation adds nothing");
    assert_eq!(sidecars(&second.typed()).len(), 1);
    // Even with the annotation gone, the sidecar container marks the pod as injected.
    again["request"]["object"]["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("berth.io/injected");
    assert!(run(&again, Scope::Namespace).unchanged(&again["request"]["object"]));
}

#[test]
fn every_annotation_reaches_the_sidecar_and_the_app() {
    let review_json = fixture(ANNOTATED_POD);
    let out = run(&review_json, Scope::Pod);
    assert_eq!(out.response["allowed"], true, "{}", out.response);
    let pod = out.typed();
    let sidecar = assert_injected(&pod, &InjectConfig::default());
    for (name, value) in [
        ("BERTH_SERVICE", "ledger-service"),
        ("BERTH_SYMBOL", "canary"),
        ("BERTH_APP_PORT", "8443"),
        ("BERTH_APP_HEALTH", "http:/health/ready"),
        ("BERTH_DEPENDENCY", "tcp://postgres.db:5432,http://vault.infra:8200/v1/sys/health"),
        ("BERTH_REGISTER_DELAY", "2s"),
        ("BERTH_WARMUP", "1m"),
        ("BERTH_DRAIN_MIN", "10s"),
        ("BERTH_DRAIN_QUIET", "2s"),
        ("BERTH_DRAIN_TIMEOUT", "45s"),
        ("BERTH_CLUSTER", "zone-a"),
    ] {
        assert_eq!(env(&sidecar, name), Some(value), "{name}");
    }
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(
        spec.init_containers.as_ref().unwrap()[1].name,
        "migrate",
        "the sidecar goes before init containers"
    );
    let ledger = spec.containers.iter().find(|c| c.name == "ledger").unwrap();
    assert_eq!(env(ledger, "HTTP_PROXY"), Some("http://127.0.0.1:15001"));
    assert_eq!(env(ledger, "NO_PROXY"), Some("internal.example.com"), "the app's own NO_PROXY is kept");
    assert_eq!(env(ledger, "no_proxy"), Some("localhost,127.0.0.1,::1,.svc,.cluster.local"));
    let shipper = spec.containers.iter().find(|c| c.name == "log-shipper").unwrap();
    assert!(env(shipper, "HTTP_PROXY").is_some(), "every app container");
    assert_eq!(spec.termination_grace_period_seconds, Some(10 + 45 + 5));
    let annotations = pod.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations["prometheus.io/port"], "9090", "the app's own scrape annotations are kept");
    let warnings = out.warnings();
    assert!(warnings.contains("log-shipper has its own preStop hook"), "{warnings}");
    assert!(warnings.contains("terminationGracePeriodSeconds 10 is shorter"), "{warnings}");
    assert!(warnings.contains("prometheus.io/scrape"), "{warnings}");
    let hook = shipper.lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap();
    assert!(hook.exec.is_some() && hook.http_get.is_none(), "its own preStop is left as it was");
}

#[test]
fn a_pinned_short_grace_period_is_refused_when_strict() {
    let config = InjectConfig { strict_grace_period: true, ..Default::default() };
    let out = run_with(&config, None, &fixture(ANNOTATED_POD), Scope::Pod);
    assert_eq!(out.response["allowed"], false);
    assert_eq!(out.response["status"]["code"], 403);
    let message = out.response["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("terminationGracePeriodSeconds 10") && message.contains("berth.io/drain-timeout"),
        "{message}"
    );
    // A longer grace period is kept as it is.
    let mut long = fixture(DEPLOYMENT_POD);
    long["request"]["object"]["spec"]["terminationGracePeriodSeconds"] = json!(120);
    let pod = run_with(&config, None, &long, Scope::Namespace).typed();
    assert_eq!(pod.spec.unwrap().termination_grace_period_seconds, Some(120));
}

#[test]
fn a_bad_annotation_is_refused_naming_it() {
    let mut review_json = fixture(ANNOTATED_POD);
    review_json["request"]["object"]["metadata"]["annotations"]["berth.io/drain-min"] = json!("soon");
    let out = run(&review_json, Scope::Pod);
    assert_eq!(out.response["allowed"], false);
    let message = out.response["status"]["message"].as_str().unwrap();
    assert!(message.contains("berth.io/drain-min") && message.contains("soon"), "{message}");
}

#[test]
fn without_native_sidecars_the_sidecar_is_the_first_container() {
    let config = InjectConfig { native_sidecar: false, ..Default::default() };
    let out = run_with(&config, None, &fixture(ANNOTATED_POD), Scope::Pod);
    let pod = out.typed();
    assert_injected(&pod, &config);
    let spec = pod.spec.as_ref().unwrap();
    let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["berth-proxy", "ledger", "log-shipper"]);
    assert!(spec.containers[1].lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap().http_get.is_some());
    assert_eq!(spec.init_containers.as_ref().unwrap().len(), 1, "only the app's own init container");
}

#[test]
fn an_unreadable_review_is_an_error_response_and_an_internal_error_admits_or_denies() {
    let config = InjectConfig::default();
    let ctx = Context { config: &config, own_namespace: None };
    let answer = review(ctx, b"{not json", Scope::Pod);
    assert_eq!(answer.status, http::StatusCode::BAD_REQUEST);
    let body = serde_json::to_value(&answer.review).unwrap();
    assert_eq!(body["response"]["allowed"], false);
    assert!(
        body["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("not an admission.k8s.io/v1 AdmissionReview")
    );
    // A review whose pod cannot be read: admitted unchanged with a warning, or denied if fail-closed.
    let mut broken = fixture(DEPLOYMENT_POD);
    broken["request"]["object"]["spec"]["containers"] = json!("not a list");
    let out = run(&broken, Scope::Namespace);
    assert!(out.unchanged(&broken["request"]["object"]));
    assert!(out.warnings().contains("admitted without the sidecar"), "{}", out.warnings());
    let closed = InjectConfig { fail_closed: true, ..Default::default() };
    let out = run_with(&closed, None, &broken, Scope::Namespace);
    assert_eq!(out.response["allowed"], false);
    assert!(out.response["status"]["message"].as_str().unwrap().contains("fail-closed"));
    // The uid is echoed even when only the pod is wrong.
    assert_eq!(out.response["uid"], broken["request"]["uid"]);
}

#[test]
fn other_operations_and_kinds_pass_untouched() {
    let mut update = fixture(DEPLOYMENT_POD);
    update["request"]["operation"] = json!("UPDATE");
    assert!(run(&update, Scope::Namespace).unchanged(&update["request"]["object"]));
}

#[test]
fn a_registry_secret_is_read_from_the_pods_namespace_and_never_written_in_the_spec() {
    let literal = InjectConfig { registry: Some("nacos://nacos:8848".into()), ..InjectConfig::default() };
    let reviewed = run_with(&literal, Some("berth-system"), &fixture(DEPLOYMENT_POD), Scope::Namespace);
    let sidecar = assert_injected(&reviewed.typed(), &literal);
    assert_eq!(env(&sidecar, "BERTH_REGISTRY"), Some("nacos://nacos:8848"));

    let secret = crate::config::SecretKey { name: "nacos-credentials".into(), key: "registry".into() };
    let config = InjectConfig { registry_secret: Some(secret), ..InjectConfig::default() };
    let reviewed = run_with(&config, Some("berth-system"), &fixture(DEPLOYMENT_POD), Scope::Namespace);
    let sidecar = assert_injected(&reviewed.typed(), &config);
    let vars: Vec<_> = sidecar.env.iter().flatten().filter(|e| e.name == "BERTH_REGISTRY").collect();
    assert_eq!(vars.len(), 1, "{vars:?}");
    assert_eq!(vars[0].value, None, "no literal registry in the pod spec");
    let from = vars[0].value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
    assert_eq!(
        (from.name.as_str(), from.key.as_str(), from.optional),
        ("nacos-credentials", "registry", Some(false))
    );
    // The patch as sent, not just the typed pod: the Secret's reference, nothing else of it.
    let patch = reviewed.response["patch"].to_string();
    assert!(!patch.is_empty() && reviewed.pod.to_string().contains("secretKeyRef"));
}

#[test]
fn the_sidecar_listens_for_outbound_where_the_apps_proxy_points() {
    let config = InjectConfig {
        ports: crate::config::Ports { inbound: 16006, outbound: 16001, admin: 16020 },
        defaults: crate::config::Defaults { http_proxy: true, ..Default::default() },
        ..InjectConfig::default()
    };
    let reviewed = run_with(&config, Some("berth-system"), &fixture(DEPLOYMENT_POD), Scope::Namespace);
    let pod = reviewed.typed();
    let sidecar = assert_injected(&pod, &config);
    assert_eq!(env(&sidecar, "BERTH_OUTBOUND"), Some("127.0.0.1:16001"));
    let app = pod.spec.as_ref().unwrap().containers.iter().find(|c| c.name != "berth-proxy").unwrap();
    assert_eq!(env(app, "HTTP_PROXY"), Some("http://127.0.0.1:16001"));
}
