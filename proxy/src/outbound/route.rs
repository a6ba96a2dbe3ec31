//! The first layer of the outbound path: which service and symbol a request is for.
//!
//! It resolves the target (proxy form, `Host`, path prefix), the symbol the request wants —
//! its lane, a policy rule's symbol, or this sidecar's own ([`crate::lane`]) — follows the
//! service on first use, and prepares the parts every attempt sends again: hop-by-hop fields
//! removed, the lane written for the next hop, the body wrapped so that a bounded copy is kept
//! for a retry ([`Replay`]).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::header::HOST;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Method, Request, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use super::balance::View;
use super::discovery::Service;
use super::replay::Replay;
use super::{Error, Outbound, target};
use crate::body::{self, Body, HttpResponse};
use crate::lane::{self, Source, Wanted};
use crate::{headers, upgrade};

/// How long a request waits for a service's first instance set.
const DISCOVERY_WAIT: Duration = Duration::from_secs(5);

/// A request once its service is known: what the layers below it work with.
#[derive(Debug)]
pub struct Routed {
    pub service: Arc<Service>,
    /// The parts every attempt sends.
    pub request: Prepared,
    /// The symbol the request wants (its lane, a rule's symbol, …); `None`: the policy's
    /// weighted split or default decides.
    pub wanted: Option<Wanted>,
    pub body: Payload,
}

/// A request's body as the attempts share it.
#[derive(Debug)]
pub enum Payload {
    /// No body: every attempt sends an empty one, and any attempt may be hedged.
    Empty,
    /// A body streamed to the first attempt while a bounded copy is kept.
    Replay(Replay),
}

impl Payload {
    /// A body for one more attempt; `None` when the body was sent and not kept.
    pub fn for_attempt(&self) -> Option<Body> {
        match self {
            Payload::Empty => Some(body::empty()),
            Payload::Replay(r) => r.try_clone().map(body::boxed),
        }
    }

    /// Whether the body can still be sent again (it was kept, or not sent yet).
    pub fn can_resend(&self) -> bool {
        match self {
            Payload::Empty => true,
            Payload::Replay(r) => r.can_clone(),
        }
    }

    /// Whether a hedged attempt can send the body now, beside the first.
    pub fn complete(&self) -> bool {
        match self {
            Payload::Empty => true,
            Payload::Replay(r) => r.is_complete(),
        }
    }
}

/// The app's side of an upgrade, shared by the attempts of one request.
pub type Upgrade = Arc<Mutex<Option<OnUpgrade>>>;

/// The parts of a request that every attempt sends again.
#[derive(Debug)]
pub struct Prepared {
    pub method: Method,
    pub headers: HeaderMap,
    /// What the provider sees as `Host` (HTTP/1.1; also in `headers`) or `:authority`
    /// (HTTP/2), when it is not the service's name.
    pub host: Option<String>,
    pub path: PathAndQuery,
    /// Whether the request may be sent twice (its method, or `x-berth-retryable: true`).
    pub idempotent: bool,
    /// Whether the app asked for a gRPC answer (its errors come as a gRPC status).
    pub grpc: bool,
    /// The app's side of an HTTP/1.1 upgrade, taken by the attempt that gets the 101.
    pub upgrade: Option<Upgrade>,
}

impl Prepared {
    /// The request for one attempt, in the form the connection speaks.
    pub fn request(&self, service: &str, h2: bool, body: Body) -> Result<Request<Body>, Error> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.headers_mut() = self.headers.clone();
        if h2 {
            let host = self.host.as_deref().unwrap_or(service);
            let authority = Authority::try_from(host)
                .map_err(|_| Error::BadRequest(format!("{host:?} is not a valid authority for HTTP/2")))?;
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(Scheme::HTTP);
            parts.authority = Some(authority);
            parts.path_and_query = Some(self.path.clone());
            *req.uri_mut() = Uri::from_parts(parts).map_err(|e| Error::BadRequest(e.to_string()))?;
            *req.version_mut() = Version::HTTP_2;
            // `:authority` carries it.
            req.headers_mut().remove(HOST);
        } else {
            *req.uri_mut() = Uri::from(self.path.clone());
            *req.version_mut() = Version::HTTP_11;
        }
        Ok(req)
    }
}

fn is_idempotent(method: &Method, headers: &HeaderMap) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    ) || headers.get(&super::RETRYABLE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"))
}

/// The route layer.
#[derive(Clone, Debug)]
pub struct Route<S> {
    inner: S,
    outbound: Arc<Outbound>,
}

impl<S> Route<S> {
    pub fn new(inner: S, outbound: Arc<Outbound>) -> Self {
        Route { inner, outbound }
    }
}

impl<S> tower::Service<Request<Incoming>> for Route<S>
where
    S: tower::Service<Routed, Response = HttpResponse, Error = Error> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = HttpResponse;
    type Error = Error;
    type Future = Routing<S::Future>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        self.outbound.used.store(true, Ordering::Relaxed);
        let (target, asked) = match resolve(&req, &self.outbound.lanes) {
            Ok(t) => t,
            Err(e) => return Routing::Failed { error: Some(e) },
        };
        // The common case: a service already followed, with its instances known.
        if let Some(service) = self.outbound.discovery.followed(&target.service).filter(|s| s.is_ready()) {
            return match prepare(req, target, asked, service, &self.outbound.lanes) {
                Ok(routed) => Routing::Now { inner: self.inner.call(routed) },
                Err(e) => Routing::Failed { error: Some(e) },
            };
        }
        let mut inner = self.inner.clone();
        let outbound = self.outbound.clone();
        Routing::Later {
            inner: Box::pin(async move {
                let service = follow(&outbound, &target.service).await?;
                inner.call(prepare(req, target, asked, service, &outbound.lanes)?).await
            }),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request on its way through the layers below.
    #[project = RoutingProj]
    pub enum Routing<F> {
        Now { #[pin] inner: F },
        Later { inner: BoxFuture<'static, Result<HttpResponse, Error>> },
        Failed { error: Option<Error> },
    }
}

impl<F: Future<Output = Result<HttpResponse, Error>>> Future for Routing<F> {
    type Output = Result<HttpResponse, Error>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            RoutingProj::Now { inner } => inner.poll(cx),
            RoutingProj::Later { inner } => inner.as_mut().poll(cx),
            RoutingProj::Failed { error } => Poll::Ready(Err(error
                .take()
                .unwrap_or_else(|| Error::BadRequest("polled after it failed".into())))),
        }
    }
}

/// The target, and the lane the request carries or its path prefix names.
fn resolve(req: &Request<Incoming>, lanes: &lane::Lanes) -> Result<(target::Target, Option<Wanted>), Error> {
    if req.method() == Method::CONNECT {
        return Err(Error::ConnectUnsupported);
    }
    let target = match req.extensions().get::<target::Target>() {
        // The edge (`berth gateway`) routed it already, against its allow-list.
        Some(routed) => routed.clone(),
        None => {
            let host_header = req.headers().get(HOST).and_then(|h| h.to_str().ok());
            target::resolve(req.uri(), host_header).map_err(|e| match e {
                target::TargetError::BadSymbol(detail) => {
                    Error::BadSymbol(format!("the path prefix: {detail}"))
                }
                e => Error::NoService(e),
            })?
        }
    };
    let carried = lanes.carried(req.headers()).map_err(|e| Error::BadSymbol(e.to_string()))?;
    let asked = carried.or_else(|| Some(Wanted { symbol: target.symbol.clone()?, source: Source::Prefix }));
    Ok((target, asked))
}

/// Follows the service from now on, and waits for its first instance set.
async fn follow(outbound: &Outbound, name: &str) -> Result<Arc<Service>, Error> {
    let service = outbound.discovery.service(name).await.map_err(Error::TooManyServices)?;
    if !service.is_ready()
        && let Err(detail) = service.ready(DISCOVERY_WAIT).await
    {
        return Err(Error::RegistryUnavailable {
            service: service.name.clone(),
            namespace: outbound.discovery.namespace().to_owned(),
            detail,
        });
    }
    Ok(service)
}

/// The parts every attempt sends, and the body as the attempts share it.
fn prepare(
    mut req: Request<Incoming>,
    target: target::Target,
    asked: Option<Wanted>,
    service: Arc<Service>,
    lanes: &lane::Lanes,
) -> Result<Routed, Error> {
    let upgrade = upgrade::requested(&req).then(|| hyper::upgrade::on(&mut req));
    let protocol = upgrade.as_ref().and_then(|_| upgrade::protocol(req.headers()));
    let grpc = body::is_grpc(req.headers());
    let (mut parts, incoming) = req.into_parts();
    let idempotent = is_idempotent(&parts.method, &parts.headers);
    headers::strip_hop_by_hop(&mut parts.headers);
    if let Some(p) = protocol {
        upgrade::restore(&mut parts.headers, p);
    }
    // The provider's `Host`, set once for every attempt: the app's own value when it named
    // the target, the service's when the path prefix did.
    let named = target.host.as_deref().unwrap_or(&service.name);
    let host = match (parts.headers.remove(HOST), &service.host) {
        (Some(v), _) if v.as_bytes() == named.as_bytes() => v,
        (_, Some(v)) if target.host.is_none() => v.clone(),
        _ => HeaderValue::from_str(named)
            .map_err(|_| Error::BadRequest(format!("{named:?} is not a valid host")))?,
    };
    // Rules look at the headers the instance would get; a lane then travels in them.
    let wanted = lanes.resolve(asked, &service.policy.load().compiled, &View(&parts.headers));
    // Room for what is added below, so that neither this map nor its copy for each attempt
    // grows (a rehash) on the way.
    parts.headers.reserve(1 + lane::STAMPED);
    if let Some(lane) = wanted.as_ref().filter(|w| w.is_lane()) {
        lanes.stamp(&mut parts.headers, &lane.symbol);
    }
    parts.headers.insert(HOST, host);
    let body = if incoming.is_end_stream() || incoming.size_hint().exact() == Some(0) {
        Payload::Empty
    } else {
        Payload::Replay(Replay::new(body::boxed(incoming)))
    };
    let request = Prepared {
        method: parts.method,
        headers: parts.headers,
        host: target.host,
        path: target.path,
        idempotent,
        grpc,
        upgrade: upgrade.map(|u| Arc::new(Mutex::new(Some(u)))),
    };
    Ok(Routed { service, request, wanted, body })
}
