//! `berth sample-app`: a small HTTP app for demos, tests and benchmarks.
//!
//! | route | answer |
//! |---|---|
//! | `GET /` | `hello from NAME` and headers `x-app-name`, `x-app-symbol` |
//! | `GET /healthz` | 200, or 503 after `POST /healthz?ok=false` |
//! | `POST /healthz?ok=B&for=N` | answer `B` to the next N checks, then the opposite (for tests of thresholds) |
//! | `GET /healthz/log` | every health answer given so far, in order: `P` passed, `F` failed |
//! | `GET /slow?ms=N` | 200 after N milliseconds |
//! | `GET /stream?chunks=N&ms=M` | N chunks, M milliseconds apart |
//! | `ANY /echo` | JSON of the method, path, version, headers and body size it received |
//! | `GET /upgrade` with `Upgrade: X` | `101 Switching Protocols`, then echoes every byte back |
//! | `GET /call?next=B,C&forward=baggage\|none\|all` | calls `B` (which calls `C`) through its sidecar's outbound port; one line per hop ([`call`]) |
//! | `POST /outbound?addr=ADDR` | the sidecar's outbound port, for `/call` |
//!
//! With `--reset` it answers nothing: every request's connection is closed.
//!
//! It prints `bound to ADDR` at once (its port, refusing connections during `--startup-delay-ms`)
//! and `listening on ADDR` once it accepts; on SIGTERM it stops accepting and lets requests in
//! flight finish.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpSocket;

/// `berth sample-app`.
#[derive(Debug, Clone, clap::Args)]
#[command(about = "Run a small HTTP app (HTTP/1.1 and h2c) for demos, tests and benchmarks")]
pub struct SampleAppArgs {
    /// Address to listen on; port 0 picks a free port (printed as `listening on ADDR`).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Name it answers with (`hello from NAME`).
    #[arg(long, default_value = "sample", value_name = "NAME")]
    pub name: String,
    /// Symbol it reports in `x-app-symbol`.
    #[arg(long, default_value = "stable", value_name = "SYMBOL")]
    pub symbol: String,
    /// Wait this many milliseconds before listening (a slow start).
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub startup_delay_ms: u64,
    /// Answer every request by closing the connection (a broken instance, for tests).
    #[arg(long)]
    pub reset: bool,
    /// Its sidecar's outbound port, which `/call` sends through (or `POST /outbound?addr=`).
    #[arg(long, value_name = "ADDR")]
    pub outbound: Option<SocketAddr>,
}

mod call;

struct App {
    name: HeaderValue,
    symbol: HeaderValue,
    hello: Bytes,
    health: Mutex<Health>,
    caller: call::Caller,
}

/// What `GET /healthz` answers, and what it has answered.
#[derive(Debug, Default)]
struct Health {
    failing: bool,
    /// Answers left before `failing` flips.
    flip_after: Option<u64>,
    /// `P` or `F` per answer given.
    log: String,
}

impl Health {
    fn answer(&mut self) -> bool {
        let ok = !self.failing;
        if let Some(n) = self.flip_after.as_mut() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.failing = !self.failing;
                self.flip_after = None;
            }
        }
        self.log.push(if ok { 'P' } else { 'F' });
        ok
    }
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Runs the app until SIGTERM or SIGINT.
pub fn main(args: SampleAppArgs) -> ExitCode {
    let runtime = match crate::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: SampleAppArgs) -> std::io::Result<()> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("invalid {what}"));
    let app = Arc::new(App {
        name: HeaderValue::from_str(&args.name).map_err(|_| bad("--name"))?,
        symbol: HeaderValue::from_str(&args.symbol).map_err(|_| bad("--symbol"))?,
        hello: Bytes::from(format!("hello from {}\n", args.name)),
        health: Mutex::new(Health::default()),
        caller: call::Caller::new(args.outbound),
    });
    // Bound at once, so the port is ours and known (`bound to ADDR`); listening only after
    // the startup delay, so until then connections are refused, as by an app still starting.
    let socket = if args.listen.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    // A given port may be taken again right after an earlier app on it stopped; port 0 gets a
    // port of its own that nobody else can bind while it waits.
    socket.set_reuseaddr(args.listen.port() != 0)?;
    socket.bind(args.listen)?;
    println!("bound to {}", socket.local_addr()?);
    tokio::time::sleep(Duration::from_millis(args.startup_delay_ms)).await;
    let listener = socket.listen(1024)?;
    println!("listening on {}", listener.local_addr()?);
    let graceful = GracefulShutdown::new();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        };
        let _ = stream.set_nodelay(true);
        let (app, reset) = (app.clone(), args.reset);
        let svc = service_fn(move |req| {
            let app = app.clone();
            async move {
                if reset {
                    // An error from the service makes hyper close the connection unanswered.
                    return Err(std::io::Error::other("--reset: closing without an answer"));
                }
                Ok(app.handle(req).await)
            }
        });
        let conn = auto::Builder::new(TokioExecutor::new())
            .serve_connection_with_upgrades(TokioIo::new(stream), svc)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(30), graceful.shutdown()).await;
    Ok(())
}

fn query_u64(req: &Request<Incoming>, key: &str) -> Option<u64> {
    req.uri().query()?.split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed_unsync()
}

impl App {
    fn lock_health(&self) -> std::sync::MutexGuard<'_, Health> {
        // A panic while holding it leaves the answers consistent: take them as they are.
        self.health.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let mut resp = match (req.method(), req.uri().path()) {
            (&Method::GET, "/") => Response::new(full(self.hello.clone())),
            (&Method::GET, "/healthz") => match self.lock_health().answer() {
                true => Response::new(full("ok\n")),
                false => status(StatusCode::SERVICE_UNAVAILABLE, "unhealthy\n"),
            },
            (&Method::GET, "/healthz/log") => Response::new(full(self.lock_health().log.clone())),
            (&Method::POST, "/healthz") => {
                let ok = !req.uri().query().is_some_and(|q| q.split('&').any(|kv| kv == "ok=false"));
                let mut health = self.lock_health();
                health.failing = !ok;
                health.flip_after = query_u64(&req, "for").filter(|n| *n > 0);
                Response::new(full(if ok { "healthy\n" } else { "unhealthy\n" }))
            }
            (&Method::GET, "/slow") => {
                tokio::time::sleep(Duration::from_millis(query_u64(&req, "ms").unwrap_or(1000))).await;
                Response::new(full(self.hello.clone()))
            }
            (&Method::GET, "/stream") => {
                let chunks = query_u64(&req, "chunks").unwrap_or(10);
                let gap = Duration::from_millis(query_u64(&req, "ms").unwrap_or(100));
                let stream = futures_util::stream::unfold(0, move |i| async move {
                    if i >= chunks {
                        return None;
                    }
                    if i > 0 {
                        tokio::time::sleep(gap).await;
                    }
                    Some((Ok::<_, Infallible>(Frame::data(Bytes::from(format!("chunk {i}\n")))), i + 1))
                });
                Response::new(StreamBody::new(stream).boxed_unsync())
            }
            (_, "/echo") => echo(req).await,
            (&Method::GET, "/call") => self.caller.call(&req, self.name.to_str().unwrap_or("?")).await,
            (&Method::POST, "/outbound") => self.caller.set_outbound(req.uri().query()),
            (&Method::GET, "/upgrade") if req.headers().contains_key(http::header::UPGRADE) => upgrade(req),
            _ => status(StatusCode::NOT_FOUND, "not found\n"),
        };
        resp.headers_mut().insert("x-app-name", self.name.clone());
        resp.headers_mut().insert("x-app-symbol", self.symbol.clone());
        resp
    }
}

async fn echo(req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let size = body.collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
        .collect();
    let doc = serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map(|p| p.as_str()),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_bytes": size,
    });
    let mut resp = Response::new(full(doc.to_string()));
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Switches protocols, then echoes what the client sends until it closes.
fn upgrade(mut req: Request<Incoming>) -> Response<Body> {
    let protocol = req.headers()[http::header::UPGRADE].clone();
    let on = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(upgraded) = on.await {
            let (mut read, mut write) = tokio::io::split(TokioIo::new(upgraded));
            let _ = tokio::io::copy(&mut read, &mut write).await;
        }
    });
    let mut resp = status(StatusCode::SWITCHING_PROTOCOLS, "");
    resp.headers_mut().insert(http::header::UPGRADE, protocol);
    resp.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("upgrade"));
    resp
}

fn status(code: StatusCode, text: &'static str) -> Response<Body> {
    let mut resp = Response::new(full(text));
    *resp.status_mut() = code;
    resp
}
