//! Throw-away PKI for the TLS tests, generated at test time so no key is ever committed.
//!
//! One CA signs a server certificate (valid for `localhost` *and* `127.0.0.1`, so either host
//! form of a `rediss://` URL verifies) and a client certificate (for `tls-auth-clients yes`).
//! Keys are ECDSA P-256, which both rustls (client side) and Redis' OpenSSL (server side) accept.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// Installs rustls' process-wide crypto provider (ring) if none is installed yet.
///
/// The redis crate builds its rustls `ClientConfig` with the process default provider and
/// fails without one. Idempotent and race-free: losing the install race is fine.
pub fn ensure_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Paths (and PEM contents) of a generated CA, server and client certificate.
#[derive(Debug, Clone)]
pub struct TestPki {
    pub ca_path: PathBuf,
    pub server_cert_path: PathBuf,
    pub server_key_path: PathBuf,
    pub client_cert_path: PathBuf,
    pub client_key_path: PathBuf,
    pub ca_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

impl TestPki {
    /// Generates a fresh PKI and writes `ca.pem`, `server.pem`, `server.key`, `client.pem` and
    /// `client.key` into `dir` (which must exist). Calling it for two directories gives two
    /// unrelated CAs — useful for "wrong CA is rejected" tests.
    pub fn generate(dir: &Path) -> TestPki {
        let ca_key = KeyPair::generate().expect("generate CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "pacup test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign CA");

        let (server_cert, server_key) = leaf(
            &ca_cert,
            &ca_key,
            "localhost",
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) = leaf(
            &ca_cert,
            &ca_key,
            "pacup test client",
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
        );

        let write = |name: &str, contents: &str| {
            let path = dir.join(name);
            std::fs::write(&path, contents)
                .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
            path
        };
        TestPki {
            ca_path: write("ca.pem", &ca_cert.pem()),
            server_cert_path: write("server.pem", &server_cert.pem()),
            server_key_path: write("server.key", &server_key.serialize_pem()),
            client_cert_path: write("client.pem", &client_cert.pem()),
            client_key_path: write("client.key", &client_key.serialize_pem()),
            ca_pem: ca_cert.pem(),
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
        }
    }

    /// Trust material for `redis::Client::build_with_tls`: our CA as the only root, plus the
    /// client certificate (needed when the server runs with `tls-auth-clients yes`).
    pub fn redis_certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: Some(redis::ClientTlsConfig {
                client_cert: self.client_cert_pem.clone().into_bytes(),
                client_key: self.client_key_pem.clone().into_bytes(),
            }),
            root_cert: Some(self.ca_pem.clone().into_bytes()),
        }
    }

    /// Like [`Self::redis_certificates`] but without a client certificate, to check that a
    /// server requiring one refuses the connection.
    pub fn redis_certificates_without_client_cert(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(self.ca_pem.clone().into_bytes()),
        }
    }
}

/// A CA-signed end-entity certificate with the given subject alternative names.
fn leaf(
    ca_cert: &Certificate,
    ca_key: &KeyPair,
    common_name: &str,
    sans: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
) -> (Certificate, KeyPair) {
    let key = KeyPair::generate().expect("generate leaf key");
    let mut params = CertificateParams::new(sans).expect("leaf params");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    let cert = params
        .signed_by(&key, ca_cert, ca_key)
        .expect("sign leaf certificate");
    (cert, key)
}
