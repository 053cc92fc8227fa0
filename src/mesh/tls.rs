//! Mutual TLS for the mesh, derived from the cluster secret.
//!
//! Every node derives the same Ed25519 key from `HERALD_CLUSTER_SECRET` (HKDF-SHA256) and the
//! same self-signed certificate from it (fixed serial and validity, deterministic signature).
//! Both sides of a QUIC handshake present that certificate and accept only a peer that
//! presents the identical one and proves, in the TLS 1.3 handshake, that it holds the key. A
//! node without the secret is refused during the handshake, before any frame is read.

use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};

/// ALPN protocol of the mesh.
pub const ALPN: &[u8] = b"herald-mesh/1";
/// The name dialers use; the verifier checks the certificate, not the name.
pub const SERVER_NAME: &str = "herald-mesh";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The cluster's shared identity: certificate, key, and the HMAC key for stateless resets.
pub struct ClusterIdentity {
    certificate: CertificateDer<'static>,
    pkcs8: Vec<u8>,
    reset_key: [u8; 32],
}

impl ClusterIdentity {
    pub fn derive(cluster_secret: &str, cluster_id: &str) -> Result<Self, TlsError> {
        let seed = hkdf(cluster_secret, cluster_id, b"herald mesh ed25519 seed v1");
        let reset_key = hkdf(
            cluster_secret,
            cluster_id,
            b"herald mesh stateless reset v1",
        );
        // PKCS#8 v1 for Ed25519 (RFC 8410): a fixed prefix, then the 32-byte seed.
        let mut pkcs8 = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        pkcs8.extend_from_slice(&seed);
        let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(pkcs8.clone()),
            &rcgen::PKCS_ED25519,
        )
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
        let mut params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()])
            .map_err(|e| TlsError::Certificate(e.to_string()))?;
        params.serial_number = Some(rcgen::SerialNumber::from(vec![0x48, 0x52, 0x4c, 0x44]));
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(4000, 1, 1);
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("herald cluster {cluster_id}"),
        );
        let certificate = params
            .self_signed(&key)
            .map_err(|e| TlsError::Certificate(e.to_string()))?;
        Ok(Self {
            certificate: certificate.der().clone(),
            pkcs8,
            reset_key,
        })
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.pkcs8.clone()))
    }

    pub fn reset_key(&self) -> &[u8; 32] {
        &self.reset_key
    }

    pub fn server_config(&self) -> Result<quinn::ServerConfig, TlsError> {
        let provider = provider();
        let verifier = Arc::new(SameCertificate::new(self.certificate.clone(), &provider));
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.certificate.clone()], self.key())?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let quic =
            QuicServerConfig::try_from(tls).map_err(|e| TlsError::Certificate(e.to_string()))?;
        Ok(quinn::ServerConfig::with_crypto(Arc::new(quic)))
    }

    pub fn client_config(&self) -> Result<quinn::ClientConfig, TlsError> {
        let provider = provider();
        let verifier = Arc::new(SameCertificate::new(self.certificate.clone(), &provider));
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(vec![self.certificate.clone()], self.key())?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let quic =
            QuicClientConfig::try_from(tls).map_err(|e| TlsError::Certificate(e.to_string()))?;
        Ok(quinn::ClientConfig::new(Arc::new(quic)))
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn hkdf(secret: &str, salt: &str, info: &[u8]) -> [u8; 32] {
    let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, salt.as_bytes());
    let prk = salt.extract(secret.as_bytes());
    let mut out = [0u8; 32];
    let info = [info];
    // A 32-byte output is always within HKDF-SHA256's limit.
    if let Ok(okm) = prk.expand(&info, ring::hkdf::HKDF_SHA256) {
        let _ = okm.fill(&mut out);
    }
    out
}

/// Accepts exactly one certificate (the cluster's), on both the client and the server side.
#[derive(Debug)]
struct SameCertificate {
    expected: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl SameCertificate {
    fn new(expected: CertificateDer<'static>, provider: &CryptoProvider) -> Self {
        Self {
            expected,
            algorithms: provider.signature_verification_algorithms,
        }
    }

    fn verify_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn check(&self, presented: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        if presented.as_ref() == self.expected.as_ref() {
            Ok(())
        } else {
            metrics::counter!("herald_mesh_handshakes_refused_total").increment(1);
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }
}

impl ServerCertVerifier for SameCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for SameCertificate {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity)
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_deterministic_per_secret() {
        let a = ClusterIdentity::derive("secret-one-123", "c").unwrap();
        let b = ClusterIdentity::derive("secret-one-123", "c").unwrap();
        let c = ClusterIdentity::derive("secret-two-456", "c").unwrap();
        assert_eq!(a.certificate, b.certificate);
        assert_ne!(a.certificate, c.certificate);
        assert_eq!(a.reset_key, b.reset_key);
        assert!(a.server_config().is_ok());
        assert!(a.client_config().is_ok());
    }
}
