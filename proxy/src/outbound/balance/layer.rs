//! The balancer as a step of the outbound path: the retry layer asks it for an instance
//! ([`Pick::pick`]) — so that a retry or a hedge can name the instances to avoid — then sends the
//! attempt through it to the per-attempt layers ([`Pick::send`]).

use std::net::SocketAddr;
use std::sync::Arc;

use berth_core::Symbol;
use berth_core::policy::RequestView;
use http::{HeaderMap, Request};

use super::{Ask, NoChoice, choose};
use crate::body::{Body, HttpResponse};
use crate::endpoint::Endpoint;
use crate::outbound::Error;
use crate::outbound::discovery::{Discovery, Service};
use crate::outbound::route::{Routed, Upgrade};

/// The instance chosen for one attempt.
#[derive(Debug)]
pub struct Picked {
    pub endpoint: Arc<Endpoint>,
    /// The symbol it was chosen for.
    pub symbol: Symbol,
}

/// One attempt: what the per-attempt layers below the balancer get.
#[derive(Debug)]
pub struct Attempt {
    pub service: Arc<Service>,
    pub endpoint: Arc<Endpoint>,
    /// The request in the form the instance's connection takes (or why it cannot be sent).
    pub request: Result<Request<Body>, Error>,
    pub upgrade: Option<Upgrade>,
}

/// Chooses instances and starts attempts on them.
pub trait Pick {
    type Future: Future<Output = Result<HttpResponse, Error>>;

    /// An instance for the request, other than those in `tried`; for a hedge of an attempt
    /// on `hedge_of`'s symbol, only a healthy instance of that symbol.
    fn pick(
        &self,
        routed: &Routed,
        tried: &[SocketAddr],
        hedge_of: Option<&Symbol>,
    ) -> Result<Picked, NoChoice>;

    /// Sends one attempt to the picked instance.
    fn send(&mut self, routed: &Routed, picked: Picked, body: Body) -> Self::Future;
}

/// The balancer over the per-attempt stack `S`.
#[derive(Clone, Debug)]
pub struct Balance<S> {
    inner: S,
}

impl<S> Balance<S> {
    pub fn new(inner: S) -> Self {
        Balance { inner }
    }
}

impl<S> Pick for Balance<S>
where
    S: tower::Service<Attempt, Response = HttpResponse, Error = Error>,
{
    type Future = S::Future;

    fn pick(
        &self,
        routed: &Routed,
        tried: &[SocketAddr],
        hedge_of: Option<&Symbol>,
    ) -> Result<Picked, NoChoice> {
        let snapshot = routed.service.snapshot.load();
        let policy = routed.service.policy.load();
        let ask = Ask {
            explicit: hedge_of.or(routed.wanted.as_ref().map(|w| &w.symbol)),
            request: &View(&routed.request.headers),
            tried,
            now_ms: berth_core::now_millis(),
            hedge: hedge_of.is_some(),
            jitter_micros: routed.service.latency.jitter_micros(),
        };
        let (index, symbol) = choose(&snapshot, &policy.compiled, &ask)?;
        Ok(Picked { endpoint: snapshot.entries[index].endpoint.clone(), symbol })
    }

    fn send(&mut self, routed: &Routed, picked: Picked, body: Body) -> S::Future {
        let upgrade = routed.request.upgrade.clone();
        // An upgrade needs an HTTP/1.1 connection of its own, even to an HTTP/2 instance.
        let h2 = picked.endpoint.h2 && upgrade.is_none();
        self.inner.call(Attempt {
            service: routed.service.clone(),
            request: routed.request.request(&routed.service.name, h2, body),
            endpoint: picked.endpoint,
            upgrade,
        })
    }
}

/// The error for a request no instance could be chosen for. Whether the registry knows the
/// service at all is asked only here, off the common path.
pub async fn explain(discovery: &Discovery, service: &Service, why: NoChoice) -> Error {
    let namespace = discovery.namespace().to_owned();
    let name = service.name.clone();
    match why {
        NoChoice::NoInstances { listed: 0 } if discovery.exists(&name).await == Some(false) => {
            Error::UnknownService { service: name, namespace }
        }
        NoChoice::NoInstances { listed } => Error::NoInstances { service: name, namespace, listed },
        NoChoice::StrictSymbol { symbol } => {
            Error::NoSymbolInstances { service: name, namespace, symbol: symbol.to_string() }
        }
        NoChoice::Exhausted { tried } => Error::Exhausted {
            service: name.clone(),
            tried: Vec::new(),
            last: Box::new(Error::NoInstances { service: name, namespace, listed: tried }),
            why: "every usable instance failed",
            symbol: None,
        },
    }
}

/// Headers and cookies of a request, for policy rules and sticky keys.
#[derive(Debug)]
pub struct View<'a>(pub &'a HeaderMap);

impl RequestView for View<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(|v| v.to_str().ok())
    }

    fn cookie(&self, name: &str) -> Option<&str> {
        self.0
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }
}
