//! TLS on rustls with the ring provider, for both directions: the client
//! configuration of every outbound connection (`mqtts://` brokers,
//! `https://` webhooks; the system's root certificates plus an optional PEM
//! file of extra CAs) and the server configuration of the HTTPS listener
//! (the operator's certificate chain and private key).

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Reads the CA certificates of a PEM file; an empty file or one without
/// a certificate is an error (the operator meant to trust something).
pub fn pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

/// A client config trusting the system's roots and those of `ca_file`.
/// Fails when `ca_file` cannot be used, or when there is no root at all.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    if added == 0 && !native.errors.is_empty() {
        log::debug!("no system root certificates: {:?}", native.errors);
    }
    if let Some(path) = ca_file {
        for cert in pem_certificates(path)? {
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    if roots.is_empty() {
        return Err("no root certificates: the system has none and no CA file is given".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A client config that trusts exactly the leaf certificate of the PEM
/// file `cert`, whatever name it carries: how the command line reaches its
/// own HTTPS server on loopback, where the certificate names the
/// appliance's public host name rather than 127.0.0.1. The handshake's
/// signatures are still verified against that certificate's key.
pub fn pinned_client_config(cert: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let leaf = pem_certificates(cert)?.swap_remove(0);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Pinned {
        leaf,
        algorithms: provider.signature_verification_algorithms,
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Accepts the one certificate it was made with.
#[derive(Debug)]
struct Pinned {
    leaf: CertificateDer<'static>,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.leaf.as_ref() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Which of the server's two files a [`ServerTlsError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerFile {
    /// The certificate chain.
    Cert,
    /// The private key (or its match with the certificate).
    Key,
}

/// Why the HTTPS listener cannot be configured, and which file is at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsError {
    pub file: ServerFile,
    pub message: String,
}

/// A server config presenting the chain of `cert` (PEM, leaf first) with
/// the private key of `key` (PEM: PKCS#8, PKCS#1 or SEC1). A missing or
/// unreadable file, a file without the expected PEM block, and a key that
/// does not belong to the certificate are each an error naming the file.
pub fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, ServerTlsError> {
    let fail = |file, message: String| ServerTlsError { file, message };
    let chain = pem_certificates(cert).map_err(|m| fail(ServerFile::Cert, m))?;
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        let why = match e {
            rustls::pki_types::pem::Error::NoItemsFound => "no PEM private key in it".to_owned(),
            other => other.to_string(),
        };
        fail(ServerFile::Key, format!("{}: {why}", key.display()))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(ServerFile::Cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| {
            fail(
                ServerFile::Key,
                format!("{} cannot serve {}: {e}", key.display(), cert.display()),
            )
        })?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_ca_file_is_an_error_naming_it() {
        let e = client_config(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = client_config(Some(&empty)).unwrap_err();
        assert!(e.contains("no PEM certificate"), "{e}");
    }

    fn pair(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    #[test]
    fn a_certificate_and_its_key_make_a_server_config() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair(dir.path(), "a");
        server_config(&cert, &key).unwrap();
    }

    #[test]
    fn server_files_that_are_missing_wrong_or_mismatched_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_a, key_a) = pair(dir.path(), "a");
        let (_cert_b, key_b) = pair(dir.path(), "b");
        let missing = dir.path().join("missing.pem");

        let e = server_config(&missing, &key_a).unwrap_err();
        assert_eq!(e.file, ServerFile::Cert);
        assert!(e.message.contains("missing.pem"), "{e:?}");

        let e = server_config(&cert_a, &missing).unwrap_err();
        assert_eq!(e.file, ServerFile::Key);
        assert!(e.message.contains("missing.pem"), "{e:?}");

        // A certificate where the key should be, and the other way round.
        let e = server_config(&cert_a, &cert_a).unwrap_err();
        assert_eq!(e.file, ServerFile::Key);
        assert!(e.message.contains("no PEM private key"), "{e:?}");
        let e = server_config(&key_a, &key_a).unwrap_err();
        assert_eq!(e.file, ServerFile::Cert);
        assert!(e.message.contains("no PEM certificate"), "{e:?}");

        // Another certificate's key.
        let e = server_config(&cert_a, &key_b).unwrap_err();
        assert_eq!(e.file, ServerFile::Key);
        assert!(e.message.contains("cannot serve"), "{e:?}");
    }
}
