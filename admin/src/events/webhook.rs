//! Outgoing webhooks: each event POSTed as JSON to every `--webhook URL`, in order, signed, and
//! retried with back-off while the receiver is down.
//!
//! The signature is `x-berth-signature-256: sha256=<hex>`, the HMAC-SHA256 of the exact body
//! under the `--webhook-secret` (the scheme GitHub's webhooks use, which most receivers
//! already check). `x-berth-event` carries the type and `x-berth-delivery` the event's id. An
//! answer other than 2xx, or none, is retried after 0.5 s, doubling up to 30 s, for
//! [`ATTEMPTS`] attempts; then the event is dropped (logged and counted) and the next one goes.

use std::sync::Arc;
use std::time::Duration;

use ring::hmac;
use tokio::sync::mpsc;

use super::Event;
use crate::ctl::Secret;
use crate::metrics::Metrics;

/// The signature header.
pub const SIGNATURE_HEADER: &str = berth_core::header::SIGNATURE;
/// How many times one event is tried.
pub const ATTEMPTS: u32 = 12;
/// Events waiting for one webhook at most.
pub const QUEUE: usize = 4096;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A receiver's URL. Shown (in logs, `Debug`) as its origin only: a webhook URL often holds
/// a secret in its path or query.
#[derive(Clone, PartialEq, Eq)]
pub struct Target(pub reqwest::Url);

impl Target {
    /// `scheme://host:port`.
    pub fn origin(&self) -> String {
        self.0.origin().ascii_serialization()
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/…", self.origin())
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/…", self.origin())
    }
}

/// One receiver.
#[derive(Debug)]
pub struct Webhook {
    pub url: Target,
    key: hmac::Key,
    http: reqwest::Client,
    metrics: Metrics,
}

/// `sha256=<hex>` of `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hex(hmac::sign(&key, body).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(7 + bytes.len() * 2);
    s.push_str("sha256=");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

impl Webhook {
    pub fn new(url: Target, secret: &Secret, metrics: Metrics) -> Result<Webhook, reqwest::Error> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("berth-admin/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Webhook { url, key: hmac::Key::new(hmac::HMAC_SHA256, secret.0.as_bytes()), http, metrics })
    }

    /// Delivers the queue's events one by one until the queue closes.
    pub async fn run(self, mut queue: mpsc::Receiver<Arc<Event>>) {
        while let Some(event) = queue.recv().await {
            self.deliver(&event).await;
        }
    }

    async fn deliver(&self, event: &Event) {
        let body = match serde_json::to_vec(event) {
            Ok(b) => b,
            Err(e) => return tracing::error!(id = %event.id, error = %e, "cannot serialize an event"),
        };
        let signature = hex(hmac::sign(&self.key, &body).as_ref());
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            let sent = self
                .http
                .post(self.url.0.clone())
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(berth_core::header::EVENT, event.kind)
                .header(berth_core::header::DELIVERY, &event.id)
                .header(SIGNATURE_HEADER, &signature)
                .body(body.clone())
                .send()
                .await;
            let why = match sent {
                Ok(r) if r.status().is_success() => {
                    self.metrics.webhook("delivered");
                    return;
                }
                Ok(r) => format!("answered {}", r.status().as_u16()),
                // Never the URL: it may hold a secret.
                Err(e) => crate::fleet::sidecar::describe(&e),
            };
            self.metrics.webhook("failed");
            tracing::warn!(url = %self.url, id = %event.id, attempt, error = %why, retry_in = ?backoff, "webhook delivery failed");
            if attempt < ATTEMPTS {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        self.metrics.webhook("dropped");
        tracing::error!(url = %self.url, id = %event.id, attempts = ATTEMPTS, "webhook event dropped after every attempt failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_in_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
