//! The webhook's certificate: loaded from PEM files, served through rustls with the `ring`
//! provider, and swapped in place when the files change.
//!
//! A mounted Secret changes by an atomic symlink swap, and cert-manager renews certificates
//! well before they expire, so the files are polled: every interval both are read, and when
//! either differs from what was seen last, the pair is parsed and, if valid and matching,
//! served to every new handshake. A broken pair (half-written, mismatched) is logged and the
//! previous certificate kept.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::metrics::Metrics;

/// Why a certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {detail}")]
    Pem { path: PathBuf, detail: String },
    #[error("the key in {key} does not fit the certificate in {cert}: {detail}")]
    Key { cert: PathBuf, key: PathBuf, detail: String },
    #[error("cannot set up TLS: {0}")]
    Config(#[from] rustls::Error),
}

/// The `ring` crypto provider every TLS setting of the injector uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate files and the pair currently served.
#[derive(Debug)]
pub struct Certificates {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<CertifiedKey>,
    /// The file contents seen last, loaded or not, so a broken pair is reported once.
    seen: Mutex<(Vec<u8>, Vec<u8>)>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })
}

fn parse(cert: &Path, key: &Path, cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem { path: cert.to_owned(), detail: e.to_string() })?;
    if chain.is_empty() {
        return Err(TlsError::Pem { path: cert.to_owned(), detail: "no CERTIFICATE block in it".into() });
    }
    let private = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| TlsError::Pem { path: key.to_owned(), detail: format!("no usable private key: {e}") })?;
    CertifiedKey::from_der(chain, private, &provider()).map_err(|e| TlsError::Key {
        cert: cert.to_owned(),
        key: key.to_owned(),
        detail: e.to_string(),
    })
}

impl Certificates {
    /// Loads the pair; an error here is bad configuration.
    pub fn load(cert: &Path, key: &Path) -> Result<Certificates, TlsError> {
        let (cert_pem, key_pem) = (read(cert)?, read(key)?);
        let pair = parse(cert, key, &cert_pem, &key_pem)?;
        Ok(Certificates {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: ArcSwap::from_pointee(pair),
            seen: Mutex::new((cert_pem, key_pem)),
        })
    }

    /// Re-reads the files; swaps the served pair when they changed and are valid. Returns
    /// `None` when nothing changed.
    pub fn reload(&self) -> Option<Result<(), TlsError>> {
        let files = read(&self.cert).and_then(|c| Ok((c, read(&self.key)?)));
        let (cert_pem, key_pem) = match files {
            Ok(f) => f,
            Err(e) => return Some(Err(e)),
        };
        {
            // A poisoned lock only means a panic elsewhere mid-compare; the data is still bytes.
            let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if seen.0 == cert_pem && seen.1 == key_pem {
                return None;
            }
            *seen = (cert_pem.clone(), key_pem.clone());
        }
        Some(parse(&self.cert, &self.key, &cert_pem, &key_pem).map(|pair| self.current.store(Arc::new(pair))))
    }

    /// Polls the files every `interval`, forever.
    pub async fn watch(self: Arc<Self>, interval: Duration, metrics: Metrics) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let this = self.clone();
            let result = match tokio::task::spawn_blocking(move || this.reload()).await {
                Ok(r) => r,
                Err(e) => Some(Err(TlsError::Pem { path: self.cert.clone(), detail: e.to_string() })),
            };
            match result {
                None => {}
                Some(Ok(())) => {
                    metrics.tls_reloads.with_label_values(&["ok"]).inc();
                    tracing::info!(cert = %self.cert.display(), "reloaded the TLS certificate");
                }
                Some(Err(e)) => {
                    metrics.tls_reloads.with_label_values(&["error"]).inc();
                    tracing::warn!(error = %e, "kept the previous TLS certificate");
                }
            }
        }
    }

    /// A server configuration that serves the current pair, HTTP/2 or HTTP/1.1.
    pub fn server_config(self: &Arc<Self>) -> Result<ServerConfig, TlsError> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}
