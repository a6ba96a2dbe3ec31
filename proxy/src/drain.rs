//! The drain: from the first SIGTERM (or `POST /drain`) to the moment the sidecar may exit.
//!
//! [`Drain`] is shared by every connection and request. Requests report their arrival and
//! hold an [`InFlight`] guard until their response body ends. [`run`] moves the drain through
//! its [`Phase`]s: `Draining` at once (responses carry the read-only signal, HTTP/2 connections
//! get GOAWAY), `Closing` after drain-min (idle keep-alive connections are closed, each busy one
//! after its response), and `Done` once no request has arrived for drain-quiet and none is in
//! flight — or, forced, at drain-timeout or on a second signal. [`heed`] counts the requests
//! of peers that kept coming after they were sent the read-only signal.

pub mod heed;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::Timing;

/// Where the drain is. Ordered: each phase implies the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// No drain yet.
    Running,
    /// Deregistered; still accepting, every response carries the read-only signal.
    Draining,
    /// drain-min is over: connections close after their next response, idle ones now.
    Closing,
    /// The drain is over; `forced` when it ended by timeout or a second signal.
    Done { forced: bool },
}

impl Phase {
    fn to_u8(self) -> u8 {
        match self {
            Phase::Running => 0,
            Phase::Draining => 1,
            Phase::Closing => 2,
            Phase::Done { forced: false } => 3,
            Phase::Done { forced: true } => 4,
        }
    }

    fn from_u8(n: u8) -> Phase {
        match n {
            0 => Phase::Running,
            1 => Phase::Draining,
            2 => Phase::Closing,
            3 => Phase::Done { forced: false },
            _ => Phase::Done { forced: true },
        }
    }
}

/// Shared drain state.
#[derive(Debug)]
pub struct Drain {
    /// For those who wait on a change (connections, listeners).
    phase: watch::Sender<Phase>,
    /// The same phase for every request and response to read without the watch's lock.
    now: AtomicU8,
    epoch: Instant,
    started_at: AtomicU64,
    last_request: AtomicU64,
    in_flight: AtomicU64,
    received_while_draining: AtomicU64,
    /// Microseconds from the drain's start to the deregistration, plus one (0: not yet).
    deregistered_after: AtomicU64,
    force: AtomicBool,
    force_notify: tokio::sync::Notify,
    heed: heed::Heed,
}

/// What `/state` shows of a drain in progress.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Progress {
    /// Milliseconds since the drain started.
    pub elapsed_ms: u64,
    /// Requests received since the drain started.
    pub received_while_draining: u64,
    /// Whether drain-min is over.
    pub closing: bool,
    /// Milliseconds from the drain's start to the deregistration, once done (microsecond
    /// precision).
    pub deregistered_after_ms: Option<f64>,
    /// Requests from peers that had been sent the read-only signal (consumers without a
    /// sidecar, or with a cached instance list): served, but a shorter drain would lose them.
    pub signal_ignored: u64,
    /// How many peers sent those.
    pub peers_ignoring_signal: u64,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            phase: watch::channel(Phase::Running).0,
            now: AtomicU8::new(Phase::Running.to_u8()),
            epoch: Instant::now(),
            started_at: AtomicU64::new(0),
            last_request: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            received_while_draining: AtomicU64::new(0),
            deregistered_after: AtomicU64::new(0),
            force: AtomicBool::new(false),
            force_notify: tokio::sync::Notify::new(),
            heed: heed::Heed::default(),
        }
    }
}

impl Drain {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Starts the drain; `false` if it had already started.
    pub fn start(&self, reason: &str) -> bool {
        let started = self.phase.send_if_modified(|p| {
            let first = *p == Phase::Running;
            if first {
                *p = Phase::Draining;
                self.now.store(Phase::Draining.to_u8(), Ordering::SeqCst);
            }
            first
        });
        if started {
            self.started_at.store(self.now(), Ordering::SeqCst);
            tracing::info!(%reason, in_flight = self.in_flight(), "drain started");
        }
        started
    }

    /// Ends the drain at once (a second signal).
    pub fn force(&self, reason: &str) {
        tracing::warn!(%reason, in_flight = self.in_flight(), "drain forced");
        self.force.store(true, Ordering::SeqCst);
        self.force_notify.notify_one();
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.now.load(Ordering::SeqCst))
    }

    /// Moves to `phase`: the atomic first, so no one woken by the watch reads the old one.
    fn set(&self, phase: Phase) {
        self.now.store(phase.to_u8(), Ordering::SeqCst);
        self.phase.send_replace(phase);
    }

    /// Whether responses must carry the read-only signal.
    pub fn is_draining(&self) -> bool {
        self.phase() >= Phase::Draining
    }

    /// Follows the phase.
    pub fn subscribe(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// Requests whose response has not finished.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Notes a request's arrival; the guard counts it in flight until dropped.
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.last_request.store(self.now(), Ordering::SeqCst);
        if self.is_draining() {
            self.received_while_draining.fetch_add(1, Ordering::Relaxed);
        }
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// Time since the drain started, if it has.
    pub fn elapsed(&self) -> Option<Duration> {
        (self.phase() >= Phase::Draining)
            .then(|| Duration::from_micros(self.now().saturating_sub(self.started_at.load(Ordering::SeqCst))))
    }

    /// Progress for `/state`, if draining.
    pub fn progress(&self) -> Option<Progress> {
        let elapsed = self.elapsed()?;
        Some(Progress {
            elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            received_while_draining: self.received_while_draining.load(Ordering::Relaxed),
            closing: self.phase() >= Phase::Closing,
            deregistered_after_ms: match self.deregistered_after.load(Ordering::SeqCst) {
                0 => None,
                #[allow(clippy::cast_precision_loss)]
                us => Some((us - 1) as f64 / 1000.0),
            },
            signal_ignored: self.heed.ignored(),
            peers_ignoring_signal: self.heed.ignoring_peers(),
        })
    }

    /// Who was sent the read-only signal, and who kept coming.
    pub fn heed(&self) -> &heed::Heed {
        &self.heed
    }

    /// Notes that the instance is out of the registry; returns the time since the drain began.
    pub fn deregistered(&self) -> Option<Duration> {
        let elapsed = self.elapsed()?;
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX - 1);
        self.deregistered_after.store(us + 1, Ordering::SeqCst);
        Some(elapsed)
    }

    /// Requests received since the drain started.
    pub fn received_while_draining(&self) -> u64 {
        self.received_while_draining.load(Ordering::Relaxed)
    }

    fn quiet_for(&self) -> Duration {
        Duration::from_micros(self.now().saturating_sub(self.last_request.load(Ordering::SeqCst)))
    }

    /// Resolves once the drain was forced (a second signal).
    pub async fn forced(&self) {
        while !self.force.load(Ordering::SeqCst) {
            self.force_notify.notified().await;
        }
    }
}

/// A request in flight; dropped when its response body has ended (or was abandoned).
#[derive(Debug)]
pub struct InFlight(Arc<Drain>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How often the end of a drain is looked for; the drain's own timers are much longer.
const TICK: Duration = Duration::from_millis(20);

/// Waits for the drain to start, runs it through its phases and returns when it is `Done`.
pub async fn run(drain: &Drain, timing: Timing, lifecycle: bool) -> Phase {
    let mut phase = drain.subscribe();
    if phase.wait_for(|p| *p >= Phase::Draining).await.is_err() {
        return Phase::Done { forced: true };
    }
    if !lifecycle {
        // --no-lifecycle: what a process without berth does on SIGTERM — stop at once.
        let ended = Phase::Done { forced: false };
        drain.set(ended);
        return ended;
    }
    let ended = tokio::select! {
        forced = run_phases(drain, timing) => Phase::Done { forced },
        () = tokio::time::sleep(timing.drain_timeout) => {
            tracing::warn!(in_flight = drain.in_flight(), timeout = %humantime::format_duration(timing.drain_timeout), "drain timed out");
            Phase::Done { forced: true }
        }
        () = drain.forced() => Phase::Done { forced: true },
    };
    drain.set(ended);
    ended
}

/// drain-min, then the quiet period; `false` when the drain ended cleanly.
async fn run_phases(drain: &Drain, timing: Timing) -> bool {
    tokio::time::sleep(timing.drain_min).await;
    drain.set(Phase::Closing);
    tracing::info!(in_flight = drain.in_flight(), "drain-min over; closing connections as they finish");
    loop {
        let quiet = drain.quiet_for();
        if drain.in_flight() == 0 && quiet >= timing.drain_quiet {
            return false;
        }
        tokio::time::sleep(timing.drain_quiet.saturating_sub(quiet).clamp(TICK, timing.drain_quiet)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(min: u64, quiet: u64, timeout: u64) -> Timing {
        Timing {
            register_delay: Duration::ZERO,
            warmup: Duration::ZERO,
            drain_min: Duration::from_millis(min),
            drain_quiet: Duration::from_millis(quiet),
            drain_timeout: Duration::from_millis(timeout),
        }
    }

    #[test]
    fn every_phase_survives_its_atomic_form() {
        for p in [
            Phase::Running,
            Phase::Draining,
            Phase::Closing,
            Phase::Done { forced: false },
            Phase::Done { forced: true },
        ] {
            assert_eq!(Phase::from_u8(p.to_u8()), p);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ends_after_drain_min_and_quiet() {
        let drain = Arc::new(Drain::default());
        assert!(drain.start("test"));
        assert!(!drain.start("again"));
        let t0 = tokio::time::Instant::now();
        let ended = run(&drain, timing(1000, 200, 10_000), true).await;
        assert_eq!(ended, Phase::Done { forced: false });
        assert!(t0.elapsed() >= Duration::from_millis(1000), "{:?}", t0.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn waits_for_in_flight_then_times_out() {
        let drain = Arc::new(Drain::default());
        let guard = drain.request();
        drain.start("test");
        let ended = run(&drain, timing(100, 100, 2_000), true).await;
        assert_eq!(ended, Phase::Done { forced: true });
        assert_eq!(drain.in_flight(), 1);
        drop(guard);
        assert_eq!(drain.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_finishing_ends_the_drain() {
        let drain = Arc::new(Drain::default());
        let guard = drain.request();
        drain.start("test");
        let d = drain.clone();
        let finisher = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            drop(guard);
            drop(d.request());
        });
        let ended = run(&drain, timing(100, 100, 5_000), true).await;
        assert_eq!(ended, Phase::Done { forced: false });
        finisher.await.unwrap();
        assert_eq!(drain.received_while_draining(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_request_restarts_the_quiet_period() {
        let drain = Arc::new(Drain::default());
        drain.start("test");
        let t0 = tokio::time::Instant::now();
        let d = drain.clone();
        let late = tokio::spawn(async move {
            // drain-min 1 s, quiet 500 ms. A request at 0.8 s keeps the drain past drain-min
            // (until 1.3 s); the late one at 1.2 s restarts the quiet period: the end is 1.7 s.
            tokio::time::sleep(Duration::from_millis(800)).await;
            drop(d.request());
            tokio::time::sleep(Duration::from_millis(400)).await;
            assert_eq!(d.phase(), Phase::Closing, "the second request comes after drain-min");
            drop(d.request());
        });
        let ended = run(&drain, timing(1000, 500, 60_000), true).await;
        let at = t0.elapsed();
        late.await.unwrap();
        assert_eq!(ended, Phase::Done { forced: false });
        // Virtual time, so exact: the late request plus the quiet period.
        assert!(at >= Duration::from_millis(1700), "ended at {at:?}, before the late request's quiet period");
        assert_eq!(drain.received_while_draining(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_signal_forces() {
        let drain = Arc::new(Drain::default());
        let _busy = drain.request();
        drain.start("first");
        let d = drain.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            d.force("second");
        });
        assert_eq!(run(&drain, timing(100, 100, 60_000), true).await, Phase::Done { forced: true });
    }
}
