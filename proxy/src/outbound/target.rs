//! Which service a request from the app is for, in the three forms the outbound port takes:
//! an HTTP proxy request (`GET http://user-service/path`), a `Host` header naming the service,
//! or a path prefix `/<service>.<symbol>/path` (the prefix is stripped).

use berth_core::Symbol;
use http::Uri;
use http::uri::PathAndQuery;

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub service: String,
    /// A symbol the request itself names (path prefix form).
    pub symbol: Option<Symbol>,
    /// What the provider sees as the request target.
    pub path: PathAndQuery,
    /// What the provider sees as `Host`, when it is not the service's name.
    pub host: Option<String>,
}

/// A request that names no service.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error(
        "no service in the request: send it as a proxy request (http://SERVICE/path), with `Host: SERVICE`, or to /SERVICE.SYMBOL/path"
    )]
    NoService,
    #[error("bad symbol in the path prefix: {0}")]
    BadSymbol(String),
}

/// Whether a host is this machine rather than a service name.
fn is_local(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok()
        || host.starts_with('[')
}

/// The host of an authority (`user@host:port`, `[v6]:port`), as `http::uri::Authority::host`
/// gives it, without parsing it into a copy: every request through the outbound port asks.
fn host_only(authority: &str) -> &str {
    let a = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if a.starts_with('[') {
        return a.find(']').map_or(a, |i| &a[..=i]);
    }
    match a.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => a,
    }
}

/// Resolves the target of a request from its URI and `Host` header.
pub fn resolve(uri: &Uri, host_header: Option<&str>) -> Result<Target, TargetError> {
    let authority = uri.authority().map(|a| a.as_str()).or(host_header).unwrap_or("");
    let host = host_only(authority);
    if !host.is_empty() && !is_local(host) {
        let path = uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        let authority = (authority != host).then(|| authority.to_owned());
        return Ok(Target { service: host.to_owned(), symbol: None, path, host: authority });
    }
    // /service.symbol/rest
    let raw = uri.path_and_query().map_or("/", PathAndQuery::as_str);
    let rest = raw.strip_prefix('/').ok_or(TargetError::NoService)?;
    let (prefix, remainder) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (service, symbol) = prefix.rsplit_once('.').ok_or(TargetError::NoService)?;
    if service.is_empty() {
        return Err(TargetError::NoService);
    }
    let symbol: Symbol = symbol
        .parse()
        .map_err(|e: berth_core::symbol::InvalidSymbol| TargetError::BadSymbol(e.to_string()))?;
    let path = match remainder {
        "" => Ok(PathAndQuery::from_static("/")),
        r if r.starts_with('?') => PathAndQuery::try_from(format!("/{r}")),
        r => PathAndQuery::try_from(r),
    };
    let path = path.map_err(|_| TargetError::NoService)?;
    Ok(Target { service: service.to_owned(), symbol: Some(symbol), path, host: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(uri: &str, host: Option<&str>) -> Result<Target, TargetError> {
        resolve(&uri.parse().unwrap(), host)
    }

    #[test]
    fn proxy_form() {
        let got = t("http://user-service:8080/users/7?x=1", None).unwrap();
        assert_eq!(got.service, "user-service");
        assert_eq!(got.path, "/users/7?x=1");
        assert_eq!(got.host.as_deref(), Some("user-service:8080"));
        assert_eq!(got.symbol, None);
    }

    #[test]
    fn host_header() {
        let got = t("/users", Some("user-service")).unwrap();
        assert_eq!((got.service.as_str(), got.path.as_str()), ("user-service", "/users"));
    }

    #[test]
    fn path_prefix_is_stripped() {
        let got = t("/user-service.canary/users/7?x=1", Some("127.0.0.1:15001")).unwrap();
        assert_eq!(got.service, "user-service");
        assert_eq!(got.symbol.unwrap().as_str(), "canary");
        assert_eq!(got.path, "/users/7?x=1");
        assert_eq!(got.host, None, "the service's name");
        assert_eq!(t("/svc.stable", Some("localhost")).unwrap().path, "/");
        assert_eq!(t("/svc.stable?a=b", Some("localhost")).unwrap().path, "/?a=b");
        assert_eq!(t("/a.b.stable/x", Some("[::1]:15001")).unwrap().service, "a.b");
    }

    #[test]
    fn host_only_is_the_authority_host() {
        for (authority, host) in [
            ("svc", "svc"),
            ("svc:8080", "svc"),
            ("user:pw@svc:8080", "svc"),
            ("127.0.0.1:15001", "127.0.0.1"),
            ("[::1]:15001", "[::1]"),
            ("[::1]", "[::1]"),
            ("", ""),
        ] {
            assert_eq!(host_only(authority), host, "{authority}");
            if let Ok(a) = authority.parse::<http::uri::Authority>() {
                assert_eq!(a.host(), host, "{authority} as http parses it");
            }
        }
    }

    #[test]
    fn nothing_to_route_by() {
        assert_eq!(t("/users", Some("127.0.0.1:15001")), Err(TargetError::NoService));
        assert_eq!(t("/users", None), Err(TargetError::NoService));
        assert!(matches!(t("/svc.Bad/x", Some("localhost")), Err(TargetError::BadSymbol(_))));
    }
}
