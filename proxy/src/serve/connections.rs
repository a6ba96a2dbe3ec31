//! Each open connection's shared state, and the set of a listener's open connections.
//!
//! A connection's task checks [`Connection`] on every wake, so it takes no lock: a close is an
//! atomic flag and a waker. The set ([`Connections`]) is locked only when a connection opens or
//! ends, when a listener or the drain asks many of them to close at once, and when the idle
//! sweep looks for HTTP/1.1 connections that started no request for a while.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Context;
use std::time::Duration;

use futures_util::task::AtomicWaker;

/// One open connection, as its layers and its listener see it.
#[derive(Debug, Default)]
pub struct Connection {
    /// 0 (open), [`CLOSE`] or [`ABORT`]; only ever raised.
    state: AtomicU8,
    waker: AtomicWaker,
    h2: AtomicBool,
    used: AtomicBool,
    /// Requests started on it (wrapping) and those not finished: what the idle sweep reads.
    started: AtomicU32,
    active: AtomicU32,
    /// `started` as the last sweep saw it, and how many sweeps in a row found it idle (only
    /// the sweep writes these).
    swept: AtomicU32,
    idle_sweeps: AtomicU32,
}

/// A request on a connection, from its head until its response body ends or is dropped.
#[derive(Debug)]
pub struct Active(Arc<Connection>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Release);
    }
}

impl Connection {
    /// Asks the connection to shut down gracefully: HTTP/1.1 after the response in progress
    /// (at once if idle), HTTP/2 with GOAWAY while its streams finish.
    pub fn close(&self) {
        self.raise(CLOSE);
    }

    /// Drops the connection without waiting for it: for one the idle sweep asked to close
    /// that did not (HTTP/1.1 waits for a request head that was begun, however slowly it comes).
    fn abort(&self) {
        self.raise(ABORT);
    }

    fn raise(&self, to: u8) {
        if self.state.fetch_max(to, Ordering::AcqRel) < to {
            self.waker.wake();
        }
    }

    /// Notes a request on the connection.
    pub fn request(&self, h2: bool) {
        if h2 {
            self.h2.store(true, Ordering::Relaxed);
        }
        self.used.store(true, Ordering::Relaxed);
    }

    /// A request starts on the connection: it is not idle until the returned guard drops.
    pub fn start(self: &Arc<Self>) -> Active {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
        Active(self.clone())
    }

    /// For the sweep: how many sweeps in a row, this one included, found the connection idle —
    /// no request started since the last sweep and none in progress. HTTP/2 connections are
    /// never idle here (their peers keep them, and PINGs find dead ones).
    fn sweep(&self) -> u32 {
        let started = self.started.load(Ordering::Relaxed);
        let new = self.swept.swap(started, Ordering::Relaxed) != started;
        if new || self.is_h2() || self.active.load(Ordering::Acquire) > 0 {
            self.idle_sweeps.store(0, Ordering::Relaxed);
            return 0;
        }
        self.idle_sweeps.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Whether a request is in progress on it.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire) > 0
    }

    /// Whether it has carried an HTTP/2 request.
    pub fn is_h2(&self) -> bool {
        self.h2.load(Ordering::Relaxed)
    }

    /// Whether it has carried a request at all.
    pub fn is_used(&self) -> bool {
        self.used.load(Ordering::Relaxed)
    }

    /// What was asked of the connection so far (0, [`CLOSE`], [`ABORT`]); unless it
    /// is [`ABORT`], the task is woken when more is asked.
    pub(super) fn poll_state(&self, cx: &mut Context<'_>) -> u8 {
        let state = self.state.load(Ordering::Acquire);
        if state == ABORT {
            return state;
        }
        self.waker.register(cx.waker());
        self.state.load(Ordering::Acquire)
    }
}

/// Sweeps per idle timeout: a connection idle for the timeout is closed within a third more,
/// and dropped at the next sweep if it has not ended by then.
const SWEEPS: u32 = 3;

/// A connection's state as its task reads it: open (0), asked to close gracefully, or to end now.
pub(super) const CLOSE: u8 = 1;
pub(super) const ABORT: u8 = 2;

/// A listener's open connections.
#[derive(Debug, Default)]
pub struct Connections {
    open: Mutex<HashMap<u64, Arc<Connection>>>,
    next: AtomicU64,
    idle: Option<Duration>,
}

impl Connections {
    /// A set whose HTTP/1.1 connections close once they have started no request for `idle`
    /// (to `idle` × 4/3): a keep-alive connection left open, and one that never finishes its
    /// request head (a slow-loris). hyper's own header-read timeout would do this with a timer
    /// armed for every request; one sweep of the set every `idle`/3 costs a request nothing.
    /// Requests count from [`Connection::start`] (the tracking layer calls it).
    pub fn closing_idle(idle: Duration) -> Connections {
        Connections { idle: Some(idle), ..Connections::default() }
    }

    /// How often [`Connections::sweep`] should run, if this set closes idle connections.
    pub(super) fn sweep_every(&self) -> Option<Duration> {
        self.idle.map(|d| (d / SWEEPS).max(Duration::from_millis(1)))
    }

    /// Closes the connections the last [`SWEEPS`] sweeps found idle.
    pub(super) fn sweep(&self) {
        for conn in self.lock().values() {
            match conn.sweep() {
                n if n > SWEEPS => conn.abort(),
                SWEEPS => conn.close(),
                _ => {}
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Connection>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new connection, in the set until the returned guard drops.
    pub(super) fn add(self: &Arc<Self>) -> Member {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Connection::default());
        self.lock().insert(id, conn.clone());
        Member { id, set: self.clone(), conn }
    }

    /// Asks every open connection for which `which` holds to close.
    pub fn close_where(&self, which: impl Fn(&Connection) -> bool) {
        for conn in self.lock().values().filter(|c| which(c)) {
            conn.close();
        }
    }

    /// How many connections are open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A connection's place in its listener's set; leaves it when dropped.
#[derive(Debug)]
pub(super) struct Member {
    id: u64,
    set: Arc<Connections>,
    pub(super) conn: Arc<Connection>,
}

impl Drop for Member {
    fn drop(&mut self) {
        self.set.lock().remove(&self.id);
    }
}
