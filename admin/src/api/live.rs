//! What changes while one watches: the event stream, a service's traffic over time, and who
//! the caller is (for the page, which disables its controls for a read token).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::sse::{self, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use http::HeaderMap;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::services::{Target, compiled};
use super::{ApiError, AppState};
use crate::auth::{Reader, Role};
use crate::events::Event;

/// `GET /api/v1/whoami`: the token's name and role.
pub async fn whoami(Reader(caller): Reader) -> Response {
    let role = match caller.role {
        Role::Write => "write",
        Role::Read => "read",
    };
    Json(json!({"name": caller.name, "role": role})).into_response()
}

/// The value of `key` in a query string, percent-decoded.
fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    let raw = query?.split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))?;
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex =
            bytes.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// `GET /api/v1/events`: server-sent events, one per [`Event`], the event's type as the SSE
/// `event` and its id as the SSE `id`. A client that reconnects with `Last-Event-ID` gets the
/// events it missed, as far as this replica still keeps them.
pub async fn events(
    State(st): State<AppState>,
    _: Reader,
    uri: http::Uri,
    headers: HeaderMap,
) -> Sse<impl Stream<Item = Result<sse::Event, Infallible>>> {
    // `?service=NAME`: only that service's events.
    let only = query_param(uri.query(), "service");
    let last = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let (rx, replay) = st.events.subscribe(last);
    let stream = futures_util::stream::unfold(
        (rx, replay.into_iter(), st.stopping.clone(), only),
        |(mut rx, mut replay, mut stopping, service)| async move {
            loop {
                let next = match replay.next() {
                    Some(e) => Ok(e),
                    None => tokio::select! {
                        r = rx.recv() => r,
                        _ = stopping.wait_for(|s| *s) => return None,
                    },
                };
                let item = match next {
                    Ok(e) if service.as_ref().is_some_and(|s| *s != e.service) => continue,
                    Ok(e) => frame(&e),
                    Err(RecvError::Lagged(n)) => sse::Event::default()
                        .event("events.lost")
                        .data(json!({"type": "events.lost", "missed": n}).to_string()),
                    Err(RecvError::Closed) => return None,
                };
                return Some((Ok(item), (rx, replay, stopping, service)));
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

fn frame(e: &Arc<Event>) -> sse::Event {
    let data = serde_json::to_string(e.as_ref()).unwrap_or_default();
    sse::Event::default().event(e.kind).id(e.id.clone()).data(data)
}

/// `GET /api/v1/services/{service}/traffic`: the last minute per symbol, and the error rate
/// over the last hour (what this replica has seen), for the history chart.
pub async fn traffic(State(st): State<AppState>, _: Reader, t: Target) -> Result<Response, ApiError> {
    let current = st.store.read(&t.service).await?;
    let window = st.window(&t.service, &compiled(&current).policy).await;
    let series = match &st.prometheus {
        Some(p) => p.series(&t.service).await.unwrap_or_else(|e| {
            tracing::warn!(service = %t.service, error = %e, "cannot read the error rate from Prometheus");
            Vec::new()
        }),
        None => st.traffic.series(&t.service),
    };
    Ok(Json(json!({"service": t.service, "window": window, "series": series})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_found_and_decoded() {
        assert_eq!(query_param(Some("a=1&service=users%40prod"), "service").as_deref(), Some("users@prod"));
        assert_eq!(query_param(Some("services=x"), "service"), None);
        assert_eq!(query_param(None, "service"), None);
        assert_eq!(query_param(Some("service=a%2"), "service").as_deref(), Some("a%2"));
    }
}
