//! A small HTTP client for the demo's control calls (probes, `/endpoints`, the admin API).

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Control-plane client: JSON in and out, a deadline per call.
#[derive(Clone, Debug)]
pub struct Client {
    inner: HyperClient<HttpConnector, Full<Bytes>>,
}

impl Default for Client {
    fn default() -> Self {
        Client { inner: HyperClient::builder(TokioExecutor::new()).build_http() }
    }
}

impl Client {
    /// Sends a request; returns the status and the body as text.
    pub async fn call(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&serde_json::Value>,
    ) -> Result<(StatusCode, String), String> {
        let mut req = Request::builder().method(method.clone()).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = match body {
            Some(json) => {
                req = req.header(http::header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(json.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let req = req.body(body).map_err(|e| e.to_string())?;
        let call = async {
            let resp = self.inner.request(req).await.map_err(|e| format!("{method} {url}: {e}"))?;
            let status = resp.status();
            let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
        };
        tokio::time::timeout(Duration::from_secs(30), call)
            .await
            .unwrap_or_else(|_| Err(format!("{method} {url}: no answer")))
    }

    /// GET, expecting JSON.
    pub async fn json(&self, url: &str) -> Result<serde_json::Value, String> {
        let (_, text) = self.call(Method::GET, url, &[], None).await?;
        serde_json::from_str(&text).map_err(|e| format!("GET {url}: {e}: {text}"))
    }

    /// GET, returning only the status.
    pub async fn status(&self, url: &str) -> Option<StatusCode> {
        self.call(Method::GET, url, &[], None).await.ok().map(|(s, _)| s)
    }
}
