//! How health is checked: the app's own check (`--app-health`, `berth.io/app-health`) and each
//! dependency's (`--dependency`, `berth.io/dependencies`). The sidecar runs them; the injector
//! validates a pod's annotations with the same parsers, so a pod it admits gets a sidecar that
//! starts.

use std::fmt;
use std::str::FromStr;

/// The app's health check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppHealth {
    /// A GET of this path on the app's port must answer 2xx or 3xx.
    Http { path: String },
    /// The app's port must accept a TCP connection.
    Tcp,
}

impl FromStr for AppHealth {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tcp" => Ok(AppHealth::Tcp),
            _ => match s.strip_prefix("http:") {
                Some(path) if path.starts_with('/') && !path.contains(char::is_whitespace) => {
                    Ok(AppHealth::Http { path: path.to_owned() })
                }
                _ => Err("expected `http:/path` (e.g. http:/healthz) or `tcp`".into()),
            },
        }
    }
}

impl fmt::Display for AppHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppHealth::Http { path } => write!(f, "http:{path}"),
            AppHealth::Tcp => f.write_str("tcp"),
        }
    }
}

/// A dependency check: `tcp://host:port` or `http://host:port/path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// The address must accept a TCP connection.
    Tcp { host: String, port: u16 },
    /// A GET must answer 2xx or 3xx.
    Http { host: String, port: u16, path: String },
}

impl Check {
    /// `host:port` of the target.
    pub fn authority(&self) -> String {
        let (Check::Tcp { host, port } | Check::Http { host, port, .. }) = self;
        format!("{host}:{port}")
    }
}

impl FromStr for Check {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const FORMS: &str = "expected tcp://host:port or http://host:port/path";
        let (scheme, rest) = s.split_once("://").ok_or(FORMS)?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = authority.rsplit_once(':').ok_or(format!("no port in `{authority}`; {FORMS}"))?;
        let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or(format!("bad port `{port}`; {FORMS}"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(format!("bad host in `{authority}`; {FORMS}"));
        }
        match scheme {
            "tcp" if path == "/" => Ok(Check::Tcp { host: host.into(), port }),
            "tcp" => Err(format!("a tcp check takes no path; {FORMS}")),
            "http" => Ok(Check::Http { host: host.into(), port, path: path.into() }),
            _ => Err(format!("unknown scheme `{scheme}`; {FORMS}")),
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Check::Tcp { .. } => write!(f, "tcp://{}", self.authority()),
            Check::Http { path, .. } => write!(f, "http://{}{path}", self.authority()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_health_forms() {
        assert_eq!("tcp".parse::<AppHealth>(), Ok(AppHealth::Tcp));
        assert_eq!("http:/healthz".parse::<AppHealth>(), Ok(AppHealth::Http { path: "/healthz".into() }));
        for bad in ["http:healthz", "http:/a b", "udp", ""] {
            assert!(bad.parse::<AppHealth>().is_err(), "{bad}");
        }
        assert_eq!(AppHealth::Http { path: "/x".into() }.to_string(), "http:/x");
    }

    #[test]
    fn dependency_forms() {
        let tcp: Check = "tcp://db:5432".parse().unwrap();
        assert_eq!(tcp, Check::Tcp { host: "db".into(), port: 5432 });
        assert_eq!(tcp.to_string(), "tcp://db:5432");
        let http: Check = "http://[::1]:8080/ready".parse().unwrap();
        assert_eq!(http, Check::Http { host: "::1".into(), port: 8080, path: "/ready".into() });
        assert_eq!("http://cache:80".parse::<Check>().unwrap().to_string(), "http://cache:80/");
        for (bad, says) in [
            ("db:5432", "expected tcp://"),
            ("tcp://db", "no port"),
            ("tcp://db:0", "bad port"),
            ("tcp://db:5432/x", "takes no path"),
            ("udp://db:53", "unknown scheme"),
            ("tcp://:80", "bad host"),
        ] {
            let err = bad.parse::<Check>().unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
