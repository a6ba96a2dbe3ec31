//! `GET /call?next=B,C&forward=baggage|none|all`: the sample app calling the next service of a
//! chain through its own sidecar's outbound port, the way a real app calls what it depends on.
//!
//! The app answers with one line for itself — its name, and the `x-berth-symbol` and `baggage`
//! it received — followed by the next service's answer, so a chain `A → B → C` shows which
//! instance of every service served the request. What the app copies from the request it
//! received onto the call it makes is `forward`: only `baggage` (what an OpenTelemetry SDK does
//! without code), `none` (an uninstrumented app) or `all` (every end-to-end field). The
//! sidecar's outbound address comes from `--outbound` or, when the sidecar is started after
//! the app, from `POST /outbound?addr=ADDR`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// How long one call down the chain may take, its own downstream calls included.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What the app copies from the request it received onto the call it makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Forward {
    Baggage,
    None,
    All,
}

impl Forward {
    fn parse(s: &str) -> Option<Forward> {
        match s {
            "baggage" => Some(Forward::Baggage),
            "none" => Some(Forward::None),
            "all" => Some(Forward::All),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Forward::Baggage => "baggage",
            Forward::None => "none",
            Forward::All => "all",
        }
    }

    /// The fields of `received` this mode copies onto the next call.
    fn copy(self, received: &HeaderMap, onto: &mut HeaderMap) {
        for (name, value) in received {
            let wanted = match self {
                Forward::None => false,
                Forward::Baggage => name == "baggage",
                Forward::All => !is_hop_field(name),
            };
            if wanted {
                onto.append(name.clone(), value.clone());
            }
        }
    }
}

/// Fields that belong to one connection or one message, never copied onto another request.
fn is_hop_field(name: &http::HeaderName) -> bool {
    [HOST, CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING, TE, TRAILER, UPGRADE].contains(name)
        || name == "keep-alive"
        || name.as_str().starts_with("proxy-")
}

/// The sidecar's outbound port and a client to it.
#[derive(Debug)]
pub struct Caller {
    outbound: Mutex<Option<SocketAddr>>,
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl Caller {
    pub fn new(outbound: Option<SocketAddr>) -> Caller {
        Caller { outbound: Mutex::new(outbound), client: Client::builder(TokioExecutor::new()).build_http() }
    }

    /// `POST /outbound?addr=ADDR`: where calls go from now on.
    pub fn set_outbound(&self, query: Option<&str>) -> Response<Body> {
        let addr = query.and_then(|q| param(q, "addr")).and_then(|a| a.parse::<SocketAddr>().ok());
        match addr {
            Some(addr) => {
                *self.outbound.lock().unwrap_or_else(|e| e.into_inner()) = Some(addr);
                text(StatusCode::OK, format!("calls go through {addr}\n"))
            }
            None => text(StatusCode::BAD_REQUEST, "expected ?addr=HOST:PORT\n".into()),
        }
    }

    /// `GET /call`: this app's line, then the next service's answer.
    pub async fn call(&self, req: &Request<hyper::body::Incoming>, name: &str) -> Response<Body> {
        let query = req.uri().query().unwrap_or("");
        let Some(forward) = Forward::parse(param(query, "forward").unwrap_or("baggage")) else {
            return text(StatusCode::BAD_REQUEST, "forward must be baggage, none or all\n".into());
        };
        let line = own_line(name, req.headers());
        let next = param(query, "next").unwrap_or("");
        let (service, rest) = next.split_once(',').unwrap_or((next, ""));
        if service.is_empty() {
            return text(StatusCode::OK, line);
        }
        let outbound = *self.outbound.lock().unwrap_or_else(|e| e.into_inner());
        let Some(outbound) = outbound else {
            let why = "no outbound port: start with --outbound or POST /outbound?addr=\n";
            return text(StatusCode::SERVICE_UNAVAILABLE, format!("{line}{why}"));
        };
        let uri = format!("http://{outbound}/call?next={rest}&forward={}", forward.as_str());
        let mut call = Request::new(Empty::new());
        forward.copy(req.headers(), call.headers_mut());
        match (uri.parse(), HeaderValue::from_str(service)) {
            (Ok(uri), Ok(host)) => {
                *call.uri_mut() = uri;
                call.headers_mut().insert(HOST, host);
            }
            _ => return text(StatusCode::BAD_REQUEST, format!("{line}bad service name {service:?}\n")),
        }
        let answer = async {
            let resp = self.client.request(call).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok::<_, String>((status, body))
        };
        match tokio::time::timeout(CALL_TIMEOUT, answer).await {
            Ok(Ok((status, body))) => text(status, format!("{line}{}", String::from_utf8_lossy(&body))),
            Ok(Err(e)) => text(StatusCode::BAD_GATEWAY, format!("{line}calling {service}: {e}\n")),
            Err(_) => text(StatusCode::GATEWAY_TIMEOUT, format!("{line}calling {service}: no answer\n")),
        }
    }
}

/// `NAME symbol=… baggage=…`: what this hop received of a lane.
fn own_line(name: &str, headers: &HeaderMap) -> String {
    let symbol = headers.get(berth_core::header::SYMBOL).and_then(|v| v.to_str().ok()).unwrap_or("-");
    let baggage: Vec<&str> = headers.get_all("baggage").iter().filter_map(|v| v.to_str().ok()).collect();
    let baggage = if baggage.is_empty() { "-".to_owned() } else { baggage.join(",") };
    format!("{name} symbol={symbol} baggage={baggage}\n")
}

fn param<'q>(query: &'q str, key: &str) -> Option<&'q str> {
    query.split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

fn text(code: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)).boxed_unsync());
    *resp.status_mut() = code;
    resp
}
