//! The outbound path, composed in one place: read it top to bottom as a request travels.

use std::sync::Arc;

use super::balance::Balance;
use super::measure::Measure;
use super::observe::Observe;
use super::rescue::Rescue;
use super::retry::Retry;
use super::route::Route;
use super::send::Send;
use super::timeout::{AttemptTimeout, RequestTimeout};

/// The outbound service: the app's request in, a response out, never an error.
pub type Outbound = Rescue<Route<Measure<RequestTimeout<Retry<Balance<AttemptTimeout<Observe<Send>>>>>>>>;

/// Builds the stack for `outbound`'s settings.
pub fn new(outbound: &Arc<super::Outbound>) -> Outbound {
    let s = &outbound.settings;
    // One attempt, innermost first: the pooled connection to the chosen instance; the observer
    // right above it, so that it sees every answer and failure of the instance itself (the
    // read-only signal, failure accrual, latency) and nothing of the layers above; the
    // per-attempt timeout above the observer (it counts its own expiry as the instance's
    // failure, since the observer's future is dropped with the attempt).
    let attempt = Send::new(s.connect_timeout);
    let attempt = Observe::new(attempt, s.failover);
    let attempt = AttemptTimeout::new(attempt, s.attempt_timeout);
    // The balancer picks the instance of each attempt. Retries and hedges sit above it, so
    // that every attempt is a fresh pick that avoids the instances already tried.
    let balance = Balance::new(attempt);
    let retry = Retry::new(balance, outbound.policy.clone(), outbound.discovery.clone());
    // The request timeout bounds every attempt together, so it sits above the retries; the
    // metrics above it count each request once, timeouts included, by the symbol it reached.
    let bounded = RequestTimeout::new(retry, s.request_timeout);
    let measured = Measure::new(bounded);
    // Route first: the service and symbol, and the body kept for retries. Rescue outermost, so
    // that every failure of every layer becomes the documented answer.
    Rescue::new(Route::new(measured, outbound.clone()))
}
