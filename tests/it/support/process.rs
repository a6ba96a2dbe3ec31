//! Child processes that are always killed, whose output is captured line by line.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running child process. Killed (SIGKILL) when dropped; its output is printed when the test
/// is failing, to show what it saw.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// Ends when both threads copying stdout and stderr are done: waited for (briefly) once
    /// the process has exited, so its last lines are in `lines` by the time an exit is reported.
    copied: std::sync::mpsc::Receiver<()>,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd`, capturing stdout and stderr.
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>);
        let err = child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>);
        let (done, copied) = std::sync::mpsc::channel::<()>();
        for stream in [out, err].into_iter().flatten() {
            let (lines, done) = (lines.clone(), done.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
                drop(done);
            });
        }
        drop(done);
        Proc { name: name.to_owned(), child, lines, copied, status: None }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything printed so far.
    pub fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Waits for a line containing `needle` and returns it.
    pub async fn wait_line(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.lines.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            assert!(Instant::now() < deadline, "{}: no line with {needle:?} within {timeout:?}", self.name);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends a signal by name (`TERM`, `KILL`, `STOP`, `CONT`).
    pub fn signal(&self, sig: &str) {
        let status =
            Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status().unwrap();
        assert!(status.success(), "kill -{sig} {} failed", self.name);
    }

    /// The exit status, if the process has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().unwrap();
            if self.status.is_some() {
                // The pipes end with the process (unless a child of its own holds them: then
                // give up after a while).
                // Nothing is ever sent: this returns once both senders are dropped.
                let _ = self.copied.recv_timeout(Duration::from_secs(2));
            }
        }
        self.status
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status() {
                return s;
            }
            assert!(Instant::now() < deadline, "{} did not exit within {timeout:?}", self.name);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let out = self.output();
            let tail: Vec<&str> = out.lines().rev().take(80).collect::<Vec<_>>().into_iter().rev().collect();
            eprintln!("----- {} (last {} lines) -----\n{}\n-----", self.name, tail.len(), tail.join("\n"));
        }
    }
}
