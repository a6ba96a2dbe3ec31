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

use futures_util::FutureExt;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
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
                // `map`, not an async block awaiting `conn`: that would hold the connection's
                // future twice (the captured value and the awaited one) in every task.
                tokio::spawn(conn.map(move |()| drop((member, token))).instrument(span));
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

/// The HTTP server settings of the request listeners (inbound, outbound, the gateway), made
/// once: every connection borrows them instead of building its own. No header-read timer per
/// request: the listeners' idle sweep closes what it would ([`Connections::closing_idle`]).
pub fn requests_builder() -> &'static auto::Builder<TokioExecutor> {
    static BUILDER: std::sync::OnceLock<auto::Builder<TokioExecutor>> = std::sync::OnceLock::new();
    BUILDER.get_or_init(|| {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new()).header_read_timeout(None);
        builder.http2().timer(TokioTimer::new());
        builder
    })
}

/// Drives one HTTP connection to its end, shutting it down gracefully once `this` is asked to
/// close, and dropping it if it is asked to end now. A named future rather than an `async fn`,
/// so that the connection is held once, in place (an `async fn` keeps its argument and the
/// pinned copy both: every connection's task would carry the hyper connection twice).
pub fn http<C>(conn: C, this: &Connection) -> Serving<'_, C>
where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    Serving { conn, this, closing: false }
}

pin_project_lite::pin_project! {
    /// An HTTP connection being served ([`http`]).
    pub struct Serving<'a, C> {
        #[pin]
        conn: C,
        this: &'a Connection,
        closing: bool,
    }
}

impl<C> Future for Serving<'_, C>
where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    type Output = ();

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let mut me = self.project();
        // One check of an atomic per wake: the connection's own I/O wakes it far more often
        // than anything asks it to close.
        match me.this.poll_state(cx) {
            connections::ABORT => {
                tracing::debug!("connection dropped: it stayed idle after it was asked to close");
                return Poll::Ready(());
            }
            connections::CLOSE if !*me.closing => {
                me.conn.as_mut().graceful_shutdown();
                *me.closing = true;
            }
            _ => {}
        }
        if let Err(e) = std::task::ready!(me.conn.poll(cx)) {
            tracing::debug!(error = %e, "connection ended with an error");
        }
        Poll::Ready(())
    }
}

#[cfg(test)]
mod tests;
