//! Registry URLs: `nacos://[user:password@]host:port[,host:port…][?namespace=…&group=…&grpc_port=…]`
//! and `dir:///absolute/path[?namespace=…&group=…]`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// The namespace used when a URL names none (Nacos's own default).
pub const DEFAULT_NAMESPACE: &str = "public";
/// The naming group used when a URL names none (Nacos's own default).
pub const DEFAULT_GROUP: &str = "DEFAULT_GROUP";

/// Which registry to use, and where.
#[derive(Clone, PartialEq, Eq)]
pub enum RegistryUrl {
    /// A Nacos (or rnacos) server.
    Nacos(NacosUrl),
    /// A local directory.
    Dir(DirUrl),
}

/// Where a Nacos server is, and which namespace and group to use.
#[derive(Clone, PartialEq, Eq)]
pub struct NacosUrl {
    /// `host:port` of each server.
    pub servers: Vec<String>,
    /// Nacos namespace (id); `public` is Nacos's default.
    pub namespace: String,
    /// Naming group of the services.
    pub group: String,
    /// The gRPC port, when it is not the HTTP port + 1000.
    pub grpc_port: Option<u16>,
    /// User name for Nacos auth, if enabled.
    pub username: Option<String>,
    /// Password for Nacos auth; never printed.
    pub password: Option<String>,
}

/// A directory registry's root, namespace and group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirUrl {
    /// The directory everything lives under.
    pub root: PathBuf,
    /// Namespace (a sub-directory).
    pub namespace: String,
    /// Naming group (a sub-directory).
    pub group: String,
}

/// A registry URL that cannot be used, and why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct InvalidRegistryUrl(String);

const FORMS: &str = "expected nacos://host:port[?namespace=NS&group=GROUP] or dir:///absolute/path";

/// The password of `scheme://user:password@host…`, if the text has one (parsed or not: for
/// error messages about text that may not parse).
pub fn password_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let userinfo = authority.rsplit_once('@')?.0;
    userinfo.split_once(':').map(|(_, p)| p).filter(|p| !p.is_empty())
}

/// `text` with the password of every URL-like part it quotes replaced by `***`.
pub fn without_password(url: &str, text: &str) -> String {
    match password_of(url) {
        Some(password) => text.replace(password, "***"),
        None => text.to_owned(),
    }
}

impl RegistryUrl {
    /// The directory registry under the user's data directory (`~/.local/share/berth/registry`
    /// on Linux), the default when no registry is given.
    pub fn default_dir() -> Self {
        let root = dirs::data_local_dir().unwrap_or_else(std::env::temp_dir).join("berth").join("registry");
        RegistryUrl::Dir(DirUrl {
            root,
            namespace: DEFAULT_NAMESPACE.to_owned(),
            group: DEFAULT_GROUP.to_owned(),
        })
    }

    /// The namespace this URL selects.
    pub fn namespace(&self) -> &str {
        match self {
            RegistryUrl::Nacos(n) => &n.namespace,
            RegistryUrl::Dir(d) => &d.namespace,
        }
    }
}

impl FromStr for RegistryUrl {
    type Err = InvalidRegistryUrl;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| InvalidRegistryUrl(format!("{why}; {FORMS}"));
        let (scheme, rest) = s.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut namespace = DEFAULT_NAMESPACE.to_owned();
        let mut group = DEFAULT_GROUP.to_owned();
        let mut grpc_port = None;
        for (key, value) in ::url::form_urlencoded::parse(query.as_bytes()) {
            match (&*key, scheme) {
                ("namespace", _) if !value.is_empty() => namespace = value.into_owned(),
                ("group", _) if !value.is_empty() => group = value.into_owned(),
                ("grpc_port", "nacos") => {
                    grpc_port = Some(value.parse().map_err(|_| bad("grpc_port must be a port number"))?);
                }
                (k, _) => return Err(bad(&format!("unknown or empty parameter `{k}`"))),
            }
        }
        match scheme {
            "nacos" => {
                let (userinfo, hosts) = match location.rsplit_once('@') {
                    Some((u, h)) => (Some(u), h),
                    None => (None, location),
                };
                let servers = hosts
                    .trim_end_matches('/')
                    .split(',')
                    .map(|h| with_default_port(h).ok_or_else(|| bad(&format!("bad server address `{h}`"))))
                    .collect::<Result<Vec<_>, _>>()?;
                let (username, password) = match userinfo.map(|u| u.split_once(':').unwrap_or((u, ""))) {
                    Some((u, p)) => (Some(decode(u)), (!p.is_empty()).then(|| decode(p))),
                    None => (None, None),
                };
                Ok(RegistryUrl::Nacos(NacosUrl { servers, namespace, group, grpc_port, username, password }))
            }
            "dir" => {
                if !location.starts_with('/') {
                    return Err(bad("a dir registry needs an absolute path (dir:///path)"));
                }
                Ok(RegistryUrl::Dir(DirUrl { root: PathBuf::from(decode(location)), namespace, group }))
            }
            other => Err(bad(&format!("unknown scheme `{other}`"))),
        }
    }
}

fn decode(s: &str) -> String {
    ::url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map_or_else(|| s.to_owned(), |(_, v)| v.into_owned())
}

/// `host` → `host:8848`; `host:port` and `[v6]:port` kept. `None` for an empty host or a bad port.
fn with_default_port(h: &str) -> Option<String> {
    let port_part = if h.starts_with('[') {
        h.split_once("]:").map(|(_, p)| p)
    } else {
        h.rsplit_once(':').map(|(_, p)| p)
    };
    let host_empty = h.is_empty() || h.starts_with(':') || h == "[]";
    match port_part {
        _ if host_empty => None,
        Some(port) => port.parse::<u16>().ok().map(|_| h.to_owned()),
        None => Some(format!("{h}:8848")),
    }
}

impl fmt::Display for RegistryUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryUrl::Nacos(n) => {
                f.write_str("nacos://")?;
                if let Some(u) = &n.username {
                    write!(f, "{u}{}@", if n.password.is_some() { ":***" } else { "" })?;
                }
                write!(f, "{}?namespace={}&group={}", n.servers.join(","), n.namespace, n.group)?;
                if let Some(p) = n.grpc_port {
                    write!(f, "&grpc_port={p}")?;
                }
                Ok(())
            }
            RegistryUrl::Dir(d) => {
                write!(f, "dir://{}?namespace={}&group={}", d.root.display(), d.namespace, d.group)
            }
        }
    }
}

impl fmt::Debug for RegistryUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Debug for NacosUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&RegistryUrl::Nacos(self.clone()), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nacos(s: &str) -> NacosUrl {
        match s.parse().unwrap() {
            RegistryUrl::Nacos(n) => n,
            other => panic!("{other}"),
        }
    }

    #[test]
    fn nacos_defaults() {
        let n = nacos("nacos://10.0.0.1");
        assert_eq!(n.servers, ["10.0.0.1:8848"]);
        assert_eq!((n.namespace.as_str(), n.group.as_str()), ("public", "DEFAULT_GROUP"));
        assert_eq!(n.grpc_port, None);
    }

    #[test]
    fn nacos_everything() {
        let n = nacos("nacos://u%40x:p%3Aw@a:1,b:2/?namespace=dev&group=G&grpc_port=9");
        assert_eq!(n.servers, ["a:1", "b:2"]);
        assert_eq!((n.namespace.as_str(), n.group.as_str(), n.grpc_port), ("dev", "G", Some(9)));
        assert_eq!((n.username.as_deref(), n.password.as_deref()), (Some("u@x"), Some("p:w")));
    }

    #[test]
    fn password_is_never_displayed() {
        let u: RegistryUrl = "nacos://admin:hunter2@h:1".parse().unwrap();
        assert!(!u.to_string().contains("hunter2"), "{u}");
        assert!(!format!("{u:?}").contains("hunter2"));
        assert!(u.to_string().contains("admin:***@"));
    }

    #[test]
    fn dir_urls() {
        let u: RegistryUrl = "dir:///var/lib/berth?namespace=dev".parse().unwrap();
        assert_eq!(
            u,
            RegistryUrl::Dir(DirUrl {
                root: "/var/lib/berth".into(),
                namespace: "dev".into(),
                group: DEFAULT_GROUP.into()
            })
        );
    }

    #[test]
    fn bad_urls_say_why() {
        for (s, why) in [
            ("127.0.0.1:8848", "no scheme"),
            ("http://x", "unknown scheme `http`"),
            ("dir://relative", "absolute path"),
            ("nacos://h:notaport", "bad server address"),
            ("nacos://h?colour=red", "unknown or empty parameter `colour`"),
            ("nacos://h?grpc_port=x", "grpc_port"),
            ("dir:///x?grpc_port=1", "grpc_port"),
        ] {
            let err = s.parse::<RegistryUrl>().unwrap_err().to_string();
            assert!(err.contains(why) && err.contains("expected nacos://"), "{s}: {err}");
        }
    }
}
