//! Asking one sidecar's admin port: `/endpoints`, `/metrics` and `/state`, each bounded by the
//! probe timeout.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::{Followed, Report};
use crate::traffic::Counters;

/// A client for sidecars' admin ports: no proxy from the environment, nothing kept idle for
/// long, every call bounded.
#[derive(Clone, Debug)]
pub struct SidecarClient {
    http: reqwest::Client,
}

impl SidecarClient {
    pub fn new(timeout: Duration) -> Result<SidecarClient, reqwest::Error> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("berth-admin/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(SidecarClient { http })
    }

    async fn get(&self, admin: SocketAddr, path: &str) -> Result<String, String> {
        let resp = self.http.get(format!("http://{admin}{path}")).send().await.map_err(|e| describe(&e))?;
        if !resp.status().is_success() {
            return Err(format!("{path} answered {}", resp.status().as_u16()));
        }
        resp.text().await.map_err(|e| describe(&e))
    }

    /// What the sidecar follows and, with `metrics`, what it sent.
    pub async fn report(&self, admin: SocketAddr, metrics: bool) -> Result<Report, String> {
        let endpoints = self.get(admin, "/endpoints").await?;
        let doc: Value =
            serde_json::from_str(&endpoints).map_err(|e| format!("/endpoints is not JSON: {e}"))?;
        let counters = match metrics {
            true => Some(Arc::new(Counters::parse(&self.get(admin, "/metrics").await?))),
            false => None,
        };
        Ok(Report { at_ms: berth_core::now_millis(), followed: followed(&doc), counters })
    }

    /// The lifecycle its `/state` says (`draining`, `stopped`…).
    pub async fn lifecycle(&self, admin: SocketAddr) -> Result<String, String> {
        let doc: Value = serde_json::from_str(&self.get(admin, "/state").await?)
            .map_err(|e| format!("/state is not JSON: {e}"))?;
        doc["lifecycle"].as_str().map(str::to_owned).ok_or_else(|| "/state names no lifecycle".into())
    }
}

/// Why a request failed, in a few words (reqwest's own message rarely says); never the URL.
pub(crate) fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "no answer in time".into()
    } else if e.is_connect() {
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                return format!("cannot connect: {io}");
            }
            source = s.source();
        }
        "cannot connect".into()
    } else if let Some(status) = e.status() {
        format!("answered {}", status.as_u16())
    } else if e.is_body() || e.is_decode() {
        "the answer broke off".into()
    } else {
        "the request failed".into()
    }
}

/// The services of an `/endpoints` document.
fn followed(doc: &Value) -> BTreeMap<String, Followed> {
    let mut out = BTreeMap::new();
    for (name, s) in doc["services"].as_object().into_iter().flatten() {
        let instances = s["instances"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| {
                let addr = i["addr"].as_str()?.parse().ok()?;
                Some((addr, i["state"].as_str().unwrap_or("serving").to_owned()))
            })
            .collect();
        let policy = &s["policy"];
        let f = Followed {
            version: policy["version"].as_u64().unwrap_or(0),
            rejected: policy["rejected"].as_str().map(str::to_owned),
            instances,
        };
        out.insert(name.clone(), f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_documents_give_versions_and_states() {
        let doc: Value = serde_json::from_str(
            r#"{"services":{"users":{"namespace":"public","listed":true,
                "policy":{"version":4,"source":"registry","rejected":null},
                "instances":[{"addr":"127.0.0.1:1","symbol":"stable","state":"ejected"},
                             {"addr":"127.0.0.1:2","symbol":"canary","state":"warming"}]},
              "orders":{"policy":{"version":0,"source":"default","rejected":"weights: must sum to 100"},"instances":[]}}}"#,
        )
        .unwrap();
        let f = followed(&doc);
        assert_eq!(f["users"].version, 4);
        assert_eq!(f["users"].rejected, None);
        assert_eq!(f["users"].instances[&"127.0.0.1:1".parse().unwrap()], "ejected");
        assert_eq!(f["users"].instances.len(), 2);
        assert_eq!(f["orders"].rejected.as_deref(), Some("weights: must sum to 100"));
    }
}
