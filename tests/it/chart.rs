//! The Helm chart in `charts/berth`: linted, rendered with default and non-default values,
//! validated against the Kubernetes schemas of the oldest supported (1.29) and newest (1.37)
//! versions, its webhook configuration pointing at what it creates — and the injector started
//! with the certificate and configuration the chart renders, called as the API server would.
//!
//! Needs helm and kubernetes-validate (`scripts/deps/` installs both and exports `BERTH_HELM`
//! and `BERTH_KUBERNETES_VALIDATE`); without them these tests fail, saying so.

use std::io::Write;
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::Value;

use crate::injector::inject;
use crate::support::tools::tool;
use crate::support::webhook::{Injector, decode_patch};

pub(crate) const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/berth");
const WORKLOADS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/injector/tests/fixtures/workloads.yaml");
const DEPLOYMENT_POD: &str = include_str!("../../injector/tests/fixtures/deployment-pod.review.json");
/// The oldest Kubernetes berth supports (native sidecars) and the newest the validator knows.
const KUBERNETES: [&str; 2] = ["1.29.0", "1.37.0"];
const NAMESPACE: &str = "berth-system";

pub(crate) fn helm() -> Command {
    Command::new(tool("BERTH_HELM", "helm/helm"))
}

fn run(mut cmd: Command, stdin: &str) -> String {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed:\n{stdout}\n{stderr}");
    stdout.into_owned()
}

/// `helm template berth charts/berth -n berth-system` with `values` files.
pub(crate) fn template(values: &[&str]) -> String {
    let mut cmd = helm();
    cmd.args(["template", "berth", CHART, "--namespace", NAMESPACE]);
    for v in values {
        cmd.args(["--values", &format!("{CHART}/{v}")]);
    }
    run(cmd, "")
}

/// Validates `yaml` against the schemas of every version in [`KUBERNETES`], strictly.
pub(crate) fn validate(yaml: &str, what: &str) {
    for version in KUBERNETES {
        let mut cmd = Command::new(tool("BERTH_KUBERNETES_VALIDATE", "python/bin/kubernetes-validate"));
        cmd.args(["--strict", "--kubernetes-version", version, "-"]);
        let out = run(cmd, yaml);
        assert!(!out.contains("ERROR"), "{what} on {version}:\n{out}");
    }
}

pub(crate) fn objects(yaml: &str) -> Vec<Value> {
    yaml.split("\n---")
        .filter_map(|doc| serde_norway::from_str::<Option<Value>>(doc).unwrap())
        .filter(|v| v.is_object())
        .collect()
}

pub(crate) fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the render"))
}

#[test]
fn chart_lints_strictly_with_every_values_file() {
    for values in [
        &[][..],
        &["ci/secret-values.yaml"],
        &["ci/cert-manager-values.yaml"],
        &["ci/registry-secret-values.yaml"],
        &["ci/gateway-values.yaml"],
        &["ci/registration-values.yaml"],
        &["ci/network-policy-values.yaml"],
    ] {
        let mut cmd = helm();
        cmd.args(["lint", "--strict", CHART]);
        for v in values {
            cmd.args(["--values", &format!("{CHART}/{v}")]);
        }
        run(cmd, "");
    }
    // The schema refuses what the injector would, before any template runs: the error is
    // helm's schema error, at the value's path.
    for (bad, at) in [
        ("webhook.failurePolicy=Maybe", "/webhook/failurePolicy"),
        ("sidecar.drainMin=soon", "/sidecar/drainMin"),
        ("tls.mode=self", "/tls/mode"),
        ("colour=red", "additional properties 'colour' not allowed"),
        ("sidecar.registry=http://nacos:8848", "/sidecar/registry"),
        ("sidecar.registrySecret.name=Nacos_Credentials", "/sidecar/registrySecret/name"),
        ("sidecar.registrySecret.key=a/b", "/sidecar/registrySecret/key"),
        ("sidecar.ports.admin=0", "/sidecar/ports/admin"),
        ("sidecar.registration.nacosWeight=random", "/sidecar/registration/nacosWeight"),
        ("sidecar.registration.nacosWeightScale=0", "/sidecar/registration/nacosWeightScale"),
        ("sidecar.registration.nacosWeightScale=20000", "/sidecar/registration/nacosWeightScale"),
        ("sidecar.registration.symbolMetadata={berth.symbol}", "/sidecar/registration/symbolMetadata/0"),
        ("sidecar.registration.cluster=zone_a", "/sidecar/registration/cluster"),
        ("networkPolicy.namespaces={Shop}", "/networkPolicy/namespaces/0"),
    ] {
        let out = helm().args(["template", "berth", CHART, "--set", bad]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad} was accepted");
        assert!(
            stderr.contains("values don't meet the specifications of the schema") && stderr.contains(at),
            "{bad}: not a schema error at {at}: {stderr}"
        );
    }
}

#[test]
fn chart_renders_valid_objects_whose_webhook_points_at_the_injector() {
    for (values, policy, replicas) in [
        (&[][..], "Ignore", 2),
        (&["ci/secret-values.yaml"][..], "Fail", 3),
        (&["ci/cert-manager-values.yaml"][..], "Ignore", 1),
        (&["ci/registry-secret-values.yaml"][..], "Ignore", 2),
    ] {
        let yaml = template(values);
        validate(&yaml, &format!("helm template with {values:?}"));
        let all = objects(&yaml);
        let config = all.iter().find(|o| o["kind"] == "MutatingWebhookConfiguration").unwrap();
        let deployment = all
            .iter()
            .find(|o| {
                o["kind"] == "Deployment" && o["metadata"]["name"].as_str().unwrap().ends_with("-injector")
            })
            .unwrap();
        assert_eq!(deployment["spec"]["replicas"], replicas, "{values:?}");
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        let args: Vec<&str> =
            container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        assert_eq!(args[0], "injector");
        let webhooks = config["webhooks"].as_array().unwrap();
        for webhook in webhooks {
            assert_eq!(webhook["sideEffects"], "None");
            assert_eq!(webhook["admissionReviewVersions"], serde_json::json!(["v1"]));
            assert_eq!(webhook["failurePolicy"], policy);
            assert!(webhook["timeoutSeconds"].as_u64().unwrap() <= 30);
            let target = &webhook["clientConfig"]["service"];
            assert_eq!(target["namespace"], NAMESPACE);
            assert!(["/mutate", "/mutate/namespace-enabled"].contains(&target["path"].as_str().unwrap()));
            // The Service the webhook names exists, selects the injector, and its port leads
            // to the container port the injector listens on.
            let service = find(&all, "Service", target["name"].as_str().unwrap());
            let port = service["spec"]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["port"] == target["port"])
                .unwrap();
            let container_port = container["ports"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == port["targetPort"])
                .unwrap();
            let listen = format!("--listen=0.0.0.0:{}", container_port["containerPort"]);
            assert!(args.contains(&listen.as_str()), "{args:?} has {listen}");
            for (k, v) in service["spec"]["selector"].as_object().unwrap() {
                assert_eq!(&deployment["spec"]["template"]["metadata"]["labels"][k], v, "selector {k}");
            }
            let excluded = &webhook["namespaceSelector"]["matchExpressions"][1];
            assert_eq!(excluded["key"], "kubernetes.io/metadata.name");
            let names: Vec<&str> =
                excluded["values"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
            assert!(names.contains(&"kube-system") && names.contains(&NAMESPACE), "{names:?}");
        }
        assert_eq!(webhooks.len(), if policy == "Fail" { 1 } else { 2 }, "podAnnotationOptIn");
        assert!(
            all.iter().all(|o| !["Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"]
                .contains(&o["kind"].as_str().unwrap())),
            "neither program calls the Kubernetes API, so the chart grants nothing"
        );
        for sa in all.iter().filter(|o| o["kind"] == "ServiceAccount") {
            assert_eq!(sa["automountServiceAccountToken"], false);
        }
    }
    let all = objects(&template(&[]));
    let pdb = all.iter().find(|o| o["kind"] == "PodDisruptionBudget").unwrap();
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    let admin = find(&all, "Deployment", "berth-admin");
    let args = admin["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(args.contains("--listen=0.0.0.0:15080") && args.contains("--token-file="), "{args}");
    let tokens = find(&all, "Secret", "berth-admin-tokens")["data"]["tokens"].as_str().unwrap();
    let tokens =
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(tokens).unwrap()).unwrap();
    let lines: Vec<Vec<&str>> =
        tokens.lines().filter(|l| !l.starts_with('#')).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        lines.iter().map(|l| (l[0], l[1])).collect::<Vec<_>>(),
        [("admin", "write"), ("viewer", "read")]
    );
    assert!(lines.iter().all(|l| l.len() == 3 && l[2].len() >= 32));
}

/// Every value path of `values.yaml`, leaves first-level deep under free-form maps.
fn value_paths(prefix: &str, value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) if !map.is_empty() && !prefix.ends_with("resources") => {
            for (k, v) in map {
                value_paths(&if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") }, v, out);
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}

#[test]
fn chart_readme_documents_every_value() {
    let values: Value =
        serde_norway::from_str(&std::fs::read_to_string(format!("{CHART}/values.yaml")).unwrap()).unwrap();
    let readme = std::fs::read_to_string(format!("{CHART}/README.md")).unwrap();
    let mut paths = Vec::new();
    value_paths("", &values, &mut paths);
    assert!(paths.len() > 40, "{paths:?}");
    for path in paths {
        assert!(readme.contains(&format!("| `{path}` |")), "charts/berth/README.md does not document {path}");
    }
}

/// Starts the injector with the certificate, key and configuration `helm template` renders with
/// `values`, calls it as the webhook configuration says, and returns the patched pod and the
/// render.
pub(crate) async fn injected_by_the_rendered_chart(values: &[&str]) -> (Value, String) {
    let yaml = template(values);
    let all = objects(&yaml);
    let webhook = &all.iter().find(|o| o["kind"] == "MutatingWebhookConfiguration").unwrap()["webhooks"][0];
    let b64 = |v: &Value| {
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap()).unwrap())
            .unwrap()
    };
    let ca = b64(&webhook["clientConfig"]["caBundle"]);
    let secret = find(&all, "Secret", "berth-injector-tls");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tls.crt"), b64(&secret["data"]["tls.crt"])).unwrap();
    std::fs::write(dir.path().join("tls.key"), b64(&secret["data"]["tls.key"])).unwrap();
    let config = find(&all, "ConfigMap", "berth-injector")["data"]["injector.yaml"].as_str().unwrap();
    let config_path = dir.path().join("injector.yaml");
    std::fs::write(&config_path, config).unwrap();
    let injector = Injector::start(dir.path(), &["--config", config_path.to_str().unwrap()]).await;

    let target = &webhook["clientConfig"]["service"];
    let host = format!("{}.{}.svc", target["name"].as_str().unwrap(), target["namespace"].as_str().unwrap());
    let review: Value = serde_json::from_str(DEPLOYMENT_POD).unwrap();
    let path = target["path"].as_str().unwrap();
    let (status, body) =
        injector.call(&ca, &host, "POST", path, review.to_string().as_bytes()).await.unwrap();
    assert_eq!(status, 200);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["response"]["uid"], review["request"]["uid"]);
    let mut pod = review["request"]["object"].clone();
    json_patch::patch(&mut pod, &decode_patch(&body["response"]["patch"])).unwrap();
    (pod, yaml)
}

#[tokio::test]
async fn chart_certificate_and_config_serve_the_webhook_it_configures() {
    let (pod, _) = injected_by_the_rendered_chart(&[]).await;
    let sidecar = &pod["spec"]["initContainers"][0];
    assert_eq!(sidecar["image"], "ghcr.io/berth-io/berth:0.1.0", "the chart's appVersion");
    let env = sidecar["env"].to_string();
    assert!(env.contains("nacos://nacos.nacos.svc:8848"), "the chart's registry: {env}");
}

#[tokio::test]
async fn chart_registry_secret_keeps_the_registry_url_out_of_every_pod_spec() {
    let (pod, yaml) = injected_by_the_rendered_chart(&["ci/registry-secret-values.yaml"]).await;
    let sidecar = &pod["spec"]["initContainers"][0];
    let registry: Vec<&Value> =
        sidecar["env"].as_array().unwrap().iter().filter(|e| e["name"] == "BERTH_REGISTRY").collect();
    assert_eq!(registry.len(), 1, "{sidecar}");
    assert_eq!(
        registry[0]["valueFrom"]["secretKeyRef"],
        serde_json::json!({"name": "nacos-credentials", "key": "url", "optional": false})
    );
    assert!(registry[0].get("value").is_none(), "{sidecar}");
    assert!(!pod.to_string().contains("nacos://"), "a registry URL in the pod: {pod}");
    // Nor in anything the chart renders: the admin API reads it from the same Secret.
    assert!(!yaml.contains("nacos://"), "a registry URL in the render:\n{yaml}");
    let all = objects(&yaml);
    let admin = &find(&all, "Deployment", "berth-admin")["spec"]["template"]["spec"]["containers"][0];
    let env = admin["env"].as_array().unwrap().iter().find(|e| e["name"] == "BERTH_REGISTRY").unwrap();
    assert_eq!(env["valueFrom"]["secretKeyRef"]["name"], "nacos-credentials");
    assert!(!admin["args"].to_string().contains("--registry"), "{admin}");
}

#[test]
fn injected_manifests_validate_against_the_kubernetes_schemas() {
    let (native, _) = inject(WORKLOADS, None, None);
    validate(&native, "berth inject (native sidecar)");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("injector.yaml");
    std::fs::write(&config, "nativeSidecar: false\ndefaults: {httpProxy: true}\n").unwrap();
    let (plain, notes) = inject(WORKLOADS, None, Some(&config));
    validate(&plain, "berth inject (sidecar as first container)");
    assert!(notes.contains("Job shop/reindex: berth: the sidecar is a plain container"), "{notes}");
}

#[test]
fn chart_values_default_to_what_the_sidecar_and_injector_default_to() {
    use berth_core::defaults;
    use berth_core::options::duration;
    let values: Value =
        serde_norway::from_str(&std::fs::read_to_string(format!("{CHART}/values.yaml")).unwrap()).unwrap();
    let sidecar = &values["sidecar"];
    let time = |key: &str| {
        let text = sidecar[key].as_str().unwrap_or_else(|| panic!("sidecar.{key} is not a duration string"));
        duration(text).unwrap_or_else(|e| panic!("sidecar.{key}: {e}"))
    };
    for (key, default) in [
        ("registerDelay", defaults::REGISTER_DELAY),
        ("warmup", defaults::WARMUP),
        ("drainMin", defaults::DRAIN_MIN),
        ("drainQuiet", defaults::DRAIN_QUIET),
        ("drainTimeout", defaults::DRAIN_TIMEOUT),
        ("gracePeriodMargin", defaults::GRACE_PERIOD_MARGIN),
    ] {
        assert_eq!(time(key), default, "sidecar.{key} in values.yaml differs from berth's default");
    }
    for (key, default) in [
        ("inbound", defaults::INBOUND_PORT),
        ("outbound", defaults::OUTBOUND_PORT),
        ("admin", defaults::ADMIN_PORT),
    ] {
        assert_eq!(
            sidecar["ports"][key],
            u64::from(default),
            "sidecar.ports.{key} differs from berth's default"
        );
    }
    // The injector's own defaults, which the chart renders into its configuration file.
    let injector = berth_injector::InjectConfig::default();
    assert_eq!(sidecar["noProxy"], injector.no_proxy.as_str());
    assert_eq!(sidecar["runAsUser"], injector.run_as_user);
    assert_eq!(sidecar["nativeSidecar"], injector.native_sidecar);
    assert_eq!(sidecar["strictGracePeriod"], injector.strict_grace_period);
    assert_eq!(sidecar["httpProxy"], injector.defaults.http_proxy);
    assert_eq!(sidecar["pullPolicy"], injector.image_pull_policy.as_str());
    let registration = &sidecar["registration"];
    assert_eq!(registration["nacosWeight"], defaults::NACOS_WEIGHT);
    assert_eq!(registration["nacosWeightScale"], defaults::NACOS_WEIGHT_SCALE);
    assert_eq!(registration["symbolMetadata"], serde_json::json!(defaults::SYMBOL_METADATA));
    assert_eq!(registration["cluster"], berth_core::instance::DEFAULT_CLUSTER);
    assert_eq!(injector.registration, berth_injector::config::Registration::default());
}
