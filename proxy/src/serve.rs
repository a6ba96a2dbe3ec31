//! Serving a listener, for every listener of the sidecar: the accept loop, one task and one
//! span per connection, each connection's graceful shutdown, and a drain that waits for them.
//!
//! [`serve`] accepts until its `stop` future resolves. Each connection is a member of the
//! listener's [`Connections`] and gets its [`Connection`]: whoever decides it should close —
//! the listener stopping, the inbound drain, a response that carried the read-only signal —
//! calls [`Connection::close`], and [`http`], which drives the hyper connection, shuts it down
//! gracefully (HTTP/1.1: after the response in progress; HTTP/2: GOAWAY, streams in progress
//! finish). After `stop`, `serve` asks every connection to close and waits — up to a grace
//! period — for them to end (model: linkerd2-proxy's `serve` and its drain watch).

mod connections;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use hyper_util::server::graceful::GracefulConnection;
use prometheus::IntGauge;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::Instrument;

pub use self::connections::{Active, Connection, Connections};

/// The first pause after a failed accept (out of file descriptors and the like); it doubles
/// up to [`MAX_ACCEPT_BACKOFF`] while accepts keep failing, so a full table is not spun on.
const FIRST_ACCEPT_BACKOFF: Duration = Duration::from_millis(5);
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// How long the request listeners keep an HTTP/1.1 connection that starts no request (idle
/// keep-alive, or a request head that never ends) — what hyper's header-read timeout gave them
/// before ([`Connections::closing_idle`]).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Counts one open connection in a gauge for as long as it lives: a drop guard, so a
/// connection whose task is cancelled is counted out too.
#[derive(Debug)]
pub struct Open(IntGauge);

impl Open {
    pub fn new(gauge: IntGauge) -> Open {
        gauge.inc();
        Open(gauge)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// How a listener ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stopped {
    /// Connections still open when the grace period ran out (they are left to the runtime).
    pub abandoned: usize,
}

/// Accepts on `listener` until `stop` resolves, running `connection` for each accepted
/// connection in a task of its own (in a span naming the listener and the peer), each a member
/// of `connections`; then asks every connection to close and waits up to `grace` for them.
pub async fn serve<F, Fut>(
    name: &'static str,
    listener: TcpListener,
    stop: impl Future<Output = ()>,
    grace: Duration,
    connections: Arc<Connections>,
    mut connection: F,
) -> Stopped
where
    F: FnMut(TcpStream, SocketAddr, Arc<Connection>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    // Each connection's task holds a receiver of `alive` until it ends: the drain waits for
    // the channel to close.
    let (alive, token) = watch::channel(());
    let mut backoff = FIRST_ACCEPT_BACKOFF;
    let mut sweep = connections.sweep_every().map(|every| {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks
    });
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => break,
            () = async {
                if let Some(ticks) = sweep.as_mut() {
                    ticks.tick().await;
                }
            }, if sweep.is_some() => {
                connections.sweep();
                continue;
            }
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = FIRST_ACCEPT_BACKOFF;
                let _ = stream.set_nodelay(true);
                // A member before its task runs: a stop right after this accept reaches it.
                let member = connections.add();
                let conn = connection(stream, peer, member.conn.clone());
                let token = token.clone();
                let span = tracing::debug_span!("conn", listener = name, peer = %peer);
                tokio::spawn(
                    async move {
                        conn.await;
                        drop((member, token));
                    }
                    .instrument(span),
                );
            }
            Err(e) => {
                tracing::warn!(listener = name, error = %e, pause = ?backoff, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
            }
        }
    }
    drop((listener, token));
    connections.close_where(|_| true);
    let abandoned = match tokio::time::timeout(grace, alive.closed()).await {
        Ok(()) => 0,
        Err(_) => alive.receiver_count(),
    };
    if abandoned > 0 {
        tracing::warn!(listener = name, open = abandoned, grace = ?grace, "connections still open after the grace period");
    } else {
        tracing::debug!(listener = name, "listener closed; every connection ended");
    }
    Stopped { abandoned }
}

/// Drives one HTTP connection to its end, shutting it down gracefully once `this` is asked to
/// close.
pub async fn http<C>(conn: C, this: &Connection)
where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    tokio::pin!(conn);
    let mut closing = false;
    // One check of an atomic per wake: the connection's own I/O wakes it far more often than
    // anything asks it to close.
    let result = std::future::poll_fn(|cx| {
        match this.poll_state(cx) {
            connections::ABORT => return Poll::Ready(None),
            connections::CLOSE if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ => {}
        }
        conn.as_mut().poll(cx).map(Some)
    })
    .await;
    match result {
        Some(Err(e)) => tracing::debug!(error = %e, "connection ended with an error"),
        None => tracing::debug!("connection dropped: it stayed idle after it was asked to close"),
        Some(Ok(())) => {}
    }
}

#[cfg(test)]
mod tests;
