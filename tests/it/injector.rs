//! `berth injector`, the real TLS server on 127.0.0.1, called as the API server calls it, and
//! `berth inject`, which must give the same pods offline.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use crate::support::berth;
use crate::support::webhook::{Injector, Pki, SERVICE_HOST, call, decode_patch, review_of};

const DEPLOYMENT_POD: &str = include_str!("../../injector/tests/fixtures/deployment-pod.review.json");
const WORKLOADS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/injector/tests/fixtures/workloads.yaml");

fn sidecars(pod: &Pod) -> usize {
    let spec = pod.spec.as_ref().unwrap();
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .filter(|c| c.name == "berth-proxy")
        .count()
}

fn metric(text: &str, line_start: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(line_start)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn injector_serves_admission_reviews_over_tls_as_the_api_server_calls_it() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(SERVICE_HOST);
    pki.write(dir.path());
    let injector = Injector::start(dir.path(), &[]).await;

    let review: Value = serde_json::from_str(DEPLOYMENT_POD).unwrap();
    let (status, body) = injector.review(&pki.ca, "/mutate/namespace-enabled", &review).await;
    assert_eq!(status, 200);
    assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(body["kind"], "AdmissionReview");
    let response = &body["response"];
    assert_eq!(response["uid"], review["request"]["uid"], "the uid is echoed");
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    // The patch as the server sent it, decoded the way the API server's Go decoder reads a
    // []byte: base64 text, or an array of numbers 0–255 (what kube's types write).
    let patch = decode_patch(&response["patch"]);
    // Over HTTP/1.1, the server's other protocol, the same bytes (the uid is fresh per call).
    let raw = review.to_string();
    let (status, h1) = call(
        injector.addr,
        &pki.ca,
        SERVICE_HOST,
        "POST",
        "/mutate/namespace-enabled",
        raw.as_bytes(),
        &[b"http/1.1"],
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let h1: Value = serde_json::from_slice(&h1).unwrap();
    assert_eq!(
        without_tokens(&decode_patch(&h1["response"]["patch"]).to_string()),
        without_tokens(&patch.to_string())
    );
    let mut pod = review["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch).unwrap();
    let pod: Pod = serde_json::from_value(pod).unwrap();
    assert_eq!(sidecars(&pod), 1);
    assert!(pod.spec.unwrap().termination_grace_period_seconds.unwrap() >= 40);

    // Not annotated, outside an opted-in namespace: allowed, no patch, uid echoed.
    let (status, body) = injector.review(&pki.ca, "/mutate", &review).await;
    assert_eq!(
        (status, &body["response"]["uid"], &body["response"]["allowed"]),
        (200, &review["request"]["uid"], &json!(true))
    );
    assert!(body["response"].get("patch").is_none());

    // Garbage: a clear error response, and the server stays up.
    let (status, raw) =
        injector.call(&pki.ca, SERVICE_HOST, "POST", "/mutate", b"\x00garbage{").await.unwrap();
    assert_eq!(status, 400);
    let body: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(body["response"]["allowed"], false);
    let message = body["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains("not an admission.k8s.io/v1 AdmissionReview"), "{message}");
    let mut no_pod = review.clone();
    no_pod["request"]["object"] = json!("not a pod");
    let (status, body) = injector.review(&pki.ca, "/mutate", &no_pod).await;
    assert_eq!((status, &body["response"]["uid"]), (400, &review["request"]["uid"]), "uid echoed: {body}");
    let (status, _) = injector.call(&pki.ca, SERVICE_HOST, "GET", "/healthz", b"").await.unwrap();
    assert_eq!(status, 200, "alive after garbage");

    // HTTP/1.1 works too; the metrics count reviews by result.
    let (status, text) =
        call(injector.addr, &pki.ca, SERVICE_HOST, "GET", "/metrics", b"", &[b"http/1.1"]).await.unwrap();
    assert_eq!(status, 200);
    let text = String::from_utf8(text).unwrap();
    crate::support::tools::assert_valid_metrics(&text, "berth injector /metrics");
    // Two injections: over HTTP/2, then HTTP/1.1.
    assert_eq!(metric(&text, "berth_injector_injections_total{result=\"injected\"}"), Some(2.0), "{text}");
    assert_eq!(metric(&text, "berth_injector_injections_total{result=\"not_opted_in\"}"), Some(1.0));
    assert_eq!(metric(&text, "berth_injector_injections_total{result=\"invalid\"}"), Some(2.0));
    assert!(text.contains("berth_injector_review_duration_seconds_count"), "{text}");
}

#[tokio::test]
async fn injector_is_trusted_only_through_its_ca_and_name() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(SERVICE_HOST);
    pki.write(dir.path());
    let injector = Injector::start(dir.path(), &[]).await;
    let other = Pki::new(SERVICE_HOST);
    let err = injector.call(&other.ca, SERVICE_HOST, "GET", "/healthz", b"").await.unwrap_err();
    assert!(err.contains("certificate"), "another CA is refused: {err}");
    let err =
        injector.call(&pki.ca, "berth-injector.elsewhere.svc", "GET", "/healthz", b"").await.unwrap_err();
    assert!(err.contains("certificate"), "another name is refused: {err}");
}

#[tokio::test]
async fn injector_reloads_its_certificate_when_the_files_change() {
    let dir = tempfile::tempdir().unwrap();
    let first = Pki::new(SERVICE_HOST);
    first.write(dir.path());
    let injector = Injector::start(dir.path(), &["--tls-reload-interval", "100ms"]).await;
    assert!(injector.call(&first.ca, SERVICE_HOST, "GET", "/healthz", b"").await.is_ok());

    // A broken pair (the key of another certificate) is refused; the old one keeps serving.
    let second = Pki::new(SERVICE_HOST);
    std::fs::write(dir.path().join("tls.crt"), &second.cert).unwrap();
    injector.proc.wait_line("kept the previous TLS certificate", Duration::from_secs(10)).await;
    assert!(injector.call(&first.ca, SERVICE_HOST, "GET", "/healthz", b"").await.is_ok());

    second.write(dir.path());
    crate::support::eventually(Duration::from_secs(10), "the new certificate is served", || async {
        injector.call(&second.ca, SERVICE_HOST, "GET", "/healthz", b"").await.is_ok()
    })
    .await;
    assert!(injector.call(&first.ca, SERVICE_HOST, "GET", "/healthz", b"").await.is_err());
}

#[test]
fn injector_bad_configuration_exits_64_naming_the_option() {
    let dir = tempfile::tempdir().unwrap();
    Pki::new(SERVICE_HOST).write(dir.path());
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let config = dir.path().join("injector.yaml");
    std::fs::write(&config, "nativeSidecar: maybe\n").unwrap();
    let (cert, key, config) = (cert.to_str().unwrap(), key.to_str().unwrap(), config.to_str().unwrap());
    let ok = ["--listen", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--tls-cert", cert, "--tls-key", key, "--listen", "nowhere"], "--listen"),
        (vec!["--listen", "127.0.0.1:0", "--tls-key", key], "--tls-cert"),
        (
            vec!["--listen", "127.0.0.1:0", "--tls-cert", "/nonexistent.crt", "--tls-key", key],
            "/nonexistent.crt",
        ),
        (vec!["--listen", "127.0.0.1:0", "--tls-cert", key, "--tls-key", key], "no CERTIFICATE"),
        (vec!["--listen", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", cert], "private key"),
        ([&ok[..], &["--config", config]].concat(), "nativeSidecar"),
        ([&ok[..], &["--tls-reload-interval", "often"]].concat(), "--tls-reload-interval"),
    ];
    for (args, expect) in cases {
        let out = berth().arg("injector").args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains(expect), "{args:?}: expected {expect:?} in {stderr}");
    }
}

/// Splits YAML on its `---` lines (what `berth inject` keeps).
fn documents(yaml: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in yaml.split_inclusive('\n') {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else {
            docs.last_mut().unwrap().push_str(line);
        }
    }
    docs
}

pub fn parse(doc: &str) -> Value {
    serde_norway::from_str::<Option<Value>>(doc).unwrap().unwrap_or(Value::Null)
}

/// `berth inject -f FILE` (or `-` with `stdin`): stdout, and stderr.
pub fn inject(file: &str, stdin: Option<&str>, config: Option<&std::path::Path>) -> (String, String) {
    let mut cmd = berth();
    cmd.args(["inject", "-f", file]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "berth inject -f {file}: {stderr}");
    (String::from_utf8(out.stdout).unwrap(), stderr)
}

/// The pod template of a workload document, as a pod.
fn template(doc: &Value) -> Option<Value> {
    let path = match doc["kind"].as_str()? {
        "Pod" => "",
        "CronJob" => "/spec/jobTemplate/spec/template",
        _ => "/spec/template",
    };
    let t = doc.pointer(path)?;
    Some(json!({ "apiVersion": "v1", "kind": "Pod", "metadata": t["metadata"], "spec": t["spec"] }))
}

/// Replaces every drain token (32 hex characters, random per pod) with one placeholder.
fn without_tokens(text: &str) -> String {
    let (mut out, mut run) = (String::new(), String::new());
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_hexdigit() && !c.is_ascii_uppercase() {
            run.push(c);
            continue;
        }
        out.push_str(if run.len() == 32 { "TOKEN" } else { &run });
        run.clear();
        out.push(c);
    }
    out.pop();
    out
}

#[tokio::test]
async fn inject_gives_the_pods_the_webhook_gives_and_passes_the_rest_through() {
    let input = std::fs::read_to_string(WORKLOADS).unwrap();
    let (output, notes) = inject(WORKLOADS, None, None);
    let (ins, outs) = (documents(&input), documents(&output));
    assert_eq!(ins.len(), outs.len(), "{output}");

    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(SERVICE_HOST);
    pki.write(dir.path());
    let injector = Injector::start(dir.path(), &[]).await;
    let mut injected = 0;
    for (i, (before, after)) in ins.iter().zip(&outs).enumerate() {
        let doc = parse(before);
        let kind = doc["kind"].as_str().unwrap_or("").to_owned();
        let Some(pod) = template(&doc) else {
            assert_eq!(before, after, "document {i} ({kind}) passes through byte for byte");
            continue;
        };
        let namespace = doc["metadata"]["namespace"].as_str().unwrap();
        let (_, body) =
            injector.review(&pki.ca, "/mutate/namespace-enabled", &review_of("u", namespace, &pod)).await;
        let mut from_webhook = pod.clone();
        if let Some(patch) = body["response"].get("patch") {
            json_patch::patch(&mut from_webhook, &decode_patch(patch)).unwrap();
        } else {
            assert_eq!(before, after, "document {i} ({kind}): left alone by both");
            continue;
        }
        injected += 1;
        let mut offline = template(&parse(after)).unwrap();
        for pod in [&mut from_webhook, &mut offline] {
            pod["metadata"].as_object_mut().unwrap().remove("namespace");
        }
        for part in ["spec", "metadata"] {
            assert_eq!(
                without_tokens(&from_webhook[part].to_string()),
                without_tokens(&offline[part].to_string()),
                "document {i} ({kind}): {part} differs between the webhook and berth inject"
            );
        }
        let pod: Pod = serde_json::from_value(offline).unwrap();
        assert_eq!(sidecars(&pod), 1, "document {i}");
    }
    assert_eq!(injected, 7, "Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob and Pod: {notes}");
    assert!(
        notes.contains("Deployment shop/legacy: left as is (annotated berth.io/inject: disabled)"),
        "{notes}"
    );
    assert!(notes.contains("kube-system/coredns-helper: left as is"), "{notes}");
    assert!(notes.contains("container debug has its own preStop hook"), "{notes}");

    // From standard input, the same; run again on its own output, nothing changes.
    let (from_stdin, _) = inject("-", Some(&input), None);
    assert!(without_tokens(&from_stdin) == without_tokens(&output), "-f - gives what -f FILE gives");
    let (again, notes) = inject("-", Some(&output), None);
    assert!(again == output, "injecting twice changes nothing");
    assert!(notes.contains("Deployment shop/orders: left as is (already injected)"), "{notes}");
}

#[test]
fn inject_refuses_bad_input_naming_the_document() {
    let mut cmd = berth();
    let out = cmd.args(["inject", "-f", "/nonexistent.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.yaml"));
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "kind: ConfigMap\n---\nkind: Pod\nmetadata: {name: p, labels: {app: p}, annotations: {berth.io/symbol: Canary}}\n",
    )
    .unwrap();
    let out = berth().arg("inject").arg("-f").arg(&bad).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("document 2 (Pod p)") && stderr.contains("berth.io/symbol"), "{stderr}");
    let config = dir.path().join("c.yaml");
    std::fs::write(&config, "ports: {admin: 0}\n").unwrap();
    let out = berth().arg("inject").arg("-f").arg(&bad).arg("--config").arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ports"));
}
