//! Each open connection's shared state, and the set of a listener's open connections.
//!
//! A connection's task checks [`Connection`] on every wake, so it takes no lock: a close is an
//! atomic flag and a waker. The set ([`Connections`]) is locked only when a connection opens or
//! ends, and when a listener or the drain asks many of them to close at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Context;

use futures_util::task::AtomicWaker;

/// One open connection, as its layers and its listener see it.
#[derive(Debug, Default)]
pub struct Connection {
    close: AtomicBool,
    waker: AtomicWaker,
    h2: AtomicBool,
    used: AtomicBool,
}

impl Connection {
    /// Asks the connection to shut down gracefully: HTTP/1.1 after the response in progress
    /// (at once if idle), HTTP/2 with GOAWAY while its streams finish.
    pub fn close(&self) {
        self.close.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Notes a request on the connection.
    pub fn request(&self, h2: bool) {
        if h2 {
            self.h2.store(true, Ordering::Relaxed);
        }
        self.used.store(true, Ordering::Relaxed);
    }

    /// Whether it has carried an HTTP/2 request.
    pub fn is_h2(&self) -> bool {
        self.h2.load(Ordering::Relaxed)
    }

    /// Whether it has carried a request at all.
    pub fn is_used(&self) -> bool {
        self.used.load(Ordering::Relaxed)
    }

    /// Whether a close was asked for; if not, the task is woken when one is.
    pub(super) fn poll_close(&self, cx: &mut Context<'_>) -> bool {
        if self.close.load(Ordering::Acquire) {
            return true;
        }
        self.waker.register(cx.waker());
        self.close.load(Ordering::Acquire)
    }
}

/// A listener's open connections.
#[derive(Debug, Default)]
pub struct Connections {
    open: Mutex<HashMap<u64, Arc<Connection>>>,
    next: AtomicU64,
}

impl Connections {
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
