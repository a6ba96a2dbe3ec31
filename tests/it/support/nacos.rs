//! A real rnacos server per test, on free loopback ports, with its data in a temp directory.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::{Proc, client, eventually};

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
    /// Always `http + 1000`, the gRPC port Nacos clients derive when none is given.
    pub grpc: u16,
    data: tempfile::TempDir,
    /// `user:password` when the server requires a login.
    auth: Option<(String, String)>,
    /// A cluster node's raft id, and the gRPC port of the node it joins (none for the first).
    raft: Option<(u32, Option<u16>)>,
}

/// How many times a start is tried on new ports when the chosen ones turn out taken.
const START_ATTEMPTS: usize = 5;

/// rnacos needs its ports up front (its raft peers are told its gRPC address): they are picked
/// below the kernel's ephemeral range, which every `:0` bind and every outgoing connection
/// of the other tests draws from, so only another rnacos can want the same one — and a start
/// that finds its port taken is retried on new ones.
fn pick_http_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let low: u16 = range.split_whitespace().next().and_then(|p| p.parse().ok()).unwrap_or(32768);
    // http in [base, low - 1000), its gRPC port 1000 above, both outside the ephemeral range.
    let base = 10_000u16.min(low.saturating_sub(2_000));
    let span = low.saturating_sub(1_000).saturating_sub(base).max(1);
    loop {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let port = base + u16::try_from(h.finish() % u64::from(span)).unwrap();
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if port > 1024 && free(port) && free(port + 1000) {
            return port;
        }
    }
}

impl Rnacos {
    /// Starts rnacos and waits until its HTTP API answers.
    pub async fn start() -> Rnacos {
        Rnacos::start_configured(None, None).await
    }

    /// Starts rnacos with its open API behind a login as `user` / `password`.
    pub async fn start_with_auth(user: &str, password: &str) -> Rnacos {
        Rnacos::start_configured(Some((user.to_owned(), password.to_owned())), None).await
    }

    /// Starts node `id` of a raft cluster, joining the node whose gRPC port is `join` (the
    /// first node joins none and initializes the cluster).
    pub async fn start_node(id: u32, join: Option<u16>) -> Rnacos {
        Rnacos::start_configured(None, Some((id, join))).await
    }

    /// Picks ports and a data directory without starting the server.
    pub fn reserve() -> Rnacos {
        let http = pick_http_port();
        Rnacos {
            proc: None,
            http,
            grpc: http + 1000,
            data: tempfile::tempdir().unwrap(),
            auth: None,
            raft: None,
        }
    }

    /// Starts on fresh ports, trying new ones when a port was taken in the meantime.
    async fn start_configured(auth: Option<(String, String)>, raft: Option<(u32, Option<u16>)>) -> Rnacos {
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let mut r = Rnacos::reserve();
            r.auth = auth.clone();
            r.raft = raft;
            match r.try_start().await {
                Ok(()) => return r,
                Err(why) => failures.push(why),
            }
        }
        panic!("rnacos did not start in {START_ATTEMPTS} attempts:\n{}", failures.join("\n---\n"));
    }

    /// Starts (again) on the same ports and data directory.
    pub async fn restart(&mut self) {
        if let Err(why) = self.try_start().await {
            panic!("rnacos did not start again on port {}: {why}", self.http);
        }
    }

    /// Starts the server and waits until it serves HTTP and gRPC; `Err` with its output when
    /// it cannot (a port already taken).
    async fn try_start(&mut self) -> Result<(), String> {
        self.stop();
        let mut cmd = Command::new(rnacos_binary());
        cmd.current_dir(self.data.path())
            .env("RNACOS_SDK_HOST", "127.0.0.1")
            .env("RNACOS_HTTP_PORT", self.http.to_string())
            .env("RNACOS_GRPC_PORT", self.grpc.to_string())
            // 0: no console (one port fewer to find).
            .env("RNACOS_HTTP_CONSOLE_PORT", "0")
            .env("RNACOS_DATA_DIR", self.data.path().join("data"))
            .env("RNACOS_HTTP_WORKERS", "2")
            .env("RNACOS_NAMING_INSTANCE_METADATA_PERSISTENCE_ENABLE", "false");
        if let Some((id, join)) = self.raft {
            // Its raft address is its gRPC address. At its first start the first node
            // initializes the cluster and the others join it; a node started again keeps its
            // raft state and does neither (rnacos 0.8.8: a first node initializing again
            // becomes a cluster of its own; a node joining again becomes a non-voter).
            let first_start = !self.data.path().join("data").exists();
            cmd.env("RNACOS_RAFT_NODE_ID", id.to_string())
                .env("RNACOS_RAFT_NODE_ADDR", format!("127.0.0.1:{}", self.grpc))
                .env("RNACOS_RAFT_AUTO_INIT", (first_start && join.is_none()).to_string());
            if let (true, Some(port)) = (first_start, join) {
                cmd.env("RNACOS_RAFT_JOIN_ADDR", format!("127.0.0.1:{port}"));
            }
        }
        if let Some((user, password)) = &self.auth {
            cmd.env("RNACOS_ENABLE_OPEN_API_AUTH", "true")
                .env("RNACOS_INIT_ADMIN_USERNAME", user)
                .env("RNACOS_INIT_ADMIN_PASSWORD", password);
        }
        let mut proc = Proc::spawn(&format!("rnacos :{}", self.http), cmd);
        let url = format!("http://127.0.0.1:{}/nacos/v1/ns/instance/list?serviceName=probe", self.http);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            // Its gRPC server runs in a task that panics when its port is taken; the HTTP
            // server makes the process exit.
            let out = proc.output();
            if proc.try_status().is_some() || out.contains("panicked") {
                return Err(out);
            }
            // With a login required the API answers 403 to us: answering at all is enough.
            let answers =
                client().get(&url).send().await.is_ok_and(|r| r.status().is_success() || r.status() == 403);
            if answers && tokio::net::TcpStream::connect(("127.0.0.1", self.grpc)).await.is_ok() {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(format!("not answering within 20 s:\n{out}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if proc.output().contains("panicked") {
            return Err(proc.output());
        }
        self.proc = Some(proc);
        // rnacos creates its initial user a moment after it starts answering; nacos-sdk's
        // client logs in once at start and then only every 30 s.
        if self.auth.is_some() {
            eventually(Duration::from_secs(20), "rnacos accepts the login", || async {
                self.login().await.is_some()
            })
            .await;
        }
        Ok(())
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

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    /// The raft view of this node (`/nacos/v1/raft/metrics`), when it answers.
    pub async fn raft_metrics(&self) -> Option<serde_json::Value> {
        let url = format!("http://127.0.0.1:{}/nacos/v1/raft/metrics", self.http);
        client().get(url).send().await.ok()?.json().await.ok()
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

    /// The instances of `service` as Nacos's own HTTP API lists them. Any failure to ask
    /// fails the test: an unreachable server must not read as "no instances".
    pub async fn instances(&self, service: &str) -> Vec<serde_json::Value> {
        self.try_instances(service).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// The instances of `service`, or why rnacos could not be asked.
    pub async fn try_instances(&self, service: &str) -> Result<Vec<serde_json::Value>, String> {
        let mut url =
            format!("http://127.0.0.1:{}/nacos/v1/ns/instance/list?serviceName={service}", self.http);
        if let Some(token) = self.login().await {
            url.push_str(&format!("&accessToken={token}"));
        }
        let resp =
            client().get(&url).send().await.map_err(|e| format!("listing {service} in rnacos: {e}"))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| format!("listing {service} in rnacos: {e}"))?;
        if !status.is_success() {
            return Err(format!("rnacos answered {status} listing {service}: {text}"));
        }
        let doc: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("rnacos listed {service} as non-JSON ({e}): {text}"))?;
        doc["hosts"]
            .as_array()
            .cloned()
            .ok_or_else(|| format!("no hosts in rnacos's listing of {service}: {text}"))
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
