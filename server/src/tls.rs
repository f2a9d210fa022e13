//! TLS from PEM files: the server side of both HTTP services (`--tls-cert`,
//! `--tls-key`) and the client side of `mqtts://` (`--mqtt-ca-file`, else the
//! system's trusted roots). rustls with the ring provider.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificates from {path}: {reason}")]
    Certificates { path: String, reason: String },
    #[error("cannot read a private key from {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("no certificate in {0}")]
    NoCertificate(String),
    #[error("TLS configuration refused: {0}")]
    Config(#[from] rustls::Error),
    #[error("the system's trusted roots could not be loaded: {0}")]
    SystemRoots(String),
}

/// Makes ring the process's TLS provider. Call before any TLS client or server is
/// built (HTTP clients build one even for plain `http://`); calling it again is
/// harmless.
pub fn install_crypto_provider() {
    // An error only means a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A server configuration from a certificate chain and its private key.
///
/// Its ALPN list is left empty: actix-http puts `h2` and `http/1.1` in front of
/// whatever it holds (`h2` because actix-web's `http2` feature is on), so one
/// port serves browsers over HTTP/2 and older clients over HTTP/1.1.
pub fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let chain = certificates(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        reason: e.to_string(),
    })?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(config)
}

/// A client configuration trusting the CAs in `ca_file`, or the system's roots.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for certificate in certificates(path)? {
                roots.add(certificate)?;
            }
        }
        None => {
            let system = rustls_native_certs::load_native_certs();
            if system.certs.is_empty() {
                let reasons: Vec<String> = system.errors.iter().map(ToString::to_string).collect();
                return Err(TlsError::SystemRoots(reasons.join("; ")));
            }
            roots.add_parsable_certificates(system.certs);
        }
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let error = |reason: String| TlsError::Certificates {
        path: path.display().to_string(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(path.display().to_string()));
    }
    Ok(chain)
}
