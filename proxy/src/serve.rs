//! Serving a listener, for every listener of the sidecar: the accept loop, one task and one
//! span per connection, each connection's graceful shutdown, and a drain that waits for them.
//!
//! [`serve`] accepts until its `stop` future resolves. Each connection is handed a [`Closing`]
//! that resolves once the listener stops; [`http`] drives a hyper connection and shuts it down
//! gracefully when a close future resolves (HTTP/1.1: after the response in progress; HTTP/2:
//! GOAWAY, streams in progress finish). After `stop`, `serve` waits — up to a grace period —
//! for every connection to end (model: linkerd2-proxy's `serve` and its drain watch).
//!
//! What makes a connection close earlier than its listener (the inbound drain's phases) is the
//! caller's: it passes its own close future to [`http`], raced with [`Closing::requested`].

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use hyper_util::server::graceful::GracefulConnection;
use prometheus::IntGauge;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::Instrument;

/// The first pause after a failed accept (out of file descriptors and the like); it doubles
/// up to [`MAX_ACCEPT_BACKOFF`] while accepts keep failing, so a full table is not spun on.
const FIRST_ACCEPT_BACKOFF: Duration = Duration::from_millis(5);
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Tells one connection that its listener is stopping.
#[derive(Clone, Debug)]
pub struct Closing(watch::Receiver<bool>);

impl Closing {
    /// Resolves once the listener stops.
    pub async fn requested(&mut self) {
        // An error means the listener is gone: stopping all the same.
        let _ = self.0.wait_for(|stopping| *stopping).await;
    }
}

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
/// connection in a task of its own (in a span naming the listener and the peer); then asks
/// every connection to close and waits up to `grace` for them.
pub async fn serve<F, Fut>(
    name: &'static str,
    listener: TcpListener,
    stop: impl Future<Output = ()>,
    grace: Duration,
    mut connection: F,
) -> Stopped
where
    F: FnMut(TcpStream, SocketAddr, Closing) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (stopping, closing) = watch::channel(false);
    // Each connection's task holds a receiver of `alive` until it ends: the drain waits for
    // the channel to close. (Not the `Closing` receiver: the connection may let go of that
    // once it started closing, before it is done.)
    let (alive, token) = watch::channel(());
    let mut backoff = FIRST_ACCEPT_BACKOFF;
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = FIRST_ACCEPT_BACKOFF;
                let _ = stream.set_nodelay(true);
                let span = tracing::debug_span!("conn", listener = name, peer = %peer);
                let (conn, token) = (connection(stream, peer, Closing(closing.clone())), token.clone());
                tokio::spawn(
                    async move {
                        conn.await;
                        drop(token);
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
    drop((listener, closing, token));
    let _ = stopping.send(true);
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

/// Drives one HTTP connection to its end, shutting it down gracefully once `close` resolves.
pub async fn http<C>(conn: C, close: impl Future<Output = ()>)
where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    tokio::pin!(conn);
    tokio::pin!(close);
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = &mut close, if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

#[cfg(test)]
mod tests;
