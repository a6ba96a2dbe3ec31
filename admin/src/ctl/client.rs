//! The HTTP client of `berth ctl`: one request per command, errors that name the server or
//! show the API's `error` and `detail`.

use std::fmt;
use std::time::Duration;

use http::{Method, header};
use serde_json::Value;

use super::{CtlArgs, Secret};

/// What went wrong.
#[derive(Debug)]
pub enum CtlError {
    /// Bad arguments or an unreadable input file (exit 64).
    Usage(String),
    /// The server could not be reached or did not answer (exit 1).
    Network { server: String, detail: String },
    /// The API answered with an error (exit 1).
    Api { status: u16, body: Value },
    /// The change was written, but `--wait` ran out before it took effect (exit 1).
    NotApplied { written: String, detail: String },
}

impl std::error::Error for CtlError {}

impl fmt::Display for CtlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CtlError::Usage(why) => f.write_str(why),
            CtlError::NotApplied { detail, .. } => f.write_str(detail),
            CtlError::Network { server, detail } => {
                write!(f, "cannot reach the admin API at {server}: {detail}")
            }
            CtlError::Api { status, body } => {
                let text = |k: &str| body[k].as_str().map(str::to_owned);
                let error = text("error").unwrap_or_else(|| "error".into());
                let detail = text("detail").unwrap_or_else(|| body.as_str().unwrap_or_default().to_owned());
                write!(f, "{status} {error}: {detail}")?;
                // The detail names every problem; list each on its own line when there are several.
                let problems = body["problems"].as_array().map_or(&[][..], Vec::as_slice);
                for p in problems.iter().filter(|_| problems.len() > 1) {
                    write!(
                        f,
                        "\n  {}: {}",
                        p["path"].as_str().unwrap_or("?"),
                        p["message"].as_str().unwrap_or("?")
                    )?;
                }
                if *status == 401 {
                    f.write_str("\n  (give a token with --token or BERTH_TOKEN)")?;
                }
                Ok(())
            }
        }
    }
}

/// Percent-encodes one path segment (a service name, an instance address).
pub fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The error and its causes on one line: reqwest's own message alone rarely says why.
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !parts.iter().any(|p| p.contains(&s_text)) {
            parts.push(s_text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// A client of one admin server.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    server: String,
    token: Option<Secret>,
    if_version: Option<u64>,
}

impl Client {
    /// A client for `args.server`, trusting `args.ca_cert` besides the system's CAs.
    pub fn new(args: &CtlArgs) -> Result<Client, CtlError> {
        let server = args.server.trim_end_matches('/').to_owned();
        if !(server.starts_with("http://") || server.starts_with("https://")) {
            return Err(CtlError::Usage(format!(
                "invalid value '{server}' for '--server': expected http://host:port or https://host:port"
            )));
        }
        let mut builder =
            reqwest::Client::builder().timeout(args.timeout).connect_timeout(Duration::from_secs(5));
        if let Some(path) = &args.ca_cert {
            let usage = |why: String| CtlError::Usage(format!("--ca-cert {}: {why}", path.display()));
            let pem = std::fs::read(path).map_err(|e| usage(format!("cannot read it: {e}")))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| usage(format!("not PEM certificates: {e}")))?;
            if certs.is_empty() {
                return Err(usage("holds no certificate".into()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http =
            builder.build().map_err(|e| CtlError::Network { server: server.clone(), detail: chain(&e) })?;
        Ok(Client { http, server, token: args.token.clone(), if_version: args.if_version })
    }

    pub async fn get(&self, path: &str) -> Result<Value, CtlError> {
        self.send(Method::GET, path, None).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Result<Value, CtlError> {
        self.send(Method::PUT, path, Some(body)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<Value, CtlError> {
        self.send(Method::POST, path, Some(body)).await
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, CtlError> {
        let network =
            |e: reqwest::Error| CtlError::Network { server: self.server.clone(), detail: chain(&e) };
        let mut req = self.http.request(method.clone(), format!("{}{path}", self.server));
        if let Some(token) = &self.token {
            req = req.bearer_auth(&token.0);
        }
        if let (Some(v), false) = (self.if_version, method == Method::GET) {
            req = req.header(header::IF_MATCH, format!("\"{v}\""));
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.map_err(network)?;
        let status = resp.status();
        let text = resp.text().await.map_err(network)?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() { Ok(body) } else { Err(CtlError::Api { status: status.as_u16(), body }) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded() {
        assert_eq!(encode("users"), "users");
        assert_eq!(encode("10.0.0.7:15006"), "10.0.0.7:15006");
        assert_eq!(encode("[::1]:80"), "%5B::1%5D:80");
        assert_eq!(encode("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn api_errors_show_error_detail_and_problems() {
        let e = CtlError::Api {
            status: 422,
            body: serde_json::json!({"error": "invalid policy", "detail": "nothing was written",
                "problems": [{"path": "weights", "message": "weights must sum to 100, not 70"}]}),
        };
        assert_eq!(e.to_string(), "422 invalid policy: nothing was written");
        let two = CtlError::Api {
            status: 422,
            body: serde_json::json!({"error": "invalid policy", "detail": "nothing was written: a: x; b: y",
                "problems": [{"path": "a", "message": "x"}, {"path": "b", "message": "y"}]}),
        };
        assert_eq!(two.to_string(), "422 invalid policy: nothing was written: a: x; b: y\n  a: x\n  b: y");
    }
}
