use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::*;

/// A test server: `/slow` reports that it started, then waits for a permit of `release`; `/`
/// answers at once.
struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    stopped: JoinHandle<Stopped>,
    entered: mpsc::UnboundedReceiver<()>,
    release: Arc<Semaphore>,
}

async fn server(grace: Duration) -> Server {
    server_of(grace, Connections::default()).await
}

/// A test server whose connections are `connections` (each request counted on its connection,
/// as the tracking layer does).
async fn server_of(grace: Duration, connections: Connections) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stop_rx) = oneshot::channel::<()>();
    let (enter, entered) = mpsc::unbounded_channel();
    let release = Arc::new(Semaphore::new(0));
    let gate = release.clone();
    let connection = move |stream: TcpStream, _, this: Arc<Connection>| {
        let (enter, gate) = (enter.clone(), gate.clone());
        async move {
            let counted = this.clone();
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (enter, gate) = (enter.clone(), gate.clone());
                let active = counted.start();
                async move {
                    let _active = active;
                    if req.uri().path() == "/slow" {
                        enter.send(()).unwrap();
                        gate.acquire().await.unwrap().forget();
                    }
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"done"))))
                }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            http(conn, &this).await;
        }
    };
    let stop_signal = async {
        let _ = stop_rx.await;
    };
    let stopped =
        tokio::spawn(serve("test", listener, stop_signal, grace, Arc::new(connections), connection));
    Server { addr, stop, stopped, entered, release }
}

type Client = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddr) -> (Client, JoinHandle<()>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    (send, conn)
}

fn get(path: &str) -> Request<Empty<Bytes>> {
    Request::get(path).header("host", "test").body(Empty::new()).unwrap()
}

#[tokio::test]
async fn a_request_in_progress_finishes_and_the_drain_waits_for_it() {
    let mut server = server(Duration::from_secs(30)).await;
    let (mut send, conn) = connect(server.addr).await;
    let slow = tokio::spawn(send.send_request(get("/slow")));
    server.entered.recv().await.unwrap();
    server.stop.send(()).unwrap();
    // Nothing can end the drain but the request: if it ended, it did not wait.
    let waited = tokio::time::timeout(Duration::from_millis(300), &mut server.stopped).await;
    assert!(waited.is_err(), "the drain ended with a request in progress: {waited:?}");
    assert!(TcpStream::connect(server.addr).await.is_err(), "the listener still accepts after the stop");

    server.release.add_permits(1);
    let resp = slow.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    // Shut down gracefully: the response in progress says the connection closes after it.
    assert_eq!(resp.headers()["connection"], "close");
    assert_eq!(&resp.into_body().collect().await.unwrap().to_bytes()[..], b"done");
    conn.await.unwrap();
    assert_eq!(server.stopped.await.unwrap(), Stopped { abandoned: 0 });
}

#[tokio::test]
async fn idle_connections_close_at_once_when_the_listener_stops() {
    let server = server(Duration::from_secs(30)).await;
    let (mut send, conn) = connect(server.addr).await;
    let resp = send.send_request(get("/")).await.unwrap();
    assert!(resp.headers().get("connection").is_none(), "kept alive before the stop");
    resp.into_body().collect().await.unwrap();
    server.stop.send(()).unwrap();
    // The server closes the idle keep-alive connection, and the drain then ends.
    tokio::time::timeout(Duration::from_secs(10), conn).await.expect("the idle connection closed").unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), server.stopped).await.expect("the drain ended");
    assert_eq!(ended.unwrap(), Stopped { abandoned: 0 });
}

#[tokio::test]
async fn the_grace_period_bounds_the_wait_for_a_stuck_connection() {
    let mut server = server(Duration::from_millis(300)).await;
    let (mut send, _conn) = connect(server.addr).await;
    let _stuck = tokio::spawn(send.send_request(get("/slow")));
    server.entered.recv().await.unwrap();
    let (mut idle, _idle_conn) = connect(server.addr).await;
    idle.send_request(get("/")).await.unwrap().into_body().collect().await.unwrap();
    server.stop.send(()).unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), server.stopped)
        .await
        .expect("the grace period ended it");
    // The idle connection closed; the stuck one is left behind.
    assert_eq!(ended.unwrap(), Stopped { abandoned: 1 });
}

/// Whether the server closed `stream` (EOF or reset) within `within`; bytes it sends are read
/// and dropped.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn the_idle_sweep_closes_silent_and_slow_loris_connections_and_keeps_busy_ones() {
    use tokio::io::AsyncWriteExt;
    let idle = Duration::from_millis(300);
    let server = server_of(Duration::from_secs(30), Connections::closing_idle(idle)).await;
    // Says nothing at all.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    // Sends a request head a field at a time, never ending it.
    let mut loris = TcpStream::connect(server.addr).await.unwrap();
    loris.write_all(b"GET / HTTP/1.1\r\nhost: test\r\n").await.unwrap();
    let trickle = tokio::spawn(async move {
        for i in 0.. {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if loris.write_all(format!("x-{i}: 1\r\n").as_bytes()).await.is_err() {
                return loris;
            }
            if i == 100 {
                return loris;
            }
        }
        loris
    });
    // Asks something every 100 ms, for five idle timeouts, on one connection.
    let (mut busy, _busy_conn) = connect(server.addr).await;
    for _ in 0..15 {
        let resp = busy.send_request(get("/")).await.expect("the busy connection is kept");
        assert!(resp.headers().get("connection").is_none(), "the busy connection was told it closes");
        resp.into_body().collect().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await, "the silent connection is open");
    let mut loris =
        tokio::time::timeout(Duration::from_secs(10), trickle).await.expect("writes ended").unwrap();
    assert!(closed_within(&mut loris, Duration::from_secs(5)).await, "the slow-loris connection is open");
    // Then, left alone, the busy one is idle too.
    tokio::time::timeout(Duration::from_secs(5), _busy_conn)
        .await
        .expect("the idle connection closed")
        .unwrap();
}

#[tokio::test]
async fn a_request_longer_than_the_idle_timeout_is_answered_and_its_connection_kept() {
    let idle = Duration::from_millis(200);
    let mut server = server_of(Duration::from_secs(30), Connections::closing_idle(idle)).await;
    let (mut send, _conn) = connect(server.addr).await;
    let slow = tokio::spawn(send.send_request(get("/slow")));
    server.entered.recv().await.unwrap();
    // Five idle timeouts with the request in progress: a sweep that ignored it would have
    // closed the connection and told the response so.
    tokio::time::sleep(idle * 5).await;
    server.release.add_permits(1);
    let resp = slow.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("connection").is_none(), "the connection was closed under the request");
    assert_eq!(&resp.into_body().collect().await.unwrap().to_bytes()[..], b"done");
}
