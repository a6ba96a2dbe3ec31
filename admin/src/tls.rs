//! TLS for the API: a PEM certificate chain and key, loaded (and checked) before the port is
//! bound, served with rustls on the `ring` provider.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate or key that cannot be used, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{option} {}: {detail}", path.display())]
pub struct TlsError {
    pub option: &'static str,
    pub path: PathBuf,
    pub detail: String,
}

/// The rustls server configuration for `cert` (chain, leaf first) and `key`.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let err = |option, path: &Path, detail: String| TlsError { option, path: path.to_owned(), detail };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect)
        .map_err(|e| err("--tls-cert", cert, format!("cannot read a PEM certificate chain: {e}")))?;
    if certs.is_empty() {
        return Err(err("--tls-cert", cert, "holds no `CERTIFICATE` block".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| err("--tls-key", key, format!("cannot read a PEM private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err("--tls-cert", cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| err("--tls-key", key, format!("does not fit the certificate: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
