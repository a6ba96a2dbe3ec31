//! A real `berth admin` on an ephemeral port, with a token file of three callers, and
//! `berth ctl` runs against it.

use std::net::SocketAddr;
use std::process::Output;
use std::time::Duration;

use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::Value;

use super::{Proc, berth, client};

/// A write token named `alice`.
pub const ALICE: &str = "alice-0123456789abcdef";
/// A write token named `bob`.
pub const BOB: &str = "bob-0123456789abcdef01";
/// A read-only token named `viewer`.
pub const VIEWER: &str = "viewer-0123456789abcdef";

/// The token file those three make.
pub const TOKEN_FILE: &str = "# name role token\nalice write alice-0123456789abcdef\nbob   write bob-0123456789abcdef01  # a second writer\n\nviewer read viewer-0123456789abcdef\n";

/// A running `berth admin`.
#[derive(Debug)]
pub struct Admin {
    pub proc: Proc,
    pub addr: SocketAddr,
    /// `http` or `https`.
    pub scheme: &'static str,
    _dir: tempfile::TempDir,
}

/// An answer: status, headers, JSON body (`Value::String` when not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    /// The version in `ETag`.
    pub fn etag(&self) -> u64 {
        self.headers["etag"].to_str().unwrap().trim_matches('"').parse().unwrap()
    }
}

impl Admin {
    /// Starts `berth admin --listen 127.0.0.1:0 --registry REGISTRY --token-file …` plus `extra`.
    pub async fn start(registry: &str, extra: &[&str]) -> Admin {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::write(&tokens, TOKEN_FILE).unwrap();
        let mut cmd = berth();
        cmd.args(["admin", "--listen", "127.0.0.1:0", "--registry", registry])
            .arg("--token-file")
            .arg(&tokens)
            .args(["--probe-timeout", "500ms"])
            .args(extra);
        let proc = Proc::spawn("admin", cmd);
        let line = proc.wait_line("berth admin listening", Duration::from_secs(10)).await;
        let start = line.find(" listen=").unwrap() + " listen=".len();
        let addr = line[start..].split(' ').next().unwrap().parse().unwrap();
        let scheme = if line.contains("tls=true") { "https" } else { "http" };
        Admin { proc, addr, scheme, _dir: dir }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    /// One request with an optional token, JSON body and `If-Match`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        if_match: Option<&str>,
    ) -> Answer {
        let mut req = client().request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(v) = if_match {
            req = req.header("if-match", v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer { status, headers, body }
    }

    pub async fn get(&self, path: &str, token: &str) -> Answer {
        self.call(Method::GET, path, Some(token), None, None).await
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> Answer {
        self.call(Method::PUT, path, Some(token), Some(body), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(token), Some(body), None).await
    }

    /// `berth ctl --server URL` with `BERTH_TOKEN` set to `token`, plus `args`.
    pub fn ctl(&self, token: Option<&str>, args: &[&str]) -> Ctl {
        ctl_at(&self.url(""), token, args)
    }
}

/// What a `berth ctl` run printed and returned.
#[derive(Debug)]
pub struct Ctl {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `berth ctl --server SERVER` with `BERTH_TOKEN` and `args`.
pub fn ctl_at(server: &str, token: Option<&str>, args: &[&str]) -> Ctl {
    let mut cmd = berth();
    cmd.args(["ctl", "--server", server]).args(args);
    for proxy in ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"] {
        cmd.env_remove(proxy);
    }
    if let Some(t) = token {
        cmd.env("BERTH_TOKEN", t);
    }
    let Output { status, stdout, stderr } = cmd.output().unwrap();
    let out = Ctl {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    };
    for t in [ALICE, BOB, VIEWER] {
        assert!(!out.stdout.contains(t) && !out.stderr.contains(t), "berth ctl printed a token: {out:?}");
    }
    out
}
