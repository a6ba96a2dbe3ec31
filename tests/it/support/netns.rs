//! A network namespace of the test's own — a pod, for what runs in it — joined to the host by a
//! veth pair. Its address is not loopback, so calls from the host come from a non-loopback
//! address, as the kubelet's do. Made with `ip` (iproute2; needs root), removed when dropped.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A network namespace: `ns_ip` inside, `host_ip` on the host's end of the veth pair (a /30).
#[derive(Debug)]
pub struct Netns {
    pub name: String,
    pub host_ip: Ipv4Addr,
    pub ns_ip: Ipv4Addr,
    host_if: String,
    ns_if: String,
}

/// `ip ARGS`; fails the test, saying why, when it fails.
fn ip(args: &[&str]) {
    let out =
        Command::new("ip").args(args).output().unwrap_or_else(|e| panic!("cannot run ip (iproute2): {e}"));
    assert!(
        out.status.success(),
        "ip {}: {} (network namespaces need root: CAP_NET_ADMIN)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Whether some interface of the host already has an address in `10.250.a.b/30`.
fn subnet_in_use(net: [u8; 4]) -> bool {
    let out =
        Command::new("ip").args(["-4", "-o", "addr", "show"]).output().map(|o| o.stdout).unwrap_or_default();
    let prefix = format!("inet {}.{}.{}.", net[0], net[1], net[2]);
    String::from_utf8_lossy(&out).lines().any(|l| {
        l.split_once(&prefix)
            .and_then(|(_, rest)| rest.split('/').next()?.parse::<u8>().ok())
            .is_some_and(|last| last & !3 == net[3])
    })
}

impl Netns {
    /// Creates the namespace, the veth pair and their addresses, loopback up inside.
    pub fn create() -> Netns {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let id = std::process::id() % 100_000;
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        // A /30 in 10.250.0.0/16 chosen from the process id, skipping any already in use.
        let mut slot = (id * 4 + n) % 16_384;
        let net = loop {
            let net = [10, 250, u8::try_from(slot / 64).unwrap(), u8::try_from(slot % 64 * 4).unwrap()];
            if !subnet_in_use(net) {
                break net;
            }
            slot = (slot + 1) % 16_384;
        };
        let host_ip = Ipv4Addr::new(net[0], net[1], net[2], net[3] + 1);
        let ns_ip = Ipv4Addr::new(net[0], net[1], net[2], net[3] + 2);
        let ns_if = format!("bt{id}x{n}n");
        let netns = Netns {
            name: format!("berth-test-{id}-{n}"),
            host_ip,
            ns_ip,
            host_if: format!("bt{id}x{n}h"),
            ns_if: ns_if.clone(),
        };
        ip(&["netns", "add", &netns.name]);
        // From here on, dropping cleans up even if a later step fails.
        ip(&["link", "add", &netns.host_if, "type", "veth", "peer", "name", &ns_if]);
        ip(&["link", "set", &ns_if, "netns", &netns.name]);
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &netns.host_if]);
        ip(&["link", "set", &netns.host_if, "up"]);
        ip(&["-n", &netns.name, "addr", "add", &format!("{ns_ip}/30"), "dev", &ns_if]);
        ip(&["-n", &netns.name, "link", "set", &ns_if, "up"]);
        ip(&["-n", &netns.name, "link", "set", "lo", "up"]);
        netns
    }

    /// `cmd` run inside the namespace (`ip netns exec`, which execs it: the child's pid is the
    /// program's), with the same arguments, environment changes and directory.
    pub fn wrap(&self, cmd: &Command) -> Command {
        let mut inside = Command::new("ip");
        inside.args(["netns", "exec", &self.name]).arg(cmd.get_program()).args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => inside.env(k, v),
                None => inside.env_remove(k),
            };
        }
        if let Some(dir) = cmd.get_current_dir() {
            inside.current_dir(dir);
        }
        inside
    }

    /// `program args` inside the namespace with exactly `env` as its environment, as a
    /// container gets only what its spec gives it.
    pub fn command_with_only(
        &self,
        program: &std::path::Path,
        args: &[String],
        env: &[(String, String)],
    ) -> Command {
        let mut inside = Command::new("ip");
        inside
            .args(["netns", "exec", &self.name])
            .arg(program)
            .args(args)
            .env_clear()
            .envs(env.iter().cloned());
        inside
    }

    /// The address `port` of the namespace has, seen from the host.
    pub fn addr(&self, port: u16) -> std::net::SocketAddr {
        std::net::SocketAddr::from((self.ns_ip, port))
    }

    /// From now on every packet between the namespace and the host is dropped — no RST, no
    /// answer — as on a node that died or lost its network; the namespace's own loopback keeps
    /// working. netem's 100% loss on both ends of the veth where the kernel has netem, else
    /// DROP rules inside the namespace (iptables).
    pub fn blackhole(&self) {
        let netem = |ns: &[&str], dev: &str| {
            Command::new("tc")
                .args(ns)
                .args(["qdisc", "add", "dev", dev, "root", "netem", "loss", "100%"])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if netem(&[], &self.host_if) && netem(&["-n", &self.name], &self.ns_if) {
            return;
        }
        for (chain, dir) in [("INPUT", "-i"), ("OUTPUT", "-o")] {
            let out = Command::new("ip")
                .args(["netns", "exec", &self.name, "iptables", "-A", chain, "!", dir, "lo", "-j", "DROP"])
                .output()
                .unwrap_or_else(|e| panic!("cannot run ip: {e}"));
            assert!(
                out.status.success(),
                "the kernel has no netem and iptables failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting one end of the pair deletes both; the namespace goes with its last process.
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}
