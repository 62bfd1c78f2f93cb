//! TLS for the client-facing ports (`http-server.https.*`), with rustls: the server's
//! certificate chain and private key come from one PEM file, as Trino's PEM keystore does.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a keystore cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("http-server.https.keystore.path {path}: {message}")]
pub struct KeystoreError {
    pub path: String,
    pub message: String,
}

/// The TLS server configuration from a PEM file holding the certificate chain (the
/// server's certificate first) and its unencrypted private key (PKCS#8, PKCS#1 or SEC1).
pub fn server_config(path: &Path) -> Result<Arc<rustls::ServerConfig>, KeystoreError> {
    let error = |message: String| KeystoreError { path: path.display().to_string(), message };
    let text = std::fs::read(path).map_err(|e| error(format!("cannot be read: {e}")))?;
    if text.windows(b"ENCRYPTED".len()).any(|w| w == b"ENCRYPTED") {
        return Err(error("encrypted private keys are not supported; give the key unencrypted".into()));
    }
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<_, _>>()
        .map_err(|e| error(format!("a certificate cannot be read: {e}")))?;
    if certificates.is_empty() {
        return Err(error("holds no certificate (-----BEGIN CERTIFICATE-----)".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(&text).map_err(|e| error(format!("holds no usable private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| error(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .map_err(|e| error(format!("the key does not fit the certificate: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Starts the HTTPS server `node` asks for (`http-server.https.*`) on `ip`, serving
/// `router`: its address, or `None` when HTTPS is off.
pub async fn start_https(
    node: &flotilla_proto::NodeConfig,
    ip: std::net::IpAddr,
    router: axum::Router,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<Option<(std::net::SocketAddr, tokio::task::JoinHandle<()>)>> {
    let invalid = |message: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, message);
    let Some(https) = node.https().map_err(|e| invalid(e.to_string()))? else { return Ok(None) };
    let tls = server_config(&https.keystore).map_err(|e| invalid(e.to_string()))?;
    let listener = tokio::net::TcpListener::bind(std::net::SocketAddr::new(ip, https.port)).await?;
    let address = listener.local_addr()?;
    tracing::info!(%address, "serving clients over HTTPS");
    Ok(Some((address, crate::serve_https(listener, router, tls, shutdown))))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn keystore(text: &str) -> (std::path::PathBuf, Result<Arc<rustls::ServerConfig>, KeystoreError>) {
        let path = std::env::temp_dir().join(format!("flotilla-keystore-{}-{}.pem", std::process::id(), text.len()));
        std::fs::write(&path, text).unwrap();
        let result = server_config(&path);
        let _ = std::fs::remove_file(&path);
        (path, result)
    }

    /// A self-signed certificate and its key (tests only).
    pub(crate) const TEST_KEYSTORE: &str = include_str!("testdata/self-signed.pem");

    #[test]
    fn a_pem_keystore_with_a_certificate_and_its_key_loads() {
        let (_, loaded) = keystore(TEST_KEYSTORE);
        let config = loaded.unwrap();
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        // Another key than the certificate's is refused.
        let key_at = TEST_KEYSTORE.find("-----BEGIN PRIVATE KEY").unwrap();
        let other_key = include_str!("testdata/other-key.pem");
        let (_, mismatched) = keystore(&format!("{}{other_key}", &TEST_KEYSTORE[..key_at]));
        assert!(mismatched.unwrap_err().message.contains("does not fit"));
    }

    #[test]
    fn unusable_keystores_are_refused_with_the_reason() {
        let missing = server_config(Path::new("/nonexistent/flotilla.pem")).unwrap_err();
        assert!(missing.to_string().contains("cannot be read"), "{missing}");
        let (_, empty) = keystore("nothing here\n");
        assert!(empty.unwrap_err().message.contains("no certificate"));
        let (_, encrypted) =
            keystore("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n");
        assert!(encrypted.unwrap_err().message.contains("encrypted private keys are not supported"));
        let (_, broken) = keystore("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n");
        assert!(broken.is_err());
        let (_, keyless) = keystore("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        assert!(keyless.unwrap_err().message.contains("no usable private key"));
    }
}
