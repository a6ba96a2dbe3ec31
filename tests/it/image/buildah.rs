//! The image run as scripts/image.sh builds it: buildah without a daemon, vfs storage (here in
//! a temporary directory per test) and chroot isolation. A chroot-isolated container shares
//! the host's network namespace, so whatever berth listens on inside is on the host's
//! 127.0.0.1.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::support::Proc;

/// A working container made from the image archive, removed (with its storage) when dropped.
#[derive(Debug)]
pub struct Container {
    storage: TempDir,
    name: String,
}

impl Container {
    pub fn from_archive(archive: &Path) -> Container {
        let storage = tempfile::tempdir().unwrap();
        let name = format!("berth-test-{}", std::process::id());
        let mut cmd = buildah(storage.path());
        cmd.args(["from", "--quiet", "--pull-never", "--name", &name])
            .arg(format!("oci-archive:{}", archive.display()));
        let out = cmd.output().unwrap_or_else(|e| panic!("cannot run buildah: {e}"));
        assert!(out.status.success(), "buildah from: {}", String::from_utf8_lossy(&out.stderr));
        Container { storage, name }
    }

    /// `buildah run` of `args` in the container, with `volumes` (`host dir`, `container dir`)
    /// mounted, in a process group of its own: buildah's chroot helper and the command outlive
    /// a killed buildah, so [`InContainer`] kills the whole group.
    pub fn command(&self, volumes: &[(&Path, &str)], args: &[&str]) -> Command {
        let mut cmd = buildah(self.storage.path());
        cmd.args(["run", "--isolation", "chroot"]);
        for (host, inside) in volumes {
            cmd.arg("--volume").arg(format!("{}:{inside}", host.display()));
        }
        cmd.arg(&self.name).arg("--").args(args).process_group(0);
        cmd
    }

    /// Runs `args` to the end: the exit code and everything it printed (stdout, then stderr).
    pub async fn run(&self, args: &[&str]) -> (Option<i32>, String) {
        let mut cmd = self.command(&[], args);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run buildah: {e}"));
        let _group = Group(child.id());
        // Read to the end of both pipes, not just to the exit, so nothing printed is missed.
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::task::spawn_blocking(|| child.wait_with_output()),
        )
        .await
        .unwrap_or_else(|_| panic!("{args:?} in the image did not end within 60 s"))
        .unwrap()
        .unwrap();
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.code(), text)
    }

    /// `berth proxy` with `args` in the container, once it has printed its addresses.
    pub async fn sidecar(&self, volumes: &[(&Path, &str)], args: &[&str]) -> SidecarInContainer {
        let mut argv = vec!["/usr/local/bin/berth", "proxy"];
        argv.extend(args);
        // Wrapped before anything can panic, so the group dies with the test.
        let proc = InContainer(Proc::spawn("sidecar in the image", self.command(volumes, &argv)));
        let line = proc.0.wait_line("berth proxy listening", Duration::from_secs(60)).await;
        let field = |key: &str| -> SocketAddr {
            let value = line.split(' ').find_map(|f| f.strip_prefix(&format!("{key}=")));
            value.unwrap_or_else(|| panic!("no {key} in {line}")).parse().unwrap()
        };
        SidecarInContainer { inbound: field("inbound"), admin: field("admin"), proc }
    }
}

/// `berth proxy` running in the container; its addresses are the host's too.
#[derive(Debug)]
pub struct SidecarInContainer {
    pub proc: InContainer,
    pub inbound: SocketAddr,
    pub admin: SocketAddr,
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = buildah(self.storage.path()).args(["rm", &self.name]).output();
    }
}

/// Something started with [`Container::command`]: its whole process group is killed when
/// dropped, even on panic (then the process itself is reaped, and its output shown).
#[derive(Debug)]
pub struct InContainer(pub Proc);

impl Drop for InContainer {
    fn drop(&mut self) {
        drop(Group(self.0.pid()));
    }
}

/// The process group a buildah started with [`Container::command`] leads (its id is buildah's):
/// killed when dropped.
struct Group(u32);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.0)]).output();
    }
}

/// The processes below `pid` named `comm`.
pub fn descendants_named(pid: u32, comm: &str) -> Vec<u32> {
    let mut parents = Vec::new(); // (pid, parent, comm)
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let ppid = stat[close + 2..].split(' ').nth(1).and_then(|p| p.parse::<u32>().ok());
        if let (Ok(p), Some(ppid)) = (stat[..open].trim().parse::<u32>(), ppid) {
            parents.push((p, ppid, stat[open + 1..close].to_owned()));
        }
    }
    let mut below = vec![pid];
    let mut i = 0;
    while i < below.len() {
        let parent = below[i];
        below.extend(parents.iter().filter(|(_, pp, _)| *pp == parent).map(|(p, _, _)| *p));
        i += 1;
    }
    parents.iter().filter(|(p, _, c)| c == comm && below[1..].contains(p)).map(|(p, _, _)| *p).collect()
}

/// The real user id of a process (the first `Uid:` field of its status).
pub fn uid(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn buildah(storage: &Path) -> Command {
    let mut cmd = Command::new("buildah");
    cmd.arg("--root")
        .arg(storage.join("root"))
        .arg("--runroot")
        .arg(storage.join("run"))
        .args(["--storage-driver", "vfs"]);
    cmd
}
