//! gRPC through both sidecars, with a real gRPC client and server (Python's grpcio): unary and
//! streaming calls, a non-OK status and its message carried in trailers, and berth's own
//! failures answered to the gRPC client as gRPC statuses.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::faults_outbound::{metric, sees};
use crate::support::{Proc, Rnacos, Sidecar};

const T: Duration = Duration::from_secs(20);

/// The Python with grpcio: `$BERTH_GRPC_PYTHON`, else where `scripts/test.sh` installs it.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_GRPC_PYTHON") {
        return p.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"));
    let p = cache.join("berth/tools/grpcio/bin/python");
    assert!(
        p.exists(),
        "grpcio is not installed: run scripts/test.sh, which installs it (scripts/deps/40-grpcio.sh)"
    );
    p
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/grpc/echo.py")
}

/// One call through `outbound` to the service named by `authority`; its outcome as JSON.
async fn call(outbound: std::net::SocketAddr, authority: &str, case: &str) -> serde_json::Value {
    let mut cmd = Command::new(python());
    cmd.arg(script()).args(["call", &outbound.to_string(), authority, case]).env_remove("http_proxy");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "gRPC client failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test]
async fn grpc_calls_statuses_and_berths_own_failures_cross_both_sidecars() {
    let nacos = Rnacos::start().await;
    let mut cmd = Command::new(python());
    cmd.arg(script()).arg("serve");
    let server = Proc::spawn("grpc server", cmd);
    let line = server.wait_line("listening on ", T).await;
    let port: u16 = line.rsplit(':').next().unwrap().trim().parse().unwrap();
    let provider = Sidecar::start("echo", port, &nacos.url(), &["--app-protocol", "h2c", "--no-hedge"]).await;
    provider.wait_ready(T).await;
    // An instance nobody listens on, kept registered whatever happens (as a crashed one is);
    // its port stays bound, unlistened, so nothing else can answer there.
    let closed = crate::support::ClosedPort::new();
    let dead = std::net::SocketAddr::from(([127, 0, 0, 1], closed.port));
    nacos.register_persistent("ghost", dead, "stable").await;
    let consumer_app = crate::support::App::start("consumer").await;
    let consumer =
        Sidecar::start("consumer", consumer_app.addr.port(), &nacos.url(), &["--services", "echo,ghost"])
            .await;
    sees(&consumer, "echo", 1).await;
    sees(&consumer, "ghost", 1).await;
    let out = consumer.outbound;

    assert_eq!(call(out, "echo", "unary").await, serde_json::json!({"code": "OK", "value": "echo:hello"}));
    assert_eq!(
        call(out, "echo", "stream").await,
        serde_json::json!({"code": "OK", "value": ["item 0", "item 1", "item 2"]})
    );
    assert_eq!(call(out, "echo", "collect").await, serde_json::json!({"code": "OK", "value": "a,b,c"}));
    assert_eq!(
        call(out, "echo", "fail").await,
        serde_json::json!({"code": "NOT_FOUND", "details": "no such order: 7"}),
        "the app's status and message, in trailers through both sidecars"
    );

    let unknown = call(out, "nowhere", "unary").await;
    assert_eq!(unknown["code"], "UNAVAILABLE", "{unknown}");
    let details = unknown["details"].as_str().unwrap();
    assert!(details.starts_with("berth: service `nowhere` is unknown"), "{details}");
    let ghost = call(out, "ghost", "unary").await;
    assert_eq!(ghost["code"], "UNAVAILABLE", "{ghost}");
    let details = ghost["details"].as_str().unwrap();
    assert!(
        details.contains("could not reach service `ghost`") && details.contains(&dead.to_string()),
        "{details}"
    );

    let m = consumer.metrics().await;
    let grpc = |service: &str, status: &str| {
        metric(
            &m,
            "berth_outbound_grpc_responses_total",
            &[("service", service), ("symbol", "stable"), ("grpc_status", status)],
        )
    };
    assert_eq!(grpc("echo", "0"), 3.0, "{m}");
    assert_eq!(grpc("echo", "5"), 1.0, "{m}");
    assert_eq!(grpc("ghost", "14"), 1.0, "{m}");
}
