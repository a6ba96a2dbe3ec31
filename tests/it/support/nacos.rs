//! A real rnacos server per test, on free loopback ports, with its data in a temp directory.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::{Proc, client, eventually, free_port};

/// Where the rnacos binary is: `$BERTH_RNACOS`, then `$CARGO_HOME/bin`, then `~/.cargo/bin`,
/// then `PATH`.
fn rnacos_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_RNACOS") {
        return p.into();
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    let cargo_home = std::env::var_os("CARGO_HOME").map_or_else(|| home.join(".cargo"), PathBuf::from);
    let candidate = cargo_home.join("bin").join("rnacos");
    if candidate.exists() {
        return candidate;
    }
    let on_path = Command::new("sh").args(["-c", "command -v rnacos"]).output().ok();
    match on_path.filter(|o| o.status.success()) {
        Some(o) => String::from_utf8_lossy(&o.stdout).trim().into(),
        None => panic!("rnacos is not installed: run scripts/test.sh, which installs it (see README)"),
    }
}

/// A running rnacos.
#[derive(Debug)]
pub struct Rnacos {
    proc: Option<Proc>,
    pub http: u16,
    pub grpc: u16,
    console: u16,
    data: tempfile::TempDir,
    /// `user:password` when the server requires a login.
    auth: Option<(String, String)>,
}

impl Rnacos {
    /// Starts rnacos and waits until its HTTP API answers.
    pub async fn start() -> Rnacos {
        let mut r = Rnacos::reserve();
        r.restart().await;
        r
    }

    /// Picks ports and a data directory without starting the server.
    pub fn reserve() -> Rnacos {
        Rnacos {
            proc: None,
            http: free_port(),
            grpc: free_port(),
            console: free_port(),
            data: tempfile::tempdir().unwrap(),
            auth: None,
        }
    }

    /// Starts rnacos with its open API behind a login as `user` / `password`.
    pub async fn start_with_auth(user: &str, password: &str) -> Rnacos {
        let mut r = Rnacos::reserve();
        r.auth = Some((user.to_owned(), password.to_owned()));
        r.restart().await;
        r
    }

    /// Starts (again) on the same ports and data directory.
    pub async fn restart(&mut self) {
        self.stop();
        let mut cmd = Command::new(rnacos_binary());
        cmd.current_dir(self.data.path())
            .env("RNACOS_SDK_HOST", "127.0.0.1")
            .env("RNACOS_HTTP_PORT", self.http.to_string())
            .env("RNACOS_GRPC_PORT", self.grpc.to_string())
            .env("RNACOS_HTTP_CONSOLE_PORT", self.console.to_string())
            .env("RNACOS_DATA_DIR", self.data.path().join("data"))
            .env("RNACOS_HTTP_WORKERS", "2")
            .env("RNACOS_NAMING_INSTANCE_METADATA_PERSISTENCE_ENABLE", "false");
        if let Some((user, password)) = &self.auth {
            cmd.env("RNACOS_ENABLE_OPEN_API_AUTH", "true")
                .env("RNACOS_INIT_ADMIN_USERNAME", user)
                .env("RNACOS_INIT_ADMIN_PASSWORD", password);
        }
        self.proc = Some(Proc::spawn("rnacos", cmd));
        let url = format!("http://127.0.0.1:{}/nacos/v1/ns/instance/list?serviceName=probe", self.http);
        // With a login required the API answers 403 to us: answering at all is enough.
        eventually(Duration::from_secs(20), "rnacos answers", || async {
            client().get(&url).send().await.is_ok_and(|r| r.status().is_success() || r.status() == 403)
        })
        .await;
        // rnacos creates its initial user a moment after it starts answering; nacos-sdk's
        // client logs in once at start and then only every 30 s.
        if self.auth.is_some() {
            eventually(Duration::from_secs(20), "rnacos accepts the login", || async {
                self.login().await.is_some()
            })
            .await;
        }
    }

    /// An access token from Nacos's login API, when the server requires a login.
    async fn login(&self) -> Option<String> {
        let (user, password) = self.auth.as_ref()?;
        let url = format!("http://127.0.0.1:{}/nacos/v1/auth/login", self.http);
        let resp =
            client().post(&url).form(&[("username", user), ("password", password)]).send().await.ok()?;
        let doc: serde_json::Value = resp.json().await.ok()?;
        doc["accessToken"].as_str().map(str::to_owned)
    }

    /// Freezes the server (SIGSTOP): it answers and pushes nothing until [`Rnacos::resume`].
    pub fn pause(&self) {
        if let Some(p) = &self.proc {
            p.signal("STOP");
        }
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn resume(&self) {
        if let Some(p) = &self.proc {
            p.signal("CONT");
        }
    }

    /// Kills the server (its data directory stays).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// The registry URL berth takes.
    pub fn url(&self) -> String {
        format!("nacos://127.0.0.1:{}?grpc_port={}", self.http, self.grpc)
    }

    /// The instances of `service` as Nacos's own HTTP API lists them.
    pub async fn instances(&self, service: &str) -> Vec<serde_json::Value> {
        let mut url =
            format!("http://127.0.0.1:{}/nacos/v1/ns/instance/list?serviceName={service}", self.http);
        if let Some(token) = self.login().await {
            url.push_str(&format!("&accessToken={token}"));
        }
        let Ok(resp) = client().get(&url).send().await else { return Vec::new() };
        let doc: serde_json::Value = resp.json().await.unwrap_or_default();
        doc["hosts"].as_array().cloned().unwrap_or_default()
    }

    /// Publishes a config document in group BERTH through Nacos's HTTP API (as an operator's
    /// tool would, not through berth).
    pub async fn publish_config(&self, data_id: &str, content: &str) {
        let url = format!("http://127.0.0.1:{}/nacos/v1/cs/configs", self.http);
        let resp = client()
            .post(&url)
            .form(&[("dataId", data_id), ("group", "BERTH"), ("content", content), ("type", "json")])
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "publishing {data_id}: {}", resp.status());
    }

    /// Whether Nacos lists `ip:port` for `service`.
    pub async fn lists(&self, service: &str, addr: std::net::SocketAddr) -> bool {
        self.instances(service).await.iter().any(|h| {
            h["ip"].as_str() == Some(&addr.ip().to_string())
                && h["port"].as_u64() == Some(u64::from(addr.port()))
        })
    }

    /// A config document of group BERTH as Nacos's own HTTP API returns it (`None` when absent).
    pub async fn config(&self, data_id: &str) -> Option<String> {
        let url = format!("http://127.0.0.1:{}/nacos/v1/cs/configs?dataId={data_id}&group=BERTH", self.http);
        let resp = client().get(&url).send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        match status.as_u16() {
            200 if !text.is_empty() => Some(text),
            200 | 404 => None,
            other => panic!("rnacos answered {other} for config {data_id}: {text}"),
        }
    }

    /// Registers a persistent instance through Nacos's HTTP API: it stays registered whatever
    /// happens to the process at `addr`, as a crashed instance does until its heartbeats expire.
    pub async fn register_persistent(&self, service: &str, addr: std::net::SocketAddr, symbol: &str) {
        let url = format!(
            "http://127.0.0.1:{}/nacos/v1/ns/instance?serviceName={service}&ip={}&port={}&ephemeral=false&metadata=%7B%22berth.symbol%22%3A%22{symbol}%22%7D",
            self.http,
            addr.ip(),
            addr.port()
        );
        let resp = client().post(&url).send().await.unwrap();
        assert!(
            resp.status().is_success(),
            "rnacos refused the registration: {}",
            resp.text().await.unwrap()
        );
    }
}
