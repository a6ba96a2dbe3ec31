//! Per-service, per-symbol outbound metrics: every request counted once (not per attempt) by
//! status class, timed to its response headers, and gRPC answers counted by their
//! `grpc-status`, whether an instance or berth itself gave it; a request whose lane the
//! service has no instance of, answered by another symbol, counts as a lane fallback.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use berth_core::Symbol;
use bytes::Bytes;
use http::HeaderMap;
use http_body::{Frame, SizeHint};
use prometheus::{Histogram, IntCounter, IntCounterVec};
use tokio::time::Instant;

use super::Error;
use super::discovery::Service;
use super::retry::Answer;
use super::route::Routed;
use crate::body::{self, Body, BoxError, GrpcStatus, HttpResponse};
use crate::metrics::{Metrics, STATUS_CLASSES, class_index};

/// The label of requests that reached no instance.
const NO_SYMBOL: &str = "none";
/// The `grpc_status` label values: gRPC's 17 codes, then `other` for anything else.
const GRPC_CODES: [&str; 18] =
    ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16", "other"];

/// One symbol's metric handles.
#[derive(Debug)]
struct SymbolHandles {
    duration: Histogram,
    by_class: [IntCounter; 5],
    /// `berth_outbound_grpc_responses_total` by index in [`GRPC_CODES`], each looked up on its
    /// first use (a series per code only once that code was seen).
    by_grpc: [std::sync::OnceLock<IntCounter>; 18],
    grpc: IntCounterVec,
    labels: [String; 2],
}

impl SymbolHandles {
    fn grpc(&self, code: usize) -> &IntCounter {
        self.by_grpc[code].get_or_init(|| {
            self.grpc.with_label_values(&[&self.labels[0], &self.labels[1], GRPC_CODES[code]])
        })
    }
}

/// A service's metric handles per symbol, looked up once each; read without a lock.
#[derive(Debug, Default)]
pub struct Handles(ArcSwap<Vec<(Symbol, Arc<SymbolHandles>)>>);

impl Handles {
    fn get(&self, metrics: &Metrics, service: &str, symbol: &str) -> Arc<SymbolHandles> {
        if let Some((_, h)) = self.0.load().iter().find(|(s, _)| s.as_str() == symbol) {
            return h.clone();
        }
        let handles = Arc::new(SymbolHandles {
            duration: metrics.outbound_duration.with_label_values(&[service, symbol]),
            by_class: STATUS_CLASSES
                .map(|class| metrics.outbound_requests.with_label_values(&[service, symbol, class])),
            by_grpc: Default::default(),
            grpc: metrics.outbound_grpc.clone(),
            labels: [service.to_owned(), symbol.to_owned()],
        });
        let key: Symbol = symbol.parse().unwrap_or_default();
        self.0.rcu(|list| {
            let mut list = Vec::clone(list);
            if !list.iter().any(|(s, _)| *s == key) {
                list.push((key.clone(), handles.clone()));
            }
            list
        });
        handles
    }
}

/// The metrics layer.
#[derive(Clone, Debug)]
pub struct Measure<S> {
    inner: S,
}

impl<S> Measure<S> {
    pub fn new(inner: S) -> Self {
        Measure { inner }
    }
}

impl<S> tower::Service<Routed> for Measure<S>
where
    S: tower::Service<Routed, Response = Answer, Error = Error>,
{
    type Response = HttpResponse;
    type Error = Error;
    type Future = Measured<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, routed: Routed) -> Self::Future {
        let started = Instant::now();
        let service = routed.service.clone();
        let grpc = routed.request.grpc;
        // A wanted symbol labels a request no instance answered only if the service has it: the
        // labels stay bounded by what is registered, whatever requests ask for.
        let wanted = routed.wanted.as_ref();
        let lane = wanted.filter(|w| w.is_lane()).map(|w| w.symbol.clone());
        let fallback = wanted.map(|w| &w.symbol).filter(|s| service.snapshot.load().has_symbol(s)).cloned();
        Measured { inner: self.inner.call(routed), started, service, grpc, fallback, lane }
    }
}

pin_project_lite::pin_project! {
    /// A request on its way, counted when it is answered.
    pub struct Measured<F> {
        #[pin]
        inner: F,
        started: Instant,
        service: Arc<Service>,
        grpc: bool,
        fallback: Option<Symbol>,
        lane: Option<Symbol>,
    }
}

impl<F: Future<Output = Result<Answer, Error>>> Future for Measured<F> {
    type Output = Result<HttpResponse, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let outcome = std::task::ready!(this.inner.poll(cx));
        let symbol = match &outcome {
            Ok(a) => Some(&a.symbol),
            Err(Error::Exhausted { symbol, .. }) => symbol.as_ref(),
            Err(_) => None,
        }
        .or(this.fallback.as_ref())
        .cloned();
        let service = &**this.service;
        if let (Ok(a), Some(lane)) = (&outcome, this.lane.as_ref())
            && a.symbol != *lane
        {
            service.lane_fallbacks.inc();
        }
        let symbol = symbol.as_ref().map_or(NO_SYMBOL, Symbol::as_str);
        let metrics = &service.metrics;
        let handles = service.handles.get(metrics, &service.name, symbol);
        let status = match &outcome {
            Ok(a) => a.response.status(),
            Err(e) => e.status_and_code().0,
        };
        handles.duration.observe(this.started.elapsed().as_secs_f64());
        handles.by_class[class_index(status)].inc();
        Poll::Ready(match outcome {
            Ok(Answer { response, .. }) if *this.grpc => Ok(count_grpc(response, handles)),
            Ok(Answer { response, .. }) => Ok(response),
            Err(e) => {
                if *this.grpc {
                    let status = match &e {
                        Error::Answered { .. } => GrpcStatus::Unavailable,
                        e => GrpcStatus::for_http(e.status_and_code().0),
                    };
                    handles.grpc(usize::from(status.code())).inc();
                }
                Err(e)
            }
        })
    }
}

/// Counts a gRPC response by its `grpc-status`: in its headers (a trailers-only answer) or, once
/// the body ends, in its trailers.
fn count_grpc(resp: HttpResponse, handles: Arc<SymbolHandles>) -> HttpResponse {
    let (parts, inner) = resp.into_parts();
    if let Some(code) = grpc_status(&parts.headers) {
        handles.grpc(code).inc();
        return HttpResponse::from_parts(parts, inner);
    }
    let body = GrpcCounted { inner, counter: Some(handles) };
    HttpResponse::from_parts(parts, body::boxed(body))
}

/// A bounded label: the index in [`GRPC_CODES`] of the status, `other` for none of gRPC's 17.
fn grpc_status(headers: &HeaderMap) -> Option<usize> {
    let v = headers.get("grpc-status")?;
    Some(GRPC_CODES[..17].iter().position(|c| c.as_bytes() == v.as_bytes()).unwrap_or(17))
}

pin_project_lite::pin_project! {
    /// A gRPC response body that counts its status when its trailers pass.
    struct GrpcCounted {
        #[pin]
        inner: Body,
        counter: Option<Arc<SymbolHandles>>,
    }
}

impl http_body::Body for GrpcCounted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        if let Some(Ok(f)) = &frame
            && let Some(code) = f.trailers_ref().and_then(grpc_status)
            && let Some(handles) = this.counter.take()
        {
            handles.grpc(code).inc();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
