//! `berth admin`: tokens, configuration, the OpenAPI document, metrics and TLS. Policies are in
//! `policy`, services and zombies in `services`.

mod events;
mod policy;
mod prometheus;
mod propagation;
mod retire;
mod services;

use reqwest::Method;
use serde_json::json;

use crate::support::admin::{ALICE, Admin, BOB, TOKEN_FILE, VIEWER, ctl_at};
use crate::support::{Rnacos, berth};

/// Every route that changes something, with a body it accepts.
fn changes() -> Vec<(Method, &'static str, serde_json::Value)> {
    vec![
        (Method::PUT, "/api/v1/services/users/policy", json!({"schema": 1})),
        (Method::PUT, "/api/v1/services/users/weights", json!({"stable": 100})),
        (Method::PUT, "/api/v1/services/users/rules", json!([])),
        (Method::PUT, "/api/v1/services/users/symbols/10.0.0.1:80", json!({"symbol": "canary"})),
        (Method::POST, "/api/v1/services/users/promote", json!({"symbol": "stable"})),
        (Method::POST, "/api/v1/services/users/rollback", json!({})),
    ]
}

#[tokio::test]
async fn tokens_guard_reads_and_changes() {
    let nacos = Rnacos::start().await;
    let admin = Admin::start(&nacos.url(), &[]).await;
    let reads = ["/api/v1/services", "/api/v1/services/users/policy", "/api/v1/services/users/history"];
    for path in reads {
        let none = admin.call(Method::GET, path, None, None, None).await;
        assert_eq!(none.status, 401, "{path}: {none:?}");
        assert!(none.body["error"].is_string() && none.body["detail"].is_string(), "{none:?}");
        assert!(none.headers["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
        let wrong = admin.call(Method::GET, path, Some("not-a-token-0123456789"), None, None).await;
        assert_eq!((wrong.status, wrong.body["detail"].as_str()), (401, Some("unknown token")), "{path}");
        assert_eq!(admin.get(path, VIEWER).await.status, 200, "a read token may read {path}");
    }
    for (method, path, body) in changes() {
        let none = admin.call(method.clone(), path, None, Some(body.clone()), None).await;
        assert_eq!(none.status, 401, "{method} {path}");
        let wrong = admin.call(method.clone(), path, Some(&ALICE[1..]), Some(body.clone()), None).await;
        assert_eq!(wrong.status, 401, "{method} {path}: a token's suffix is not the token");
        let read = admin.call(method.clone(), path, Some(VIEWER), Some(body.clone()), None).await;
        assert_eq!(read.status, 403, "{method} {path}: {read:?}");
        assert!(read.body["detail"].as_str().unwrap().contains("`viewer` is read-only"), "{read:?}");
    }
    assert_eq!(nacos.config("berth.traffic.users").await, None, "refused changes wrote nothing");
    let ok = admin.put("/api/v1/services/users/weights", BOB, json!({"stable": 100})).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    for open in ["/healthz", "/metrics", "/api/v1/openapi.json"] {
        assert_eq!(
            admin.call(Method::GET, open, None, None, None).await.status,
            200,
            "{open} needs no token"
        );
    }
    let out = admin.proc.output();
    for t in [ALICE, BOB, VIEWER] {
        assert!(!out.contains(t), "admin logged a token:\n{out}");
    }
    assert!(out.contains("alice") && out.contains("viewer"), "the log names the callers: {out}");
}

fn admin_fails(args: &[&str]) -> String {
    let out = berth().arg("admin").args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
    stderr
}

#[test]
fn bad_configuration_exits_64_naming_the_option_or_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("tokens");
    std::fs::write(&good, TOKEN_FILE).unwrap();
    let bad = dir.path().join("bad-tokens");
    std::fs::write(&bad, "ci write 0123456789abcdef0123\nops admin fedcba9876543210fedc\n").unwrap();
    let (good, bad) = (good.to_str().unwrap(), bad.to_str().unwrap());
    let listen = ["--listen", "127.0.0.1:0"];
    let err = admin_fails(&[&listen[..], &["--token-file", bad]].concat());
    assert!(err.contains(bad) && err.contains("line 2") && err.contains("`admin`"), "{err}");
    assert!(!err.contains("fedcba9876543210fedc"), "the message shows the token: {err}");
    let err = admin_fails(&listen);
    assert!(err.contains("--token-file"), "{err}");
    let err = admin_fails(&["--token-file", "/nonexistent/tokens"]);
    assert!(err.contains("/nonexistent/tokens") && err.contains("cannot read"), "{err}");
    let err = admin_fails(&["--token-file", good, "--tls-cert", "/nonexistent/cert.pem"]);
    assert!(err.contains("--tls-key"), "a certificate needs its key: {err}");
    let err = admin_fails(&[
        "--token-file",
        good,
        "--tls-cert",
        "/nonexistent/c.pem",
        "--tls-key",
        "/nonexistent/k.pem",
    ]);
    assert!(err.contains("--tls-cert /nonexistent/c.pem"), "{err}");
    let err = admin_fails(&["--token-file", good, "--registry", "http://nacos:8848"]);
    assert!(err.contains("--registry") && err.contains("nacos://"), "{err}");
    let err = admin_fails(&["--token-file", good, "--listen", "localhost"]);
    assert!(err.contains("--listen") && err.contains("localhost"), "{err}");
    let err = admin_fails(&["--token-file", good, "--warmup", "soon"]);
    assert!(err.contains("--warmup") && err.contains("duration"), "{err}");

    // A port in use is not bad configuration: exit 1, naming the address.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = berth().args(["admin", "--token-file", good, "--listen", &addr]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&addr));
}

#[tokio::test]
async fn the_openapi_document_validates_and_matches_the_served_routes() {
    let dir = tempfile::tempdir().unwrap();
    let admin = Admin::start(&crate::support::dir_registry(&dir), &[]).await;
    let served = admin.call(Method::GET, "/api/v1/openapi.json", None, None, None).await;
    assert_eq!(served.status, 200);
    assert_eq!(
        served.body,
        serde_json::from_str::<serde_json::Value>(berth_admin::openapi::DOCUMENT).unwrap()
    );
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec(&served.body).unwrap()).unwrap();
    let validator = openapi_validator();
    let out = std::process::Command::new(&validator).arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "{validator} rejects the document:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Each documented operation is a route of the running server: never "no route" or 405.
    let ops = berth_admin::openapi::operations().unwrap();
    assert_eq!(ops.len(), berth_admin::api::route_table().len());
    for (method, path) in ops {
        let concrete = path.replace("{service}", "users").replace("{address}", "10.0.0.1:80");
        let method: Method = method.parse().unwrap();
        let a = admin.call(method.clone(), &concrete, None, Some(json!({})), None).await;
        assert!(a.status != 405 && !a.body.to_string().contains("no route"), "{method} {concrete}: {a:?}");
    }
    let missing = admin.get("/api/v1/nothing", VIEWER).await;
    assert_eq!(missing.status, 404);
    assert!(missing.body["detail"].as_str().unwrap().contains("openapi.json"));
    let wrong_method =
        admin.call(Method::DELETE, "/api/v1/services/users/policy", Some(ALICE), None, None).await;
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.body["error"], "method not allowed");
}

/// `openapi-spec-validator`: `$BERTH_OPENAPI_VALIDATOR`, else where scripts/deps installs it.
fn openapi_validator() -> String {
    crate::support::tools::tool("BERTH_OPENAPI_VALIDATOR", "python/bin/openapi-spec-validator")
        .display()
        .to_string()
}

#[tokio::test]
async fn healthz_and_metrics_by_route_template() {
    let dir = tempfile::tempdir().unwrap();
    let admin = Admin::start(&crate::support::dir_registry(&dir), &[]).await;
    let health = admin.call(Method::GET, "/healthz", None, None, None).await;
    assert_eq!((health.status, health.body["status"].as_str()), (200, Some("ok")));
    admin.put("/api/v1/services/users/weights", ALICE, json!({"stable": 100})).await;
    admin.put("/api/v1/services/users/weights", ALICE, json!({"stable": 10})).await;
    admin.call(Method::PUT, "/api/v1/services/users/weights", Some(VIEWER), Some(json!({})), None).await;
    admin.call(Method::GET, "/api/v1/services", None, None, None).await;
    let text = admin.call(Method::GET, "/metrics", None, None, None).await.body;
    let text = text.as_str().unwrap();
    crate::support::tools::assert_valid_metrics(text, "berth admin /metrics");
    // Labels are printed sorted by name; route templates hold braces, so look for whole lines.
    for line in [
        r#"berth_admin_requests_total{method="PUT",route="/api/v1/services/{service}/weights",status_class="2xx"} 1"#,
        r#"berth_admin_requests_total{method="PUT",route="/api/v1/services/{service}/weights",status_class="4xx"} 2"#,
        r#"berth_admin_requests_total{method="GET",route="/api/v1/services",status_class="4xx"} 1"#,
        r#"berth_admin_policy_writes_total{outcome="written"} 1"#,
        r#"berth_admin_policy_writes_total{outcome="invalid"} 1"#,
        r#"berth_admin_auth_failures_total{reason="read_only"} 1"#,
        r#"berth_admin_auth_failures_total{reason="unauthenticated"} 1"#,
        r#"berth_admin_request_duration_seconds_count{route="/api/v1/services/{service}/weights"} 3"#,
        "berth_admin_history_write_failures_total 0",
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
    }
    assert!(!text.contains("services/users"), "raw paths in labels:\n{text}");
}

#[tokio::test]
async fn tls_with_a_generated_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let path = |name: &str, pem: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, pem).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let (ca_pem, cert_pem, key_pem) =
        (path("ca.pem", ca.pem()), path("cert.pem", cert.pem()), path("key.pem", key.serialize_pem()));
    let registry = crate::support::dir_registry(&dir);
    let admin = Admin::start(&registry, &["--tls-cert", &cert_pem, "--tls-key", &key_pem]).await;
    assert_eq!(admin.scheme, "https");
    let server = admin.url("");

    let ok = ctl_at(&server, Some(ALICE), &["--ca-cert", &ca_pem, "weights", "users", "stable=100"]);
    assert_eq!(ok.code, 0, "{ok:?}");
    assert!(ok.stdout.contains("users is at version 1"), "{ok:?}");
    let untrusted = ctl_at(&server, Some(ALICE), &["services"]);
    assert_eq!(untrusted.code, 1, "{untrusted:?}");
    assert!(untrusted.stderr.contains(&server) && untrusted.stderr.contains("certificate"), "{untrusted:?}");
    let plain = ctl_at(&format!("http://{}", admin.addr), Some(ALICE), &["services"]);
    assert_eq!(plain.code, 1, "plain HTTP to the TLS port: {plain:?}");
}
