//! How every berth program is asked to stop: SIGTERM (the kubelet, `kill`) or SIGINT (Ctrl-C),
//! as futures.
//!
//! The sidecar treats the first signal as "drain" and the next as "force"; the injector and
//! admin stop gracefully on the first. Each asks [`Signals::next`] in a loop or waits once on
//! [`requested`].

use tokio::signal::unix::{Signal, SignalKind, signal};

/// SIGTERM and SIGINT, caught from creation on (they no longer end the process by default).
#[derive(Debug)]
pub struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Installs the handlers.
    pub fn new() -> std::io::Result<Signals> {
        Ok(Signals { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
    }

    /// The next signal; its name.
    pub async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Resolves at the first SIGTERM or SIGINT with its name. If the handlers cannot be installed
/// it logs why and never resolves: the program then runs until it is killed.
pub async fn requested() -> &'static str {
    match Signals::new() {
        Ok(mut signals) => signals.next().await,
        Err(e) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            std::future::pending().await
        }
    }
}
