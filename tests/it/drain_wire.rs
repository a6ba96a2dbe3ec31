//! The drain as a client sees it on the wire: the HTTP/2 GOAWAY frame itself, and a late
//! request keeping the drain going.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{App, Sidecar, client, dir_registry, eventually};

const T: Duration = Duration::from_secs(15);

/// HTTP/2 frame types (RFC 9113 §6).
pub(crate) const HEADERS: u8 = 0x1;
pub(crate) const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
pub(crate) const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;

async fn serving(service: &str, extra: &[&str]) -> (App, Sidecar, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let app = App::start(service).await;
    let sidecar = Sidecar::start(service, app.addr.port(), &dir_registry(&dir), extra).await;
    sidecar.wait_ready(T).await;
    (app, sidecar, dir)
}

pub(crate) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Reads one frame: (type, flags, stream, payload).
async fn read_frame(s: &mut TcpStream) -> (u8, u8, u32, Vec<u8>) {
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await.unwrap();
    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.unwrap();
    (head[3], head[4], stream, payload)
}

/// Reads frames, acknowledging SETTINGS and PINGs, until one of type `want` arrives.
pub(crate) async fn until_frame(s: &mut TcpStream, want: u8) -> (u8, u32, Vec<u8>) {
    loop {
        let (kind, flags, stream, payload) = read_frame(s).await;
        if kind == want {
            return (flags, stream, payload);
        }
        if kind == SETTINGS && flags & ACK == 0 {
            s.write_all(&frame(SETTINGS, ACK, 0, &[])).await.unwrap();
        }
        if kind == PING && flags & ACK == 0 {
            s.write_all(&frame(PING, ACK, 0, &payload)).await.unwrap();
        }
    }
}

#[tokio::test]
async fn a_drain_sends_an_http2_goaway_frame_at_once() {
    let (_app, sidecar, _dir) = serving("goaway", &["--drain-min", "30s", "--drain-timeout", "60s"]).await;
    let mut s = TcpStream::connect(sidecar.inbound).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    s.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    // GET / on stream 1, HPACK by hand: :method GET, :scheme http, :path / (static table 2, 6,
    // 4) and :authority (name 1) as a literal never indexed.
    let mut block = vec![0x82, 0x86, 0x84, 0x01, 6];
    block.extend_from_slice(b"goaway");
    s.write_all(&frame(HEADERS, 0x1 | 0x4, 1, &block)).await.unwrap();
    let (_, stream, _) = tokio::time::timeout(T, until_frame(&mut s, HEADERS)).await.expect("a response");
    assert_eq!(stream, 1);

    let drain = client().post(sidecar.admin_url("/drain")).send().await.unwrap();
    assert_eq!(drain.status(), 202);
    let (_, stream, payload) = tokio::time::timeout(T, until_frame(&mut s, GOAWAY))
        .await
        .expect("a GOAWAY frame after the drain began");
    assert_eq!(stream, 0, "GOAWAY is a connection frame");
    let error = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
    assert_eq!(error, 0, "a graceful GOAWAY carries NO_ERROR");
    // Sent at the drain's start, not when drain-min (30 s) ends.
    assert_eq!(sidecar.state().await["drain"]["closing"], false);
}

#[tokio::test]
async fn a_late_request_keeps_the_drain_going() {
    let timing = ["--drain-min", "500ms", "--drain-quiet", "5s", "--drain-timeout", "10m"];
    let (_app, mut sidecar, _dir) = serving("late", &timing).await;
    client().post(sidecar.admin_url("/drain")).send().await.unwrap();
    // Requests every 250 ms from the drain's start: past drain-min, each one that arrives
    // restarts the 5 s quiet period, so 25 of them after drain-min (over 6 s) are all served.
    let mut after_min = 0;
    let mut sent = 0;
    while after_min < 25 {
        let closing = sidecar.state().await["drain"]["closing"] == true;
        let resp = client()
            .get(sidecar.url("/"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("request {sent} (drain-min over: {closing}) not served: {e:?}"));
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-berth-lifecycle"], "draining");
        sent += 1;
        after_min += u32::from(closing);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Quiet now: the drain ends on its own, cleanly, having counted every request.
    let status = sidecar.proc.wait_exit(T).await;
    let out = sidecar.proc.output();
    assert_eq!(status.code(), Some(0), "{out}");
    eventually(T, "the end logged", || async { out.contains("stopped: drain complete") }).await;
    assert!(out.contains(&format!("served_while_draining={sent}")), "{sent} requests: {out}");
}
