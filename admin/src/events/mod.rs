//! Events for release platforms: policy changes and instances' lives, as server-sent events on
//! `GET /api/v1/events` and, with `--webhook URL`, signed POSTs ([`webhook`]).
//!
//! A policy change this replica writes is published at once; one another replica wrote, or
//! an operator wrote into Nacos, is found by the scanner ([`detect`]), as are instances
//! registering, draining, deregistered, ejected by consumers, zombies and symbols whose last
//! instance left. Every event has an `id` made of what it is about (`policy/users/7`,
//! `deregistered/users/10.0.0.7:15006/1733080000000`), so the same event found twice is
//! published once, and a receiver fed by several admin replicas can drop the copies.

pub mod detect;
pub mod webhook;

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};

use crate::metrics::Metrics;

/// How many events a slow SSE subscriber may fall behind before it misses some.
const CHANNEL: usize = 1024;
/// How many event ids are remembered to publish each once, and events kept for `Last-Event-ID`.
const REMEMBERED: usize = 4096;
const REPLAYABLE: usize = 256;

/// One event.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    /// What it is about; the same from every replica.
    pub id: String,
    /// `policy.changed`, `instance.registered`, `instance.draining`, `instance.deregistered`,
    /// `instance.ejected`, `zombie.found` or `symbol.drained`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub service: String,
    /// When admin found it, RFC 3339.
    pub at: String,
    /// The details of its type.
    pub data: Value,
}

impl Event {
    pub fn new(kind: &'static str, id: String, service: &str, data: Value) -> Event {
        let at = crate::history::rfc3339(berth_core::now_millis());
        Event { id, kind, service: service.to_owned(), at, data }
    }

    /// A policy version written: who, and what changed.
    pub fn policy(service: &str, version: u64, author: Option<&str>, summary: Option<&str>) -> Event {
        let data = serde_json::json!({"version": version, "author": author, "summary": summary});
        Event::new("policy.changed", format!("policy/{service}/{version}"), service, data)
    }
}

/// Where events go: SSE subscribers and webhook queues. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Events {
    sender: broadcast::Sender<Arc<Event>>,
    inner: Arc<Mutex<Kept>>,
    metrics: Metrics,
}

#[derive(Debug, Default)]
struct Kept {
    ids: HashSet<String>,
    order: VecDeque<String>,
    recent: VecDeque<Arc<Event>>,
    webhooks: Vec<mpsc::Sender<Arc<Event>>>,
}

impl Events {
    pub fn new(metrics: Metrics) -> Events {
        Events { sender: broadcast::channel(CHANNEL).0, inner: Arc::default(), metrics }
    }

    /// Sends events to a webhook's delivery queue from now on.
    pub fn add_webhook(&self, queue: mpsc::Sender<Arc<Event>>) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).webhooks.push(queue);
    }

    /// Publishes `event`, unless an event with its id was published already.
    pub fn publish(&self, event: Event) {
        let event = Arc::new(event);
        let webhooks = {
            let mut kept = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if !kept.ids.insert(event.id.clone()) {
                return;
            }
            kept.order.push_back(event.id.clone());
            if kept.order.len() > REMEMBERED
                && let Some(old) = kept.order.pop_front()
            {
                kept.ids.remove(&old);
            }
            kept.recent.push_back(event.clone());
            if kept.recent.len() > REPLAYABLE {
                kept.recent.pop_front();
            }
            kept.webhooks.clone()
        };
        tracing::info!(event = event.kind, id = %event.id, service = %event.service, "event");
        self.metrics.event(event.kind);
        // No subscriber is not an error.
        let _ = self.sender.send(event.clone());
        for queue in webhooks {
            if queue.try_send(event.clone()).is_err() {
                tracing::warn!(id = %event.id, "a webhook's queue is full; the event is dropped for it");
            }
        }
    }

    /// A subscription, and the kept events after `last_id` (none when it is unknown or absent).
    pub fn subscribe(&self, last_id: Option<&str>) -> (broadcast::Receiver<Arc<Event>>, Vec<Arc<Event>>) {
        let kept = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let rx = self.sender.subscribe();
        let replay = last_id
            .and_then(|id| kept.recent.iter().position(|e| e.id == id))
            .map(|i| kept.recent.iter().skip(i + 1).cloned().collect())
            .unwrap_or_default();
        (rx, replay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_event_is_published_once_and_replayed_after_a_known_id() {
        let events = Events::new(Metrics::new());
        let (mut rx, _) = events.subscribe(None);
        events.publish(Event::policy("users", 1, Some("alice"), Some("set weights")));
        events.publish(Event::policy("users", 1, None, None));
        events.publish(Event::policy("users", 2, Some("bob"), None));
        assert_eq!(rx.recv().await.unwrap().id, "policy/users/1");
        let second = rx.recv().await.unwrap();
        assert_eq!(
            (second.id.as_str(), &second.data["author"]),
            ("policy/users/2", &serde_json::json!("bob"))
        );
        assert!(rx.try_recv().is_err(), "the copy of version 1 was not published");
        let (_, replay) = events.subscribe(Some("policy/users/1"));
        assert_eq!(replay.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["policy/users/2"]);
        assert!(events.subscribe(Some("unknown")).1.is_empty());
    }
}
