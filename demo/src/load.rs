//! The demo's consumer: a steady, open-loop load through the consumer sidecar's outbound port,
//! counted per phase of the script: sent, failed (and why), and which symbol answered.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::watch;

/// How long one request may take before it counts as failed.
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// What one phase of the script saw.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PhaseStats {
    pub name: String,
    /// The share per symbol the phase aims at, in percent.
    pub target: BTreeMap<String, f64>,
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
    /// Answers per symbol (`x-app-symbol`).
    pub by_symbol: BTreeMap<String, u64>,
    /// Failures by reason (status and `x-berth-error`, or the connection error).
    pub failures: BTreeMap<String, u64>,
    pub seconds: f64,
}

impl PhaseStats {
    /// Share of `symbol` among the answered requests, in percent.
    pub fn share(&self, symbol: &str) -> f64 {
        if self.ok == 0 {
            return 0.0;
        }
        #[allow(clippy::cast_precision_loss)]
        let share = *self.by_symbol.get(symbol).unwrap_or(&0) as f64 * 100.0 / self.ok as f64;
        share
    }
}

/// The load and its counts.
#[derive(Debug, Clone)]
pub struct Load {
    phases: Arc<Mutex<Vec<PhaseStats>>>,
    current: watch::Sender<usize>,
    stop: watch::Sender<bool>,
    started: tokio::time::Instant,
}

impl Load {
    /// Starts sending `rate` requests a second to the service `host` through `outbound`.
    pub fn start(
        outbound: SocketAddr,
        host: &str,
        rate: u32,
        first_phase: PhaseStats,
    ) -> (Load, tokio::task::JoinHandle<()>) {
        let load = Load {
            phases: Arc::new(Mutex::new(vec![first_phase])),
            current: watch::channel(0).0,
            stop: watch::channel(false).0,
            started: tokio::time::Instant::now(),
        };
        let task = tokio::spawn(load.clone().run(outbound, host.to_owned(), rate));
        (load, task)
    }

    /// Counts from now on into a new phase.
    pub fn phase(&self, next: PhaseStats) {
        let mut phases = self.phases.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.started.elapsed().as_secs_f64();
        let done: f64 = phases.iter().map(|p| p.seconds).sum();
        if let Some(last) = phases.last_mut() {
            last.seconds = now - done;
        }
        phases.push(next);
        self.current.send_replace(phases.len() - 1);
    }

    /// Stops sending; the returned task ends once the requests in flight are answered.
    pub fn stop(&self) {
        let now = self.started.elapsed().as_secs_f64();
        let mut phases = self.phases.lock().unwrap_or_else(|e| e.into_inner());
        let done: f64 = phases.iter().map(|p| p.seconds).sum();
        if let Some(last) = phases.last_mut() {
            last.seconds = now - done;
        }
        self.stop.send_replace(true);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> Vec<PhaseStats> {
        self.phases.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Seconds since the load started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn record(&self, phase: usize, result: Result<String, String>) {
        let mut phases = self.phases.lock().unwrap_or_else(|e| e.into_inner());
        let Some(p) = phases.get_mut(phase) else { return };
        match result {
            Ok(symbol) => {
                p.ok += 1;
                *p.by_symbol.entry(symbol).or_default() += 1;
            }
            Err(why) => {
                p.failed += 1;
                *p.failures.entry(why).or_default() += 1;
            }
        }
    }

    async fn run(self, outbound: SocketAddr, host: String, rate: u32) {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: Client<HttpConnector, Empty<Bytes>> =
            Client::builder(TokioExecutor::new()).build(connector);
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut requests = tokio::task::JoinSet::new();
        let mut owed = 0.0_f64;
        let mut stop = self.stop.subscribe();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            owed += f64::from(rate) / 100.0;
            while owed >= 1.0 {
                owed -= 1.0;
                let phase = *self.current.borrow();
                {
                    let mut phases = self.phases.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(p) = phases.get_mut(phase) {
                        p.sent += 1;
                    }
                }
                let (client, load, host) = (client.clone(), self.clone(), host.clone());
                requests.spawn(async move {
                    let result = tokio::time::timeout(REQUEST_DEADLINE, one(&client, outbound, &host))
                        .await
                        .unwrap_or_else(|_| Err("no answer within 10s".into()));
                    load.record(phase, result);
                });
            }
            while requests.try_join_next().is_some() {}
        }
        while requests.join_next().await.is_some() {}
    }
}

/// One request; `Ok(symbol)` for a 200.
async fn one(
    client: &Client<HttpConnector, Empty<Bytes>>,
    outbound: SocketAddr,
    host: &str,
) -> Result<String, String> {
    let req = Request::get(format!("http://{outbound}/"))
        .header(http::header::HOST, host)
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| format!("connection error: {e}"))?;
    let status = resp.status();
    let symbol = resp.headers().get("x-app-symbol").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let berth_error =
        resp.headers().get(berth_core::header::ERROR).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = resp.into_body().collect().await;
    match (status.as_u16(), symbol, body) {
        (200, Some(symbol), Ok(_)) => Ok(symbol),
        (200, _, Err(e)) => Err(format!("body cut: {e}")),
        (code, _, _) => Err(match berth_error {
            Some(e) => format!("{code} {e}"),
            None => code.to_string(),
        }),
    }
}
