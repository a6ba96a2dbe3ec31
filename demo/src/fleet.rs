//! The demo's processes: `berth sample-app`, `berth proxy` and `berth admin` started from this
//! very binary, their output kept, and all of them killed when the demo ends.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// Something the demo's processes did wrong.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("cannot start {name}: {source}")]
    Spawn {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{name} did not print {needle:?} within {timeout:?}; its last lines:\n{tail}")]
    Silent { name: String, needle: String, timeout: Duration, tail: String },
    #[error("{what}: {detail}")]
    Failed { what: String, detail: String },
}

/// A child process of the demo.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Starts `berth ARGS…` (this executable) with output captured.
    pub fn berth(name: &str, args: &[String]) -> Result<Proc, FleetError> {
        Proc::berth_in(name, args, None)
    }

    /// The same, for a program that talks to `registry`: the URL goes in `BERTH_REGISTRY`, not
    /// on the command line, where anyone on the host could read a password in it (`ps`).
    pub fn berth_with_registry(name: &str, args: &[String], registry: &str) -> Result<Proc, FleetError> {
        Proc::berth_in(name, args, Some(registry))
    }

    fn berth_in(name: &str, args: &[String], registry: Option<&str>) -> Result<Proc, FleetError> {
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("berth"));
        let mut cmd = Command::new(exe);
        match registry {
            Some(url) => cmd.env("BERTH_REGISTRY", url),
            None => cmd.env_remove("BERTH_REGISTRY"),
        };
        cmd.args(args)
            .env("BERTH_LOG", "info,nacos_sdk=off")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|source| FleetError::Spawn { name: name.to_owned(), source })?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        if let Some(out) = child.stdout.take() {
            tokio::spawn(collect(BufReader::new(out), lines.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(collect(BufReader::new(err), lines.clone()));
        }
        Ok(Proc { name: name.to_owned(), child, lines })
    }

    /// The last `n` lines it printed.
    pub fn tail(&self, n: usize) -> String {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Waits for a line containing `needle`.
    pub async fn wait_line(&self, needle: &str, timeout: Duration) -> Result<String, FleetError> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .lines
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .find(|l| l.contains(needle))
                .cloned();
            if let Some(line) = found {
                return Ok(line);
            }
            if Instant::now() >= deadline {
                return Err(FleetError::Silent {
                    name: self.name.clone(),
                    needle: needle.to_owned(),
                    timeout,
                    tail: self.tail(20),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends a signal.
    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid =
            self.child.id().and_then(|p| i32::try_from(p).ok()).and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, signal);
        }
    }

    /// Waits for the process to exit.
    pub async fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait()).await.ok().and_then(Result::ok)
    }
}

async fn collect<R: tokio::io::AsyncRead + Unpin>(reader: BufReader<R>, lines: Arc<Mutex<Vec<String>>>) {
    let mut reader = reader.lines();
    while let Ok(Some(line)) = reader.next_line().await {
        lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }
}

/// The port a sample app bound (its `bound to ADDR` line).
pub async fn app_port(app: &Proc) -> Result<u16, FleetError> {
    let line = app.wait_line("bound to ", Duration::from_secs(15)).await?;
    line.rsplit(' ').next().and_then(|a| a.parse::<SocketAddr>().ok()).map(|a| a.port()).ok_or_else(|| {
        FleetError::Failed { what: app.name.clone(), detail: format!("no address in {line:?}") }
    })
}

/// The address after ` KEY=` in a log line.
pub fn field(line: &str, key: &str) -> Option<SocketAddr> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    line[start..].split(' ').next()?.parse().ok()
}
