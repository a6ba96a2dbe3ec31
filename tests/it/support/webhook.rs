//! The injector as the API server sees it: a CA and a certificate for `<service>.<namespace>.svc`,
//! `berth injector` on 127.0.0.1, and an HTTPS client that trusts only one CA and checks the
//! service's name, speaking HTTP/2 when the server offers it (as the API server's Go client does).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;

use super::{Proc, berth};

/// The namespace and service tests pretend the injector runs as.
pub const NAMESPACE: &str = "berth-system";
pub const SERVICE_HOST: &str = "berth-injector.berth-system.svc";

/// A CA and a server certificate it signed, in PEM.
#[derive(Debug)]
pub struct Pki {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

impl Pki {
    /// A fresh CA and a certificate for `host`.
    pub fn new(host: &str) -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "berth test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert =
            rcgen::CertificateParams::new(vec![host.to_owned()]).unwrap().signed_by(&key, &ca).unwrap();
        Pki { ca: ca.pem(), cert: cert.pem(), key: key.serialize_pem() }
    }

    /// Writes the certificate and key as a mounted Secret would (`tls.crt`, `tls.key`),
    /// replacing what was there in one rename each.
    pub fn write(&self, dir: &Path) {
        for (name, pem) in [("tls.key", &self.key), ("tls.crt", &self.cert)] {
            let tmp = dir.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, pem).unwrap();
            std::fs::rename(&tmp, dir.join(name)).unwrap();
        }
    }
}

/// A running `berth injector`.
#[derive(Debug)]
pub struct Injector {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl Injector {
    /// Starts `berth injector` on 127.0.0.1:0 with `dir/tls.crt` and `dir/tls.key`, plus `extra`.
    pub async fn start(dir: &Path, extra: &[&str]) -> Injector {
        let mut cmd = berth();
        cmd.args(["injector", "--listen", "127.0.0.1:0", "--namespace", NAMESPACE])
            .arg("--tls-cert")
            .arg(dir.join("tls.crt"))
            .arg("--tls-key")
            .arg(dir.join("tls.key"))
            .args(extra);
        let proc = Proc::spawn("injector", cmd);
        let line = proc.wait_line("berth injector listening", Duration::from_secs(10)).await;
        let start = line.find(" addr=").unwrap_or_else(|| panic!("no addr in {line}")) + 6;
        let addr = line[start..].split(' ').next().unwrap().parse().unwrap();
        Injector { proc, addr }
    }

    /// `method path` with `body`, trusting only `ca` and expecting the name `host`.
    pub async fn call(
        &self,
        ca: &str,
        host: &str,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>), String> {
        call(self.addr, ca, host, method, path, body, &[b"h2", b"http/1.1"]).await
    }

    /// POSTs `review` to `path` as the API server would and returns the status and the body.
    pub async fn review(&self, ca: &str, path: &str, review: &Value) -> (u16, Value) {
        let (status, body) =
            self.call(ca, SERVICE_HOST, "POST", path, review.to_string().as_bytes()).await.unwrap();
        (
            status,
            serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body))),
        )
    }
}

/// One HTTPS request on a new connection, offering the ALPN protocols `alpn`.
pub async fn call(
    addr: SocketAddr,
    ca: &str,
    host: &str,
    method: &str,
    path: &str,
    body: &[u8],
    alpn: &[&[u8]],
) -> Result<(u16, Vec<u8>), String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let req = http::Request::builder()
        .method(method)
        .uri(if h2 { format!("https://{host}{path}") } else { path.to_owned() })
        .header(http::header::HOST, host)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::copy_from_slice(body)))
        .unwrap();
    let io = TokioIo::new(tls);
    let resp = if h2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        send.send_request(req).await.map_err(|e| e.to_string())?
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        send.send_request(req).await.map_err(|e| e.to_string())?
    };
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes().to_vec();
    Ok((status, body))
}

/// The response's patch, read as the API server's Go decoder reads a `[]byte`: a base64
/// string (Go's own encoding), or an array of numbers 0–255 (what kube's types write, which
/// Go decodes element by element). Anything else fails.
pub fn decode_patch(patch: &Value) -> json_patch::Patch {
    let bytes: Vec<u8> = match patch {
        Value::Array(items) => items
            .iter()
            .map(|b| {
                b.as_u64().and_then(|n| u8::try_from(n).ok()).unwrap_or_else(|| panic!("not a byte: {b}"))
            })
            .collect(),
        Value::String(b64) => base64::engine::general_purpose::STANDARD.decode(b64).unwrap(),
        other => panic!("a patch is bytes, not {other}"),
    };
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("the patch is not a JSON patch ({e})"))
}

/// An AdmissionReview of a pod creation, as the API server sends it.
pub fn review_of(uid: &str, namespace: &str, pod: &Value) -> Value {
    let mut pod = pod.clone();
    pod["metadata"]["namespace"] = Value::String(namespace.to_owned());
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": { "username": "system:serviceaccount:kube-system:replicaset-controller" },
            "object": pod,
            "dryRun": false,
        },
    })
}
