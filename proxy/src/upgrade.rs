//! HTTP/1.1 upgrades (WebSocket and the like), carried through.
//!
//! A request asking for an upgrade keeps its `Upgrade` and `Connection: upgrade` fields (every
//! other hop-by-hop field is still removed) and goes upstream over an HTTP/1.1 connection of
//! its own. When the upstream answers `101 Switching Protocols`, the client's and the
//! upstream's connections are joined byte for byte until either side closes. Tunnels are not
//! requests in flight: a drain does not wait for them, and they end when the sidecar exits.

use http::header::{CONNECTION, UPGRADE};
use http::{HeaderMap, HeaderValue, Request, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// Whether the request asks for an upgrade: HTTP/1.1, an `Upgrade` field, and `upgrade` among
/// the `Connection` tokens.
pub fn requested<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(UPGRADE)
        && req
            .headers()
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// The `Upgrade` field to put back after hop-by-hop fields were removed.
pub fn protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    headers.get(UPGRADE).cloned()
}

/// Puts the upgrade fields back.
pub fn restore(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(UPGRADE, protocol);
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
}

/// Joins the two upgraded connections until either side closes.
pub fn tunnel(client: OnUpgrade, upstream: OnUpgrade, upstream_addr: std::net::SocketAddr) {
    tokio::spawn(async move {
        match tokio::try_join!(client, upstream) {
            Ok((client, upstream)) => {
                let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
                match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                    Ok((up, down)) => {
                        tracing::debug!(upstream = %upstream_addr, up, down, "upgraded connection closed")
                    }
                    Err(e) => {
                        tracing::debug!(upstream = %upstream_addr, error = %e, "upgraded connection ended")
                    }
                }
            }
            Err(e) => tracing::debug!(upstream = %upstream_addr, error = %e, "upgrade failed"),
        }
    });
}
