//! Retries and hedges: the layer that may send one request to several instances.
//!
//! A failed attempt is sent again, to an instance it has not tried, as its error's
//! [`RetryClass`] allows: unsent requests always (their body permitting), requests the app may
//! have seen only when idempotent and within the retry budget. An idempotent request whose
//! attempt has not answered within the service's hedging delay gets a second attempt beside the
//! first, to another instance; the first answer wins and the other is dropped (cancelled).
//! Retries and hedges draw on one budget: a share of recent requests plus a floor per second.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use berth_core::Symbol;
use futures_util::future::BoxFuture;
use tower::retry::budget::{Budget, TpsBudget};

use super::balance::{NoChoice, Pick};
use super::discovery::Discovery;
use super::replay::MAX_REPLAY;
use super::route::Routed;
use super::{Error, RetryClass, Settings};
use crate::body::HttpResponse;
pub use crate::endpoint::Latency;

/// Instances one request may try, hedges included.
pub const MAX_ATTEMPTS: usize = 4;

/// When a hedged attempt is sent: after the service's usual answer time (its smoothed latency
/// plus four deviations, as TCP's retransmission timer), within these bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hedging {
    pub min_delay: Duration,
    pub max_delay: Duration,
}

/// The retry budget: retries and hedges may add `ratio` of the requests of the last 10 s, and
/// `min_per_second` besides.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BudgetSettings {
    pub ratio: f32,
    pub min_per_second: u32,
}

/// The retry and hedging rules, and the budget they share.
#[derive(Debug)]
pub struct Policy {
    budget: TpsBudget,
    failover: bool,
    hedging: Option<Hedging>,
}

impl Policy {
    pub fn new(settings: &Settings) -> Self {
        Policy::with_budget(settings.budget, settings.failover, settings.hedging)
    }

    pub fn with_budget(budget: BudgetSettings, failover: bool, hedging: Option<Hedging>) -> Self {
        let budget = TpsBudget::new(Duration::from_secs(10), budget.min_per_second, budget.ratio);
        Policy { budget, failover, hedging }
    }

    /// A request arrived: it earns its share of retries.
    pub fn deposit(&self) {
        self.budget.deposit();
    }

    /// Whether a failed attempt may be sent again; if not, why (for the app's error message).
    /// A yes to an attempt the app may have seen has taken its share of the budget.
    pub fn retry(
        &self,
        error: &Error,
        idempotent: bool,
        body_kept: bool,
    ) -> Result<(), Option<&'static str>> {
        if !self.failover {
            return Err(None);
        }
        match error.class() {
            RetryClass::Never => Err(None),
            RetryClass::Unsent | RetryClass::Idempotent if !body_kept => Err(Some(BODY_NOT_KEPT)),
            RetryClass::Unsent => Ok(()),
            RetryClass::Idempotent if !idempotent => Err(Some(
                "not retried: the request is not idempotent (send `x-berth-retryable: true` if it is safe to repeat)",
            )),
            RetryClass::Idempotent if !self.budget.withdraw() => {
                Err(Some("not retried: the retry budget is spent"))
            }
            RetryClass::Idempotent => Ok(()),
        }
    }

    /// How long an idempotent request waits for its first attempt before a second one goes
    /// to another instance; `None` when hedging is off.
    pub fn hedge_delay(&self, latency: &Latency) -> Option<Duration> {
        let h = self.hedging.filter(|_| self.failover)?;
        Some(latency.usual().unwrap_or(h.max_delay).clamp(h.min_delay, h.max_delay))
    }

    /// Whether the budget allows a hedge now (taking its share if it does).
    pub fn may_hedge(&self) -> bool {
        self.budget.withdraw()
    }
}

const BODY_NOT_KEPT: &str = "not retried: its body was already sent and was too large to keep (over 64 KiB)";
const _: () = assert!(MAX_REPLAY == 64 * 1024, "BODY_NOT_KEPT names the bound");

/// A response, and the symbol of the instance that gave it.
#[derive(Debug)]
pub struct Answer {
    pub response: HttpResponse,
    pub symbol: Symbol,
}

/// The retry layer, above the balancer.
#[derive(Clone, Debug)]
pub struct Retry<B> {
    balance: B,
    policy: Arc<Policy>,
    discovery: Arc<Discovery>,
}

impl<B> Retry<B> {
    pub fn new(balance: B, policy: Arc<Policy>, discovery: Arc<Discovery>) -> Self {
        Retry { balance, policy, discovery }
    }
}

impl<B> tower::Service<Routed> for Retry<B>
where
    B: Pick + Clone + Send + 'static,
    B::Future: Send + Unpin + 'static,
{
    type Response = Answer;
    type Error = Error;
    type Future = BoxFuture<'static, Result<Answer, Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, routed: Routed) -> Self::Future {
        let this = self.clone();
        Box::pin(this.run(routed))
    }
}

/// The instances a request has tried so far.
#[derive(Clone, Copy, Debug)]
struct Tried {
    addrs: [SocketAddr; MAX_ATTEMPTS],
    len: usize,
}

impl Default for Tried {
    fn default() -> Self {
        Tried { addrs: [SocketAddr::from(([0, 0, 0, 0], 0)); MAX_ATTEMPTS], len: 0 }
    }
}

impl Tried {
    fn push(&mut self, addr: SocketAddr) {
        if self.len < MAX_ATTEMPTS {
            self.addrs[self.len] = addr;
            self.len += 1;
        }
    }

    fn list(&self) -> &[SocketAddr] {
        &self.addrs[..self.len]
    }
}

/// An attempt on its way, and the symbol its instance was chosen for.
struct Running<F> {
    future: F,
    symbol: Symbol,
}

/// Resolves with the slot's outcome and symbol (emptying it); never, for an empty slot.
async fn settle<F, T>(slot: &mut Option<Running<F>>) -> (T, Symbol)
where
    F: Future<Output = T> + Unpin,
{
    match slot {
        Some(r) => {
            let out = (&mut r.future).await;
            let symbol = slot.take().map(|r| r.symbol).unwrap_or_default();
            (out, symbol)
        }
        None => std::future::pending().await,
    }
}

impl<B> Retry<B>
where
    B: Pick + Clone + Send + 'static,
    B::Future: Send + Unpin + 'static,
{
    /// Picks an instance the request has not tried and starts an attempt on it; `Ok(None)`
    /// when there is none left or the body cannot be sent again.
    fn start(
        &mut self,
        routed: &Routed,
        tried: &mut Tried,
        hedge_of: Option<&Symbol>,
    ) -> Result<Option<Running<B::Future>>, NoChoice> {
        let picked = match self.balance.pick(routed, tried.list(), hedge_of) {
            Ok(p) => p,
            Err(NoChoice::Exhausted { .. }) if tried.len > 0 => return Ok(None),
            Err(no) => return Err(no),
        };
        let Some(body) = routed.body.for_attempt() else { return Ok(None) };
        tried.push(picked.endpoint.addr);
        let symbol = picked.symbol.clone();
        Ok(Some(Running { future: self.balance.send(routed, picked, body), symbol }))
    }

    async fn run(mut self, routed: Routed) -> Result<Answer, Error> {
        self.policy.deposit();
        let mut tried = Tried::default();
        let mut primary = match self.start(&routed, &mut tried, None) {
            Ok(Some(p)) => Some(p),
            // Only a body already read elsewhere could leave the first attempt without one.
            Ok(None) => return Err(Error::BadRequest("the request body could not be read".into())),
            Err(no) => return Err(super::balance::explain(&self.discovery, &routed.service, no).await),
        };
        let mut hedge = None;
        // A hedge needs another instance to go to: with one, no timer is armed at all.
        let hedgeable = routed.request.idempotent
            && routed.request.upgrade.is_none()
            && routed.service.snapshot.load().entries.len() > 1;
        let delay = if hedgeable { self.policy.hedge_delay(&routed.service.latency) } else { None };
        let mut timer = delay.map(|d| Box::pin(tokio::time::sleep(d)));
        loop {
            let (outcome, symbol) = if timer.is_none() && hedge.is_none() {
                // Nothing to race: the one attempt in flight.
                settle(&mut primary).await
            } else {
                tokio::select! {
                    biased;
                    r = settle(&mut primary) => r,
                    r = settle(&mut hedge) => r,
                    () = async { match timer.as_mut() { Some(t) => t.await, None => std::future::pending().await } } => {
                        timer = None;
                        if tried.len < MAX_ATTEMPTS && routed.body.complete() && self.policy.may_hedge()
                            && let Ok(Some(attempt)) = self.start(&routed, &mut tried, primary.as_ref().map(|p| &p.symbol))
                        {
                            self.count_retry(&routed, "hedge");
                            hedge = Some(attempt);
                        }
                        continue;
                    }
                }
            };
            let error = match outcome {
                Ok(response) => return Ok(Answer { response, symbol }),
                Err(e) => e,
            };
            if primary.is_some() || hedge.is_some() {
                continue; // the other attempt may still answer
            }
            let why = match self.policy.retry(&error, routed.request.idempotent, routed.body.can_resend()) {
                Ok(()) if tried.len >= MAX_ATTEMPTS => "no more attempts",
                Ok(()) => match self.start(&routed, &mut tried, None) {
                    Ok(Some(attempt)) => {
                        self.count_retry(&routed, error.reason());
                        primary = Some(attempt);
                        continue;
                    }
                    Ok(None) => "no other instance to try",
                    Err(no) => {
                        return Err(super::balance::explain(&self.discovery, &routed.service, no).await);
                    }
                },
                Err(None) => "",
                Err(Some(why)) => why,
            };
            return Err(Error::Exhausted {
                service: routed.service.name.clone(),
                tried: tried.list().to_vec(),
                last: Box::new(error),
                why,
                symbol: Some(symbol),
            });
        }
    }

    fn count_retry(&self, routed: &Routed, reason: &str) {
        routed.service.metrics.outbound_retries.with_label_values(&[&routed.service.name, reason]).inc();
    }
}

#[cfg(test)]
mod tests;
