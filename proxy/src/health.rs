//! Health of the app and of its dependencies, checked on an interval with thresholds.
//!
//! Each target passes from unhealthy to healthy after `healthy_threshold` consecutive passing
//! checks and back after `unhealthy_threshold` failures. The overall verdict — every target
//! healthy — is published on a watch channel the lifecycle follows.

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::config::{AppHealth, Check, Config, HealthTiming};

/// The verdict over the app and every dependency.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Health {
    /// Whether every target is healthy.
    pub healthy: bool,
    /// Whether the app's own check passes, whatever the dependencies say.
    pub app: bool,
    /// What is unhealthy and why, e.g. `app (tcp 127.0.0.1:8080): connection refused`.
    pub failing: Vec<String>,
}

/// One thing to check.
#[derive(Clone, Debug)]
struct Target {
    name: String,
    probe: Probe,
}

#[derive(Clone, Debug)]
enum Probe {
    Tcp(String),
    Http { authority: String, path: String },
}

/// Targets with their thresholds, checked by [`HealthMonitor::run`].
#[derive(Debug)]
pub struct HealthMonitor {
    targets: Vec<Target>,
    timing: HealthTiming,
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl HealthMonitor {
    /// The app's check and one per dependency, from the configuration.
    pub fn new(config: &Config) -> Self {
        let app = config.app.to_string();
        let app_probe = match &config.app_health {
            AppHealth::Tcp => Probe::Tcp(app.clone()),
            AppHealth::Http { path } => Probe::Http { authority: app.clone(), path: path.clone() },
        };
        let mut targets =
            vec![Target { name: format!("app ({} {app})", config.app_health), probe: app_probe }];
        targets.extend(config.dependencies.iter().map(|check| Target {
            name: format!("dependency {check}"),
            probe: match check {
                Check::Tcp { .. } => Probe::Tcp(check.authority()),
                Check::Http { path, .. } => Probe::Http { authority: check.authority(), path: path.clone() },
            },
        }));
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.health.timeout));
        // A fresh connection per check: a pooled one could outlive the app's listener.
        let client = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build(connector);
        HealthMonitor { targets, timing: config.health, client }
    }

    /// Checks forever, publishing every change of the verdict on `out`.
    pub async fn run(self, out: watch::Sender<Health>) {
        let mut healthy = vec![false; self.targets.len()];
        let mut streak = vec![0u32; self.targets.len()];
        let mut errors = vec![String::from("not checked yet"); self.targets.len()];
        let mut tick = tokio::time::interval(self.timing.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let results = futures_util::future::join_all(self.targets.iter().map(|t| self.check(t))).await;
            for (i, result) in results.into_iter().enumerate() {
                let passed = result.is_ok();
                // `streak` counts consecutive results that disagree with the current state.
                streak[i] = if passed != healthy[i] { streak[i] + 1 } else { 0 };
                let threshold =
                    if healthy[i] { self.timing.unhealthy_threshold } else { self.timing.healthy_threshold };
                if streak[i] >= threshold {
                    healthy[i] = passed;
                    streak[i] = 0;
                    if passed {
                        tracing::info!(target = %self.targets[i].name, "healthy");
                    }
                }
                if let Err(e) = result {
                    if healthy[i] || errors[i] != e {
                        tracing::warn!(target = %self.targets[i].name, error = %e, "check failed");
                    }
                    errors[i] = e;
                }
            }
            let failing: Vec<String> = (0..self.targets.len())
                .filter(|&i| !healthy[i])
                .map(|i| format!("{}: {}", self.targets[i].name, errors[i]))
                .collect();
            // The app is always the first target.
            let verdict = Health { healthy: failing.is_empty(), app: healthy[0], failing };
            out.send_if_modified(|old| {
                let changed = *old != verdict;
                if changed {
                    *old = verdict;
                }
                changed
            });
        }
    }

    async fn check(&self, target: &Target) -> Result<(), String> {
        let deadline = self.timing.timeout;
        let attempt = async {
            match &target.probe {
                Probe::Tcp(addr) => TcpStream::connect(addr).await.map(drop).map_err(|e| e.to_string()),
                Probe::Http { authority, path } => {
                    let uri = format!("http://{authority}{path}");
                    let req = http::Request::get(&uri)
                        .header(http::header::USER_AGENT, "berth-health")
                        .body(Empty::new())
                        .map_err(|e| e.to_string())?;
                    let resp = self.client.request(req).await.map_err(|e| error_chain(&e))?;
                    let status = resp.status();
                    if status.is_success() || status.is_redirection() {
                        Ok(())
                    } else {
                        Err(format!("GET {path} answered {status}"))
                    }
                }
            }
        };
        tokio::time::timeout(deadline, attempt)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {}", humantime::format_duration(deadline))))
    }
}

/// An error and its sources on one line: hyper's top-level errors say little alone.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
