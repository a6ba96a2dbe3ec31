//! What the integration tests share: real processes (berth, the sample app, rnacos) on
//! 127.0.0.1 with ephemeral ports, killed when the test ends, and conditions with deadlines.

pub mod admin;
pub mod load;
pub mod nacos;
pub mod netns;
pub mod process;
pub mod tools;
pub mod webhook;

use std::future::Future;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

pub use self::nacos::Rnacos;
pub use self::process::Proc;

/// The `berth` binary under test.
pub fn berth() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.env("BERTH_LOG", "info,nacos_sdk=warn");
    for (k, _) in std::env::vars() {
        if k.starts_with("BERTH_") && k != "BERTH_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.env_remove("POD_IP");
    cmd
}

/// A loopback port held without listening: connecting to it is refused, and no other socket
/// can take it while this lives (it is bound without `SO_REUSEADDR`). [`ClosedPort::listen`]
/// opens it later on the same port, with no window in which someone else could bind it.
#[derive(Debug)]
pub struct ClosedPort {
    socket: tokio::net::TcpSocket,
    pub port: u16,
}

impl Default for ClosedPort {
    fn default() -> Self {
        ClosedPort::new()
    }
}

impl ClosedPort {
    pub fn new() -> ClosedPort {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((std::net::Ipv4Addr::LOCALHOST, 0).into()).unwrap();
        let port = socket.local_addr().unwrap().port();
        ClosedPort { socket, port }
    }

    /// Starts listening on the port and accepting (each connection is dropped at once).
    pub fn listen(self) -> tokio::task::JoinHandle<()> {
        let listener = self.socket.listen(64).unwrap();
        tokio::spawn(async move { while listener.accept().await.is_ok() {} })
    }
}

/// The value of one series (`name{labels}` exactly as exposed) in Prometheus text.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Polls `cond` every 25 ms until it is true; panics with `what` after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        assert!(Instant::now() < deadline, "not within {timeout:?}: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// An HTTP client that never uses a proxy from the environment and keeps no idle connections.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The sample app on an ephemeral port (or on `port`).
#[derive(Debug)]
pub struct App {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl App {
    pub async fn start(name: &str) -> App {
        App::start_on(name, 0).await
    }

    pub async fn start_on(name: &str, port: u16) -> App {
        App::start_with(name, port, &[]).await
    }

    /// The sample app with extra arguments (`--reset`, `--symbol`…).
    pub async fn start_with(name: &str, port: u16, extra: &[&str]) -> App {
        let mut cmd = berth();
        cmd.args(["sample-app", "--name", name, "--listen", &format!("127.0.0.1:{port}")]).args(extra);
        let proc = Proc::spawn(&format!("app {name}"), cmd);
        let line = proc.wait_line("listening on ", Duration::from_secs(10)).await;
        let addr = line.rsplit(' ').next().unwrap().parse().unwrap();
        App { proc, addr }
    }
}

/// A `berth proxy` with its inbound and admin ports on 127.0.0.1.
#[derive(Debug)]
pub struct Sidecar {
    pub proc: Proc,
    pub inbound: SocketAddr,
    pub admin: SocketAddr,
    pub outbound: SocketAddr,
}

impl Sidecar {
    /// Starts `berth proxy --service SERVICE --app-port PORT --registry REGISTRY` plus `extra`.
    pub async fn start(service: &str, app_port: u16, registry: &str, extra: &[&str]) -> Sidecar {
        let mut cmd = berth();
        cmd.args(["proxy", "--service", service, "--app-port", &app_port.to_string()])
            .args(["--inbound", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--outbound", "127.0.0.1:0"])
            .args(["--registry", registry])
            .args(["--health-interval", "100ms", "--unhealthy-threshold", "2"])
            .args(extra);
        Sidecar::spawn(&format!("sidecar {service}"), cmd).await
    }

    pub async fn spawn(name: &str, cmd: Command) -> Sidecar {
        let proc = Proc::spawn(name, cmd);
        let line = proc.wait_line("berth proxy listening", Duration::from_secs(10)).await;
        let field = |key: &str| -> SocketAddr {
            let start = line.find(&format!(" {key}=")).unwrap_or_else(|| panic!("no {key} in {line}"))
                + key.len()
                + 2;
            line[start..].split(' ').next().unwrap().parse().unwrap()
        };
        Sidecar { inbound: field("inbound"), admin: field("admin"), outbound: field("outbound"), proc }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.inbound)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// The status `/ready` answers.
    pub async fn ready(&self) -> u16 {
        client().get(self.admin_url("/ready")).send().await.map_or(0, |r| r.status().as_u16())
    }

    /// `/state` as JSON.
    pub async fn state(&self) -> serde_json::Value {
        client().get(self.admin_url("/state")).send().await.unwrap().json().await.unwrap()
    }

    /// The lifecycle `/state` reports.
    pub async fn lifecycle(&self) -> String {
        self.state().await["lifecycle"].as_str().unwrap().to_owned()
    }

    pub async fn metrics(&self) -> String {
        client().get(self.admin_url("/metrics")).send().await.unwrap().text().await.unwrap()
    }

    /// An HTTP client that sends through this sidecar's outbound port as an HTTP proxy.
    pub fn outbound_client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .proxy(reqwest::Proxy::http(format!("http://{}", self.outbound)).unwrap())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
    }

    /// `/endpoints` as JSON.
    pub async fn endpoints(&self) -> serde_json::Value {
        client().get(self.admin_url("/endpoints")).send().await.unwrap().json().await.unwrap()
    }

    pub async fn wait_ready(&self, timeout: Duration) {
        eventually(timeout, &format!("{} ready", self.proc.name), || async { self.ready().await == 200 })
            .await;
    }
}

/// Asks `addr` for an upgrade to the sample app's echo protocol (`GET PATH`, `Host: HOST`),
/// checks the 101, then sends a line through the tunnel and returns what comes back.
pub async fn upgrade_echo(addr: SocketAddr, host: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    while !got.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(
            s.read(&mut b).await.unwrap(),
            1,
            "closed before the response head: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.push(b[0]);
    }
    let head = String::from_utf8_lossy(&got).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo") && head.contains("connection: upgrade"), "{head}");
    s.write_all(b"ping through the tunnel\n").await.unwrap();
    let mut back = vec![0u8; 24];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back)).await.unwrap().unwrap();
    String::from_utf8(back).unwrap()
}

/// Registers `app` itself (no sidecar) as an instance of `service` with `symbol` in the
/// directory registry at `dir`, the way `core/src/registry/dir.rs` writes instance files.
pub fn register_in_dir(dir: &tempfile::TempDir, service: &str, app: &App, symbol: &str) {
    let folder = dir.path().join("public/naming/DEFAULT_GROUP").join(service);
    std::fs::create_dir_all(&folder).unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_owned();
    let record = serde_json::json!({
        "addr": app.addr, "weight": 1.0, "healthy": true, "enabled": true,
        "metadata": {"berth.symbol": symbol}, "host": host, "pid": app.proc.pid(),
    });
    let file = folder.join(format!("{}_{}.json", app.addr.ip(), app.addr.port()));
    std::fs::write(file, record.to_string()).unwrap();
}

/// A temporary directory registry URL.
pub fn dir_registry(dir: &tempfile::TempDir) -> String {
    format!("dir://{}", dir.path().display())
}
