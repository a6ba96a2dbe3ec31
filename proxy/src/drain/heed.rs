//! Who heeds the read-only signal: while the sidecar drains, a request from a peer that was
//! sent the signal more than [`GRACE`] before did not — a consumer without a sidecar (it reads
//! no `x-berth-lifecycle`), or one whose instance list is cached (Spring Cloud LoadBalancer
//! keeps it for 35 s). Such requests are still served (the drain keeps accepting until it is
//! quiet); they are counted so that operators see who would lose requests to a shorter drain.
//!
//! A peer is an IP address (a pod); a berth consumer that was sent the signal stops at once, so
//! what reaches here after the grace is the requests it had already sent plus those of
//! consumers that cannot heed it. Kept only while draining, for at most [`MAX_PEERS`] peers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use prometheus::IntCounter;
use tokio::time::Instant;

/// How long after a peer was sent the signal its requests still count as sent before it saw
/// it (in flight on other connections, or racing the response).
pub const GRACE: Duration = Duration::from_millis(500);
/// Peers remembered at most (a drain sees its consumers, not the internet).
pub const MAX_PEERS: usize = 4096;

#[derive(Debug, Default)]
struct Peer {
    /// When it was first sent the signal.
    signalled: Option<Instant>,
    /// Whether it sent a request after that (and the grace).
    ignored: bool,
}

/// The drain's record of who was told and who kept coming.
#[derive(Debug, Default)]
pub struct Heed {
    peers: Mutex<HashMap<IpAddr, Peer>>,
    ignored: AtomicU64,
    ignoring_peers: AtomicU64,
    counter: OnceLock<IntCounter>,
}

impl Heed {
    /// Counts ignored requests into `counter` too (`berth_drain_signal_ignored_total`).
    pub fn count_into(&self, counter: IntCounter) {
        let _ = self.counter.set(counter);
    }

    /// A response carrying the signal is leaving for `peer`.
    pub fn signalled(&self, peer: IpAddr) {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if peers.len() >= MAX_PEERS && !peers.contains_key(&peer) {
            return;
        }
        peers.entry(peer).or_default().signalled.get_or_insert_with(Instant::now);
    }

    /// A request from `peer` arrived while draining; `true` if it ignored the signal.
    pub fn arrived(&self, peer: IpAddr) -> bool {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let Some(p) = peers.get_mut(&peer) else { return false };
        if p.signalled.is_none_or(|at| at.elapsed() < GRACE) {
            return false;
        }
        if !p.ignored {
            p.ignored = true;
            self.ignoring_peers.fetch_add(1, Ordering::Relaxed);
        }
        drop(peers);
        self.ignored.fetch_add(1, Ordering::Relaxed);
        if let Some(c) = self.counter.get() {
            c.inc();
        }
        true
    }

    /// Requests that arrived after their peer had been sent the signal.
    pub fn ignored(&self) -> u64 {
        self.ignored.load(Ordering::Relaxed)
    }

    /// Peers that sent such requests.
    pub fn ignoring_peers(&self) -> u64 {
        self.ignoring_peers.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_peer_ignores_the_signal_only_with_requests_after_the_grace() {
        let heed = Heed::default();
        let (told, other): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert!(!heed.arrived(told), "not told yet");
        heed.signalled(told);
        assert!(!heed.arrived(told), "already on its way when the signal left");
        tokio::time::advance(GRACE).await;
        heed.signalled(told);
        assert!(heed.arrived(told), "told a grace ago: the first signal counts, not the latest");
        assert!(heed.arrived(told));
        assert!(!heed.arrived(other), "never told");
        assert_eq!((heed.ignored(), heed.ignoring_peers()), (2, 1));
    }

    #[test]
    fn peers_are_bounded() {
        let heed = Heed::default();
        for n in 0..u32::try_from(MAX_PEERS).unwrap() + 10 {
            heed.signalled(IpAddr::from(n.to_be_bytes()));
        }
        assert_eq!(heed.peers.lock().unwrap().len(), MAX_PEERS);
    }
}
