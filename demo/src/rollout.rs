//! `berth demo`: a scripted rollout under steady load, with berth's lifecycle on (or off, to
//! show the difference).
//!
//! A service of sample-app instances, each behind its sidecar; a consumer sidecar carrying a
//! steady load; `berth admin` for traffic changes. The script: a rolling restart of every
//! stable instance (each new one registers before the old one drains), a crash (SIGKILL) and
//! its replacement, then a canary at 10%, 50%, and promoted through the admin API.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::{Method, StatusCode};
use rustix::process::Signal;
use serde_json::json;

use crate::fleet::{FleetError, Proc, app_port, field};
use crate::http::Client;
use crate::load::{Load, PhaseStats};

/// The demo's service name.
pub const SERVICE: &str = "demo";

/// `berth demo`'s options.
#[derive(Debug, Clone, clap::Args)]
#[command(about = "Run a scripted rollout under load and show that no request fails")]
pub struct DemoArgs {
    /// Registry for the demo's instances (default: a fresh directory registry, removed at the
    /// end). `nacos://host:port` uses a real Nacos.
    #[arg(long, value_name = "URL", value_parser = RegistryText)]
    pub registry: Option<String>,
    /// Requests per second the consumer sends.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    pub rate: u32,
    /// Stable instances.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=20))]
    pub instances: u32,
    /// How long each traffic phase lasts.
    #[arg(long, value_name = "DURATION", default_value = "8s", value_parser = humantime::parse_duration)]
    pub hold: Duration,
    /// How long each sample app takes to start listening (a slow start).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub app_startup: Duration,
    /// Run the same script with berth's lifecycle off (register at once, no drain, no
    /// failover), to see what berth prevents.
    #[arg(long)]
    pub no_lifecycle: bool,
    /// Print the summary as JSON on stdout (progress goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Instead of the rollout, show a lane across two services: requests for `feature-x` reach
    /// `feature-x` of both, the others stay on `stable`.
    #[arg(long)]
    pub lanes: bool,
}

/// One instance: an app and its sidecar.
#[derive(Debug)]
struct Instance {
    symbol: String,
    app: Proc,
    sidecar: Proc,
    admin: SocketAddr,
}

/// How a drained instance left.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DrainReport {
    pub instance: String,
    /// Milliseconds from the drain's start to the deregistration.
    pub deregistered_after_ms: Option<f64>,
    /// Requests the instance served while draining.
    pub served_while_draining: u64,
    pub exit_code: Option<i32>,
    /// The sidecar's last log lines, when it did not exit 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_tail: Option<String>,
}

/// Everything the demo measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub lifecycle: bool,
    pub registry: String,
    pub rate: u32,
    pub seconds: f64,
    pub sent: u64,
    pub failed: u64,
    pub phases: Vec<PhaseStats>,
    pub drains: Vec<DrainReport>,
}

struct Demo {
    args: DemoArgs,
    registry: String,
    http: Client,
    instances: Vec<Instance>,
    started: u32,
    token: String,
    admin_api: SocketAddr,
    consumer_admin: SocketAddr,
    quiet: bool,
}

/// Checks a registry URL but keeps its text (a parsed URL prints its password masked, and the
/// sidecars need it whole); a bad one is refused without echoing its password.
#[derive(Clone, Debug)]
struct RegistryText;

impl clap::builder::TypedValueParser for RegistryText {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        let raw = value.to_string_lossy();
        match raw.parse::<berth_core::registry::RegistryUrl>() {
            Ok(_) => Ok(raw.into_owned()),
            Err(e) => {
                let name = arg.map_or_else(|| "--registry".to_owned(), ToString::to_string);
                let message = berth_core::registry::without_password(
                    &raw,
                    &format!("invalid value '{raw}' for '{name}': {e}\n"),
                );
                Err(clap::Error::raw(clap::error::ErrorKind::ValueValidation, message).with_cmd(cmd))
            }
        }
    }
}

/// The registry as the demo prints it: its password, if any, masked.
fn shown(registry: &str) -> String {
    berth_core::registry::without_password(registry, registry)
}

fn target(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|(s, p)| ((*s).to_owned(), *p)).collect()
}

fn phase(name: &str, target: BTreeMap<String, f64>) -> PhaseStats {
    PhaseStats { name: name.to_owned(), target, ..PhaseStats::default() }
}

fn setup(what: &str, detail: impl std::fmt::Display) -> FleetError {
    FleetError::Failed { what: what.to_owned(), detail: detail.to_string() }
}

/// Runs the demo; returns the summary.
pub async fn run(args: DemoArgs, scratch: PathBuf) -> Result<Summary, FleetError> {
    let registry =
        args.registry.clone().unwrap_or_else(|| format!("dir://{}", scratch.join("registry").display()));
    let token = format!("demo-{:016x}{:016x}", rand_u64(), rand_u64());
    let token_file = scratch.join("tokens");
    std::fs::write(&token_file, format!("demo write {token}\n"))
        .map_err(|e| setup("writing the token file", e))?;
    let quiet = args.json;
    say(
        quiet,
        &format!(
            "berth demo: {} instances of `{SERVICE}` behind sidecars, a consumer at {} rps, berth's lifecycle {}\n  registry: {}",
            args.instances,
            args.rate,
            if args.no_lifecycle { "OFF" } else { "on" },
            shown(&registry)
        ),
    );
    let admin = Proc::berth_with_registry(
        "berth admin",
        &[
            "admin".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--token-file".into(),
            token_file.display().to_string(),
        ],
        &registry,
    )?;
    let line = admin.wait_line("berth admin listening", Duration::from_secs(15)).await?;
    let admin_api =
        field(&line, "listen").ok_or_else(|| setup("berth admin", format!("no address in {line:?}")))?;

    let mut demo = Demo {
        args: args.clone(),
        registry,
        http: Client::default(),
        instances: Vec::new(),
        started: 0,
        token,
        admin_api,
        consumer_admin: admin_api,
        quiet,
    };
    // The policy starts clean: everything to stable.
    demo.admin(Method::PUT, "weights", json!({"stable": 100})).await?;
    say(quiet, "setting up: starting instances…");
    for _ in 0..args.instances {
        let i = demo.start_instance("stable").await?;
        demo.instances.push(i);
    }
    let (_consumer_app, _consumer_sidecar, consumer, outbound) = demo.start_consumer().await?;
    demo.consumer_admin = consumer;
    demo.wait_consumer_sees(args.instances as usize).await?;

    let (load, load_task) =
        Load::start(outbound, SERVICE, args.rate, phase("steady", target(&[("stable", 100.0)])));
    let progress = tokio::spawn(crate::report::progress(load.clone(), quiet));
    let mut drains = Vec::new();
    tokio::time::sleep(args.hold).await;

    load.phase(phase("rolling restart", target(&[("stable", 100.0)])));
    for _ in 0..args.instances {
        let fresh = demo.start_instance("stable").await?;
        let old = demo.instances.remove(0);
        demo.instances.push(fresh);
        drains.push(demo.stop_instance(old).await?);
    }

    load.phase(phase("crash", target(&[("stable", 100.0)])));
    let victim = demo.instances.remove(0);
    say(
        quiet,
        &format!("  SIGKILL {} (no drain, still registered until its connection drops)", victim.sidecar.name),
    );
    victim.sidecar.signal(Signal::KILL);
    victim.app.signal(Signal::KILL);
    let fresh = demo.start_instance("stable").await?;
    demo.instances.push(fresh);
    tokio::time::sleep(args.hold / 2).await;
    drop(victim);

    let canary = demo.start_instance("canary").await?;
    demo.instances.push(canary);
    for (name, weights, tgt) in [
        ("canary 10%", json!({"stable": 90, "canary": 10}), target(&[("stable", 90.0), ("canary", 10.0)])),
        ("canary 50%", json!({"stable": 50, "canary": 50}), target(&[("stable", 50.0), ("canary", 50.0)])),
    ] {
        let version = demo.admin(Method::PUT, "weights", weights).await?;
        demo.wait_policy(version).await?;
        load.phase(phase(name, tgt));
        say(quiet, &format!("  weights set through the admin API: {name}"));
        tokio::time::sleep(args.hold).await;
    }
    let version = demo.admin(Method::POST, "promote", json!({"symbol": "canary"})).await?;
    demo.wait_policy(version).await?;
    load.phase(phase("promoted", target(&[("canary", 100.0)])));
    say(quiet, "  canary promoted through the admin API: it is the default and takes 100%");
    tokio::time::sleep(args.hold).await;

    load.stop();
    let _ = load_task.await;
    progress.abort();
    let phases = load.snapshot();
    Ok(Summary {
        lifecycle: !args.no_lifecycle,
        registry: shown(&demo.registry),
        rate: args.rate,
        seconds: load.elapsed().as_secs_f64(),
        sent: phases.iter().map(|p| p.sent).sum(),
        failed: phases.iter().map(|p| p.failed).sum(),
        phases,
        drains,
    })
}

fn say(quiet: bool, line: &str) {
    if !quiet {
        println!("{line}");
    } else {
        eprintln!("{line}");
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

impl Demo {
    fn sidecar_args(&self, service: &str, symbol: &str, app_port: u16) -> Vec<String> {
        let mut args: Vec<String> = [
            "proxy",
            "--service",
            service,
            "--symbol",
            symbol,
            "--app-health",
            "http:/healthz",
            "--inbound",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--outbound",
            "127.0.0.1:0",
            "--health-interval",
            "200ms",
            "--drain-min",
            "3s",
            "--drain-quiet",
            "500ms",
            "--warmup",
            "5s",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(["--app-port".into(), app_port.to_string()]);
        if self.args.no_lifecycle {
            args.push("--no-lifecycle".into());
        }
        args
    }

    async fn start_instance(&mut self, symbol: &str) -> Result<Instance, FleetError> {
        self.started += 1;
        let name = format!("{symbol}-{}", self.started);
        let app = Proc::berth(
            &format!("app {name}"),
            &[
                "sample-app".into(),
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--name".into(),
                name.clone(),
                "--symbol".into(),
                symbol.into(),
                "--startup-delay-ms".into(),
                self.args.app_startup.as_millis().to_string(),
            ],
        )?;
        // The app holds its port from the start (refusing connections while it starts up).
        let port = app_port(&app).await?;
        let sidecar = Proc::berth_with_registry(
            &format!("sidecar {name}"),
            &self.sidecar_args(SERVICE, symbol, port),
            &self.registry,
        )?;
        let line = sidecar.wait_line("berth proxy listening", Duration::from_secs(15)).await?;
        let admin =
            field(&line, "admin").ok_or_else(|| setup(&name, format!("no admin address in {line:?}")))?;
        let instance = Instance { symbol: symbol.to_owned(), app, sidecar, admin };
        // With the lifecycle, an instance counts once it is ready (registered and healthy);
        // without it, once it registered — whether or not its app is up yet.
        let wanted = if self.args.no_lifecycle { "serving" } else { "ready" };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let state = self.http.json(&format!("http://{admin}/state")).await.unwrap_or_default();
            let done =
                if wanted == "ready" { state["ready"] == true } else { state["lifecycle"] == "serving" };
            if done {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(setup(&name, format!("not {wanted} within 30s:\n{}", instance.sidecar.tail(20))));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        say(
            self.quiet,
            &format!(
                "  {name} {} ({})",
                if wanted == "ready" { "ready" } else { "registered" },
                instance.symbol
            ),
        );
        Ok(instance)
    }

    /// Stops an instance as Kubernetes would: SIGTERM to the sidecar, the app's preStop hook
    /// waiting on `/drain?wait=true`, then SIGTERM to the app. Without the lifecycle there is
    /// no hook: both get SIGTERM at once.
    async fn stop_instance(&self, mut i: Instance) -> Result<DrainReport, FleetError> {
        let name = i.sidecar.name.trim_start_matches("sidecar ").to_owned();
        say(self.quiet, &format!("  stopping {name}"));
        i.sidecar.signal(Signal::TERM);
        let final_state = if self.args.no_lifecycle {
            i.app.signal(Signal::TERM);
            serde_json::Value::Null
        } else {
            let state =
                self.http.json(&format!("http://{}/drain?wait=true", i.admin)).await.unwrap_or_default();
            i.app.signal(Signal::TERM);
            state
        };
        let status = i.sidecar.wait(Duration::from_secs(60)).await;
        let _ = i.app.wait(Duration::from_secs(30)).await;
        let drain = &final_state["drain"];
        let report = DrainReport {
            instance: name,
            deregistered_after_ms: drain["deregistered_after_ms"].as_f64(),
            served_while_draining: drain["received_while_draining"].as_u64().unwrap_or(0),
            exit_code: status.and_then(|s| s.code()),
            log_tail: None,
        };
        let report = DrainReport {
            log_tail: (report.exit_code != Some(0) && !self.args.no_lifecycle).then(|| i.sidecar.tail(30)),
            ..report
        };
        if !self.args.no_lifecycle {
            say(
                self.quiet,
                &format!(
                    "  {} drained: deregistered after {:.1} ms, served {} requests while draining, exit {:?}",
                    report.instance,
                    report.deregistered_after_ms.unwrap_or(f64::NAN),
                    report.served_while_draining,
                    report.exit_code
                ),
            );
        }
        Ok(report)
    }

    async fn start_consumer(&mut self) -> Result<(Proc, Proc, SocketAddr, SocketAddr), FleetError> {
        let app = Proc::berth(
            "consumer app",
            &[
                "sample-app".into(),
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--name".into(),
                "consumer".into(),
            ],
        )?;
        let port = app_port(&app).await?;
        let mut args = self.sidecar_args("demo-consumer", "stable", port);
        args.extend(["--services".into(), SERVICE.into()]);
        let sidecar = Proc::berth_with_registry("consumer sidecar", &args, &self.registry)?;
        let line = sidecar.wait_line("berth proxy listening", Duration::from_secs(15)).await?;
        let admin = field(&line, "admin").ok_or_else(|| setup("consumer", "no admin address"))?;
        let outbound = field(&line, "outbound").ok_or_else(|| setup("consumer", "no outbound address"))?;
        Ok((app, sidecar, admin, outbound))
    }

    async fn wait_consumer_sees(&self, n: usize) -> Result<(), FleetError> {
        let url = format!("http://{}/endpoints", self.consumer_admin);
        for _ in 0..600 {
            let e = self.http.json(&url).await.unwrap_or_default();
            if e["services"][SERVICE]["instances"].as_array().is_some_and(|a| a.len() >= n) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(setup("consumer", format!("did not see {n} instances of {SERVICE} within 30s")))
    }

    async fn wait_policy(&self, version: u64) -> Result<(), FleetError> {
        let url = format!("http://{}/endpoints", self.consumer_admin);
        for _ in 0..600 {
            let e = self.http.json(&url).await.unwrap_or_default();
            if e["services"][SERVICE]["policy"]["version"].as_u64().is_some_and(|v| v >= version) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(setup("consumer", format!("did not apply policy version {version} within 30s")))
    }

    /// Calls the admin API (`PUT …/weights`, `POST …/promote`); returns the new policy version.
    async fn admin(&self, method: Method, what: &str, body: serde_json::Value) -> Result<u64, FleetError> {
        let url = format!("http://{}/api/v1/services/{SERVICE}/{what}", self.admin_api);
        let auth = format!("Bearer {}", self.token);
        let (status, text) = self
            .http
            .call(method, &url, &[("authorization", &auth)], Some(&body))
            .await
            .map_err(|e| setup("admin API", e))?;
        if status != StatusCode::OK {
            return Err(setup("admin API", format!("{what}: {status}: {text}")));
        }
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        Ok(doc["version"].as_u64().or_else(|| doc["policy"]["version"].as_u64()).unwrap_or(0))
    }
}
