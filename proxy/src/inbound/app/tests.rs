use clap::Parser;

use super::*;
use crate::config::{ConfigError, ProxyArgs};

#[derive(Debug, Parser)]
struct Cmd {
    #[command(flatten)]
    args: ProxyArgs,
}

fn parse(extra: &[&str]) -> Result<AppSettings, ConfigError> {
    let argv = ["berth", "--service", "s", "--app-port", "8080"].iter().chain(extra);
    Ok(Cmd::try_parse_from(argv)?.args.validate()?.app_pool)
}

#[test]
fn options_have_defaults_and_zero_means_no_request_timeout() {
    let defaults = parse(&[]).unwrap();
    assert_eq!(
        defaults,
        AppSettings {
            max_connections: 128,
            max_connecting: 4,
            queue_timeout: Duration::from_secs(5),
            request_timeout: Some(Duration::from_secs(30)),
        }
    );
    let set =
        parse(&["--app-max-connections", "3", "--app-max-connecting", "1", "--app-request-timeout", "0s"])
            .unwrap();
    assert_eq!((set.max_connections, set.max_connecting, set.request_timeout), (3, 1, None));
}

#[test]
fn bad_values_name_the_option() {
    for (args, option) in [
        (&["--app-queue-timeout", "0s"][..], "--app-queue-timeout"),
        (&["--app-max-connections", "0"][..], "--app-max-connections"),
        (&["--app-max-connecting", "many"][..], "--app-max-connecting"),
        (&["--app-request-timeout", "soon"][..], "--app-request-timeout"),
    ] {
        let err = parse(args).unwrap_err().to_string();
        assert!(err.contains(option), "{args:?}: {err}");
    }
}

fn pool(addr: SocketAddr, max_connections: u32, app_healthy: bool) -> (AppPool, watch::Sender<Health>) {
    let settings = AppSettings {
        max_connections,
        max_connecting: 1,
        queue_timeout: Duration::from_secs(5),
        request_timeout: None,
    };
    let (tx, rx) = watch::channel(Health { healthy: app_healthy, app: app_healthy, failing: Vec::new() });
    (AppPool::new(addr, AppProtocol::Http1, settings, rx), tx)
}

/// A loopback port that refuses connections: bound (so no one else takes it) but not
/// listening. Keep the socket for the test's length.
fn refusing() -> (tokio::net::TcpSocket, SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, addr)
}

#[tokio::test(start_paused = true)]
async fn a_request_waits_for_a_lent_connection_and_gives_up_at_the_queue_timeout() {
    let (_socket, addr) = refusing();
    let (pool, _health) = pool(addr, 1, true);
    let start = Instant::now();
    let first = pool.lend(&mut Deadline::after(Duration::from_secs(5))).await.unwrap();
    // The second waits for the first's connection…
    let mut deadline = Deadline::after(Duration::from_secs(5));
    let (second, ()) = tokio::join!(pool.lend(&mut deadline), async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(first);
    });
    assert!(second.is_ok(), "the second request got the connection the first gave back");
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    // …and, while it holds it, a third gives up at the deadline.
    let third = pool.lend(&mut deadline).await.unwrap_err();
    assert!(matches!(third, Unavailable::Busy { max: 1, .. }), "{third}");
    assert_eq!(start.elapsed(), Duration::from_secs(5));
}

#[tokio::test]
async fn a_refused_connect_fails_at_once_while_the_app_is_down() {
    let (_socket, addr) = refusing();
    let (pool, _health) = pool(addr, 8, false);
    let err = pool.checkout(&mut Deadline::after(Duration::from_secs(5))).await.unwrap_err();
    assert!(matches!(err, Unavailable::Connect { attempts: 1, .. }), "{err}");
}

#[tokio::test]
async fn a_refused_connect_is_retried_a_few_times_while_the_app_is_healthy() {
    let (_socket, addr) = refusing();
    let (pool, _health) = pool(addr, 8, true);
    let err = pool.checkout(&mut Deadline::after(Duration::from_secs(5))).await.unwrap_err();
    assert!(matches!(err, Unavailable::Connect { attempts, .. } if attempts == REFUSED_RETRIES + 1), "{err}");
    assert!(err.to_string().contains("after 4 attempts while the app's health check passed"), "{err}");
}
