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
    /// The threads reading stdout and stderr; they end at the pipes' end.
    readers: Vec<std::thread::JoinHandle<()>>,
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
        let mut readers = Vec::new();
        for stream in [out, err].into_iter().flatten() {
            let lines = lines.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            }));
        }
        Proc { name: name.to_owned(), child, lines, readers, status: None }
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

    /// Sends a signal by name (`TERM`, `KILL`, `STOP`, `CONT`, `INT`); fails the test when it
    /// cannot.
    pub fn signal(&self, sig: &str) {
        self.try_signal(sig).unwrap_or_else(|e| panic!("kill -{sig} {}: {e}", self.name));
    }

    /// Sends a signal by name, with kill(2) (no `kill` binary needed); for `Drop` guards that
    /// must not panic.
    pub fn try_signal(&self, sig: &str) -> std::io::Result<()> {
        use rustix::process::{Pid, Signal, kill_process};
        let signal = match sig {
            "TERM" => Signal::TERM,
            "KILL" => Signal::KILL,
            "STOP" => Signal::STOP,
            "CONT" => Signal::CONT,
            "INT" => Signal::INT,
            other => return Err(std::io::Error::other(format!("no signal {other}"))),
        };
        let pid = i32::try_from(self.pid())
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| std::io::Error::other("bad pid"))?;
        kill_process(pid, signal).map_err(std::io::Error::from)
    }

    /// The exit status, if the process has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().unwrap();
        }
        self.status
    }

    /// Waits for the process to exit, and for its last lines to be read (so that `output`
    /// holds everything it printed; a grandchild keeping the pipes open is waited for 2 s).
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status() {
                let read = Instant::now() + Duration::from_secs(2);
                while !self.readers.iter().all(|r| r.is_finished()) && Instant::now() < read {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
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

/// The remote ports of the established TCP connections of process `pid` over IPv4 loopback:
/// its sockets (`/proc/PID/fd`) matched by inode against `/proc/net/tcp`.
pub fn connected_ports(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.flatten().filter_map(|e| std::fs::read_link(e.path()).ok()).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|l| l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_owned))
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // local, remote (hex ip:port), state (01 = established), …, inode (field 9).
            let established = f.get(3) == Some(&"01");
            let remote = f.get(2)?.split(':').nth(1)?;
            (established && inodes.iter().any(|i| Some(&i.as_str()) == f.get(9)))
                .then(|| u16::from_str_radix(remote, 16).ok())
                .flatten()
        })
        .collect()
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
