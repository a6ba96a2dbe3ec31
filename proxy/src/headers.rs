//! Header handling of a proxy hop (RFC 9110 §7.6): hop-by-hop fields are not forwarded, and
//! the client's address is appended to `x-forwarded-for`.

use http::header::{CONNECTION, HeaderName, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderValue};

/// `keep-alive` (RFC 9112 appendix C.2.2), not among `http`'s constants.
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
/// `proxy-connection`, sent by some old clients.
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
/// `x-forwarded-for`.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `x-forwarded-proto`.
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Removes hop-by-hop fields (RFC 9110 §7.6.1 and the fields that earlier RFCs and common
/// practice treat as such), including every field the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of them: one pass over the names (comparisons, no hashing) is
    // cheaper than the six hashed removals below, which ran on every request and response.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if headers.contains_key(CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        headers.remove(CONNECTION);
        for name in named {
            headers.remove(name);
        }
    }
    // `TE: trailers` is allowed end to end in HTTP/2 (RFC 9113 §8.2.2) and gRPC needs it.
    if let Some(te) = headers.remove(TE)
        && te.as_bytes().eq_ignore_ascii_case(b"trailers")
    {
        headers.insert(TE, te);
    }
    for name in [KEEP_ALIVE, PROXY_CONNECTION, TRANSFER_ENCODING, UPGRADE] {
        headers.remove(name);
    }
}

/// Whether `name` is one of the fields [`strip_hop_by_hop`] removes or checks by name.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    [CONNECTION, TE, KEEP_ALIVE, PROXY_CONNECTION, TRANSFER_ENCODING, UPGRADE].contains(name)
}

/// Appends `client` (an IP address as a header value) to `x-forwarded-for` and sets
/// `x-forwarded-proto` if absent.
pub fn add_forwarded(headers: &mut HeaderMap, client: &HeaderValue) {
    // One lookup per name (each hashes it): most requests carry neither field.
    match headers.entry(X_FORWARDED_FOR) {
        http::header::Entry::Vacant(e) => {
            e.insert(client.clone());
        }
        http::header::Entry::Occupied(mut e) => {
            let joined = match e.get().to_str() {
                Ok(prior) if !prior.trim().is_empty() => {
                    HeaderValue::try_from(format!("{prior}, {}", client.to_str().unwrap_or_default())).ok()
                }
                _ => Some(client.clone()),
            };
            if let Some(v) = joined {
                e.insert(v);
            }
        }
    }
    headers.entry(X_FORWARDED_PROTO).or_insert(HeaderValue::from_static("http"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named_fields() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "1"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-connection", "keep-alive"),
            ("te", "gzip"),
            ("x-app", "kept"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-app"], "kept");
    }

    #[test]
    fn each_hop_by_hop_field_alone_is_stripped() {
        // Without a `Connection` field too: the pass that decides whether to strip at all must
        // know every one of them.
        for name in ["keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te"] {
            let mut h = HeaderMap::new();
            h.append(name, HeaderValue::from_static("x"));
            h.append("x-app", HeaderValue::from_static("kept"));
            strip_hop_by_hop(&mut h);
            assert_eq!(h.len(), 1, "{name}: {h:?}");
        }
        let mut h = HeaderMap::new();
        h.append("x-app", HeaderValue::from_static("kept"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h["x-app"], "kept");
    }

    #[test]
    fn te_trailers_survives() {
        let mut h = HeaderMap::new();
        h.insert(TE, HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h[TE], "trailers");
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = HeaderMap::new();
        add_forwarded(&mut h, &HeaderValue::from_static("10.0.0.1"));
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        add_forwarded(&mut h, &HeaderValue::from_static("10.0.0.2"));
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 10.0.0.2");
        assert_eq!(h["x-forwarded-proto"], "http");
    }
}
