//! Zombies: instances still registered that answer nothing useful.
//!
//! Each instance is probed — a TCP connect, then `GET /` over HTTP/1.1, each bounded by the
//! probe timeout — at most [`CONCURRENCY`] at a time. An instance is a zombie when the
//! connection is refused or times out, when no HTTP answer comes in time, or when it answers
//! 502/503 with `x-berth-error` (its sidecar is up but its app is not). Anything else that
//! answers, even with an error status, is alive.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, StatusCode, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;

/// How many instances are probed at once.
pub const CONCURRENCY: usize = 16;

/// The header a berth sidecar puts on the errors it writes itself.
pub use berth_core::header::ERROR as ERROR_HEADER;

/// A registered instance that failed its probe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Zombie {
    pub address: SocketAddr,
    pub symbol: String,
    /// What the probe saw.
    pub reason: String,
}

/// Probes every `(address, symbol)` and returns the zombies, in address order.
pub async fn find(instances: Vec<(SocketAddr, String)>, timeout: Duration) -> Vec<Zombie> {
    let mut zombies: Vec<Zombie> = futures_util::stream::iter(instances)
        .map(|(address, symbol)| async move {
            probe(address, timeout).await.map(|reason| Zombie { address, symbol, reason })
        })
        .buffer_unordered(CONCURRENCY)
        .filter_map(std::future::ready)
        .collect()
        .await;
    zombies.sort_by_key(|z| z.address);
    zombies
}

/// Why `addr` is a zombie, or `None` when it is alive.
pub async fn probe(addr: SocketAddr, timeout: Duration) -> Option<String> {
    let t = humantime::format_duration(timeout);
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => return Some(format!("no connection within {t}")),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Some("connection refused".into());
        }
        Ok(Err(e)) => return Some(format!("cannot connect: {e}")),
        Ok(Ok(s)) => s,
    };
    let exchange = async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let conn = tokio::spawn(conn);
        let req = Request::get("/")
            .header(header::HOST, addr.to_string())
            .header(header::USER_AGENT, "berth-admin zombie probe")
            .body(Empty::<Bytes>::new())
            .unwrap_or_default();
        let resp = sender.send_request(req).await;
        conn.abort();
        resp
    };
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => Some(format!("no HTTP answer within {t}")),
        // It accepts connections but does not speak HTTP/1.1 on `/`: not ours to judge.
        Ok(Err(_)) => None,
        Ok(Ok(resp)) => {
            let sick = matches!(resp.status(), StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE);
            let berth_error =
                resp.headers().get(ERROR_HEADER).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            match berth_error {
                Some(code) if sick => {
                    Some(format!("answers {} with {ERROR_HEADER}: {code}", resp.status().as_u16()))
                }
                _ => None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn serve_once(status: u16, berth_error: bool) -> SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let extra = if berth_error { "x-berth-error: app-unavailable\r\n" } else { "" };
            let resp = format!("HTTP/1.1 {status} X\r\n{extra}content-length: 0\r\n\r\n");
            s.write_all(resp.as_bytes()).await.unwrap();
        });
        addr
    }

    #[tokio::test]
    async fn what_counts_as_a_zombie() {
        let t = Duration::from_millis(500);
        let refused = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        assert_eq!(probe(refused, t).await.as_deref(), Some("connection refused"));
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let reason = probe(silent.local_addr().unwrap(), t).await.unwrap();
        assert!(reason.contains("no HTTP answer within 500ms"), "{reason}");
        let sick = probe(serve_once(503, true).await, t).await.unwrap();
        assert_eq!(sick, "answers 503 with x-berth-error: app-unavailable");
        assert_eq!(probe(serve_once(503, false).await, t).await, None, "an app's own 503 is alive");
        assert_eq!(probe(serve_once(404, true).await, t).await, None);
        assert_eq!(probe(serve_once(200, false).await, t).await, None);
    }

    #[tokio::test]
    async fn find_reports_only_zombies_in_order() {
        let alive = serve_once(200, false).await;
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let found =
            find(vec![(alive, "stable".into()), (dead, "canary".into())], Duration::from_secs(1)).await;
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].address, found[0].symbol.as_str()), (dead, "canary"));
    }
}
