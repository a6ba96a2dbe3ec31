//! The app pool: the sidecar's connections to the app on 127.0.0.1, bounded.
//!
//! A burst of multiplexed streams (sidecar-to-sidecar traffic is one HTTP/2 connection per
//! instance) must not become a burst of connections: an app's accept backlog is often small
//! (Python's `http.server`: 5), and once it is full the kernel drops further SYNs, which a
//! client only sends again after a second. So the pool
//!
//! - lends at most `max_connections` connections at a time (on HTTP/1.1 one carries one
//!   request; on HTTP/2 it is the number of streams), and a request waits for one — a free
//!   pooled one or a new one — up to `queue_timeout` instead of failing;
//! - opens at most `max_connecting` new connections at once;
//! - tries a connect for a short while only, and retries a connect that timed out while the
//!   health monitor says the app is up: its backlog was full, it is not dead. A refused
//!   connect is retried only a few times within tens of milliseconds (a backlog overflow
//!   answered with a reset, an app restarting at once): an app that really stopped between two
//!   health checks must still be answered for quickly. While the app is down (starting,
//!   stopping, crashed) the request fails at once with `503 app-unavailable`, so a consumer
//!   moves it elsewhere.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

use crate::config::AppProtocol;
use crate::endpoint::{self, Conn, ConnectError, Endpoint};
use crate::health::Health;

/// One connect attempt to the app. On loopback a connect completes in microseconds or its SYN
/// was dropped (a full backlog); waiting longer only waits for the kernel's one-second resend.
const CONNECT_ATTEMPT: Duration = Duration::from_millis(100);
/// The first pause between connect attempts; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_millis(100);
/// Refused connects retried (after 5, 10 and 20 ms) before the request fails.
const REFUSED_RETRIES: u32 = 3;

/// The pool's bounds and the inbound timeouts (`--app-max-connections` and the rest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppSettings {
    /// Connections (HTTP/2: streams) lent at a time.
    pub max_connections: u32,
    /// New connections opened at once.
    pub max_connecting: u32,
    /// How long a request may wait for a connection.
    pub queue_timeout: Duration,
    /// Until the app's response headers; `None` for no limit.
    pub request_timeout: Option<Duration>,
}

/// When a request stops waiting for a connection: read from the clock only if it has to wait
/// (most requests find a free share and a pooled connection at once).
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    wait: Duration,
    at: Option<Instant>,
}

impl Deadline {
    /// `wait` from the first time it is asked for.
    pub fn after(wait: Duration) -> Deadline {
        Deadline { wait, at: None }
    }

    fn at(&mut self) -> Instant {
        *self.at.get_or_insert_with(|| Instant::now() + self.wait)
    }
}

/// Why the app could not be given a request.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// Every connection stayed busy for the whole wait.
    #[error("all {max} connections to the app stayed busy for {}", humantime::format_duration(*waited))]
    Busy { max: u32, waited: Duration },
    /// The app refused or did not take connections.
    #[error("{source}{}", retried_note(*attempts))]
    Connect {
        #[source]
        source: ConnectError,
        attempts: u32,
    },
}

fn retried_note(attempts: u32) -> String {
    if attempts > 1 {
        format!(" (after {attempts} attempts while the app's health check passed)")
    } else {
        String::new()
    }
}

/// The app's endpoint with its bounds.
#[derive(Debug)]
pub struct AppPool {
    pub endpoint: Arc<Endpoint>,
    settings: AppSettings,
    lent: Arc<Semaphore>,
    connecting: Semaphore,
    health: watch::Receiver<Health>,
}

impl AppPool {
    /// A pool for the app at `addr`; `health` says whether a failed connect is worth retrying.
    pub fn new(
        addr: SocketAddr,
        protocol: AppProtocol,
        settings: AppSettings,
        health: watch::Receiver<Health>,
    ) -> Self {
        let h2 = protocol == AppProtocol::H2c;
        let endpoint = Arc::new(Endpoint::with_idle_timeout(addr, h2, 0, endpoint::APP_IDLE_TIMEOUT));
        AppPool {
            endpoint,
            settings,
            lent: Arc::new(Semaphore::new(to_permits(settings.max_connections))),
            connecting: Semaphore::new(to_permits(settings.max_connecting)),
            health,
        }
    }

    pub fn settings(&self) -> AppSettings {
        self.settings
    }

    /// A share of the pool: held while a request uses a connection (until its response body
    /// ends), waited for up to the queue timeout.
    pub async fn lend(&self, deadline: &mut Deadline) -> Result<OwnedSemaphorePermit, Unavailable> {
        // The common case, without a timer: a share is free.
        if let Ok(permit) = self.lent.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let busy =
            || Unavailable::Busy { max: self.settings.max_connections, waited: self.settings.queue_timeout };
        match tokio::time::timeout_at(deadline.at(), self.lent.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; treat it as busy all the same.
            Ok(Err(_)) | Err(_) => Err(busy()),
        }
    }

    /// A connection for one request: a pooled one, else a new one, retrying connects while
    /// the app is healthy until `deadline`.
    pub async fn checkout(&self, deadline: &mut Deadline) -> Result<Conn, Unavailable> {
        if let Some(conn) = self.endpoint.pooled().await {
            return Ok(conn);
        }
        let deadline = deadline.at();
        let mut backoff = FIRST_BACKOFF;
        let (mut attempts, mut refused) = (0, 0);
        loop {
            let Ok(Ok(_opening)) = tokio::time::timeout_at(deadline, self.connecting.acquire()).await else {
                return Err(Unavailable::Busy {
                    max: self.settings.max_connections,
                    waited: self.settings.queue_timeout,
                });
            };
            // Another request may have finished with a connection while this one waited.
            if let Some(conn) = self.endpoint.pooled().await {
                return Ok(conn);
            }
            attempts += 1;
            let attempt = CONNECT_ATTEMPT.min(deadline.saturating_duration_since(Instant::now()));
            let started = Instant::now();
            let error = match self.endpoint.open(attempt).await {
                Ok(conn) => return Ok(conn),
                Err(e) => e,
            };
            // A failure before the attempt's time was up was an answer (refused), not silence.
            if started.elapsed() < attempt {
                refused += 1;
            }
            if !self.app_healthy() || refused > REFUSED_RETRIES || Instant::now() + backoff >= deadline {
                return Err(Unavailable::Connect { source: error, attempts });
            }
            tracing::debug!(app = %self.endpoint.addr, error = %error.detail, attempts, "connect to the healthy app failed; retrying");
            drop(_opening);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Whether the app's own check passes (dependencies aside).
    fn app_healthy(&self) -> bool {
        self.health.borrow().app
    }
}

fn to_permits(n: u32) -> usize {
    usize::try_from(n).unwrap_or(Semaphore::MAX_PERMITS).min(Semaphore::MAX_PERMITS)
}

#[cfg(test)]
mod tests;
