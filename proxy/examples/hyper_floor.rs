//! The floor berth's sidecar stands on: the same hop done by hyper alone, with no berth code.
//!
//! `hyper_floor LISTEN APP` accepts HTTP/1.1 and HTTP/2 on LISTEN (hyper-util's auto server, as
//! the sidecar's inbound uses) and sends every request to APP over pooled HTTP/1.1 connections
//! (hyper's client connection, as the sidecar's app pool uses). Nothing else: no headers added
//! or removed, no metrics, no timeouts, no draining. `benches/` measures it beside berth so the
//! instructions per request that hyper itself costs can be told from berth's own.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};

type Body = http_body_util::combinators::BoxBody<bytes::Bytes, hyper::Error>;
type Pool = Arc<Mutex<Vec<SendRequest<Incoming>>>>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(app)) = (args.next(), args.next()) else {
        eprintln!("usage: hyper_floor LISTEN APP   (e.g. 127.0.0.1:8080 127.0.0.1:9000)");
        std::process::exit(64);
    };
    let (listen, app): (SocketAddr, SocketAddr) = (listen.parse()?, app.parse()?);
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(serve(listen, app))
}

async fn serve(listen: SocketAddr, app: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind(listen).await?;
    let pool: Pool = Arc::default();
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let pool = pool.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| forward(req, app, pool.clone()));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn forward(
    req: Request<Incoming>,
    app: SocketAddr,
    pool: Pool,
) -> Result<Response<Body>, hyper::Error> {
    let taken = pool.lock().map(|mut p| p.pop()).unwrap_or(None);
    let mut sender = match taken {
        Some(mut s) => match s.ready().await {
            Ok(()) => s,
            Err(_) => connect(app).await?,
        },
        None => connect(app).await?,
    };
    let resp = sender.send_request(req).await?;
    if let Ok(mut p) = pool.lock() {
        p.push(sender);
    }
    Ok(resp.map(|b| b.boxed()))
}

async fn connect(app: SocketAddr) -> Result<SendRequest<Incoming>, hyper::Error> {
    let stream = match TcpStream::connect(app).await {
        Ok(s) => s,
        // A request that cannot be sent fails its connection; the client sees it closed.
        Err(e) => {
            eprintln!("hyper_floor: connect {app}: {e}");
            std::process::exit(1);
        }
    };
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}
