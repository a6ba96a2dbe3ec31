//! The gateway's first layer: which exposed service a request from outside is for.
//!
//! `/<service>.<symbol>/rest` and `/<service>/rest` (and, with `--route-by-host`, a `Host`
//! whose first label is a service) name the service; only services on the allow-list
//! (`--expose`) are reachable. Anything else is answered here — `404 not-exposed`, with
//! nothing sent anywhere — so the gateway cannot become an open proxy to every registered
//! service. A routed request goes on to the outbound stack with its [`Target`] attached (the
//! prefix stripped, `Host` set to the service), and the path's symbol as the request's lane
//! unless the request carries one itself ([`crate::lane`]); `x-berth-retryable` from outside
//! is dropped.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::task::{Context, Poll};

use berth_core::Symbol;
use futures_util::future::{Either, Ready, ready};
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, StatusCode, Uri};
use hyper::body::Incoming;

use crate::body::{self, HttpResponse};
use crate::headers;
use crate::outbound::target::Target;

/// The field that marks a non-idempotent request as safe to retry.
const RETRYABLE: http::HeaderName = http::HeaderName::from_static(berth_core::header::RETRYABLE);

/// The services the gateway exposes, and how requests name them.
#[derive(Clone, Debug, Default)]
pub struct Routes {
    pub exposed: BTreeSet<String>,
    /// Whether a `Host` whose first label is an exposed service routes to it.
    pub by_host: bool,
}

/// A request the gateway does not route.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "no exposed service in the request: this gateway routes /SERVICE/path and /SERVICE.SYMBOL/path for the services it exposes"
    )]
    NotExposed,
    #[error("bad symbol in the path: {0}")]
    BadSymbol(String),
}

impl Routes {
    /// The target of a request for `uri` with `host` (its `Host` or authority).
    pub fn target(&self, uri: &Uri, host: Option<&str>) -> Result<Target, Refusal> {
        let path = uri.path_and_query().map_or("/", PathAndQuery::as_str);
        if self.by_host
            && let Some(service) = host.and_then(|h| h.split(['.', ':']).next()).filter(|s| self.exposes(s))
        {
            let path = path.parse().map_err(|_| Refusal::NotExposed)?;
            return Ok(Target { service: service.to_owned(), symbol: None, path, host: None });
        }
        let rest = path.strip_prefix('/').ok_or(Refusal::NotExposed)?;
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (first, remainder) = rest.split_at(end);
        let (service, symbol) = if self.exposes(first) {
            (first, None)
        } else {
            match first.rsplit_once('.') {
                Some((service, symbol)) if self.exposes(service) => {
                    let symbol: Symbol = symbol
                        .parse()
                        .map_err(|e: berth_core::symbol::InvalidSymbol| Refusal::BadSymbol(e.to_string()))?;
                    (service, Some(symbol))
                }
                _ => return Err(Refusal::NotExposed),
            }
        };
        let path = match remainder {
            "" => PathAndQuery::from_static("/"),
            r if r.starts_with('?') => format!("/{r}").parse().map_err(|_| Refusal::NotExposed)?,
            r => r.parse().map_err(|_| Refusal::NotExposed)?,
        };
        Ok(Target { service: service.to_owned(), symbol, path, host: None })
    }

    fn exposes(&self, name: &str) -> bool {
        self.exposed.contains(name)
    }
}

/// The edge layer over the outbound stack, for one client connection.
#[derive(Clone, Debug)]
pub struct Edge<S> {
    inner: S,
    routes: std::sync::Arc<Routes>,
    /// The client's address as a header value, for `x-forwarded-for`.
    peer: Option<HeaderValue>,
}

impl<S> Edge<S> {
    pub fn new(inner: S, routes: std::sync::Arc<Routes>, peer: SocketAddr) -> Self {
        Edge { inner, routes, peer: HeaderValue::try_from(peer.ip().to_string()).ok() }
    }
}

impl<S> tower::Service<Request<Incoming>> for Edge<S>
where
    S: tower::Service<Request<Incoming>, Response = HttpResponse, Error = Infallible>,
{
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = Either<S::Future, Ready<Result<HttpResponse, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Incoming>) -> Self::Future {
        let host = req.uri().authority().map(|a| a.as_str().to_owned()).or_else(|| {
            req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok()).map(str::to_owned)
        });
        match self.routes.target(req.uri(), host.as_deref()) {
            Ok(target) => {
                tracing::debug!(service = %target.service, symbol = ?target.symbol, "edge route");
                if let Some(peer) = &self.peer {
                    headers::add_forwarded(req.headers_mut(), peer);
                }
                // Whether a POST may be sent twice is for the services inside to say, not for a
                // client outside (as Envoy's edge drops x-envoy-* fields from untrusted clients).
                req.headers_mut().remove(RETRYABLE);
                req.extensions_mut().insert(target);
                Either::Left(self.inner.call(req))
            }
            Err(refusal) => {
                let (status, code) = match refusal {
                    Refusal::NotExposed => (StatusCode::NOT_FOUND, "not-exposed"),
                    Refusal::BadSymbol(_) => (StatusCode::BAD_REQUEST, "bad-symbol"),
                };
                Either::Right(ready(Ok(body::error(status, code, refusal))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(by_host: bool) -> Routes {
        Routes { exposed: ["user".to_owned(), "a.b".to_owned()].into(), by_host }
    }

    fn t(
        routes: &Routes,
        uri: &str,
        host: Option<&str>,
    ) -> Result<(String, Option<String>, String), Refusal> {
        routes
            .target(&uri.parse().unwrap(), host)
            .map(|t| (t.service, t.symbol.map(|s| s.to_string()), t.path.to_string()))
    }

    fn ok(
        service: &str,
        symbol: Option<&str>,
        path: &str,
    ) -> Result<(String, Option<String>, String), Refusal> {
        Ok((service.into(), symbol.map(Into::into), path.into()))
    }

    #[test]
    fn paths_name_a_service_and_perhaps_a_symbol() {
        let r = routes(false);
        assert_eq!(t(&r, "/user/users/7?x=1", None), ok("user", None, "/users/7?x=1"));
        assert_eq!(t(&r, "/user.canary/users/7", None), ok("user", Some("canary"), "/users/7"));
        assert_eq!(t(&r, "/user", None), ok("user", None, "/"));
        assert_eq!(t(&r, "/user?x=1", None), ok("user", None, "/?x=1"));
        assert_eq!(t(&r, "/user.stable?x=1", None), ok("user", Some("stable"), "/?x=1"));
        assert_eq!(t(&r, "/a.b/x", None), ok("a.b", None, "/x"), "a dotted name exposed as it is");
        assert_eq!(t(&r, "/a.b.blue/x", None), ok("a.b", Some("blue"), "/x"));
    }

    #[test]
    fn only_exposed_services_are_routed() {
        let r = routes(false);
        for uri in ["/", "/orders/x", "/orders.stable/x", "/users/x", "/user-x/", "/a/x", "/.stable/x"] {
            assert_eq!(t(&r, uri, Some("user")), Err(Refusal::NotExposed), "{uri}");
        }
        assert_eq!(t(&Routes::default(), "/user/x", None), Err(Refusal::NotExposed), "nothing by default");
        assert!(matches!(t(&r, "/user.Bad/x", None), Err(Refusal::BadSymbol(_))));
    }

    #[test]
    fn a_host_names_a_service_only_when_asked_to() {
        let on = routes(true);
        assert_eq!(t(&on, "/users/7", Some("user.example.com:8080")), ok("user", None, "/users/7"));
        assert_eq!(t(&on, "/user.canary/x", Some("gw.example.com")), ok("user", Some("canary"), "/x"));
        assert_eq!(t(&on, "/users/7", Some("orders.example.com")), Err(Refusal::NotExposed));
        assert_eq!(t(&routes(false), "/users/7", Some("user.example.com")), Err(Refusal::NotExposed));
    }
}
