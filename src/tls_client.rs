//! HTTPS to herald nodes, for herald's own HTTP clients: the CLI (`herald cluster status`,
//! `herald cluster leave`, `herald publish`) and the Redis backplane's snapshot fetches
//! between nodes.
//!
//! The rustls client configuration (ring, TLS 1.2 and 1.3) trusts the CA certificates of one
//! PEM file only, when one is given (`--tls-ca`), or the system's roots without one. The
//! server's certificate must chain to them and name the host dialed (for an IP address, as an
//! IP subject alternative name). [`describe`] turns a failed request into one line that says
//! when the certificate did not verify, naming the address.

use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    #[error("CA file {path}: {reason}")]
    Ca { path: PathBuf, reason: String },
    #[error("TLS client: {0}")]
    Build(String),
}

/// The roots a server certificate must chain to: the certificates in `ca`, or the system's
/// roots without it (possibly none, on a machine without a root store: then every
/// certificate fails to verify, saying so).
pub fn roots(ca: Option<&Path>) -> Result<rustls::RootCertStore, ClientTlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let Some(ca) = ca else {
        let system = rustls_native_certs::load_native_certs();
        let (added, _ignored) = roots.add_parsable_certificates(system.certs);
        if added == 0 {
            tracing::warn!(
                errors = ?system.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "no system root certificate found: HTTPS peers cannot be verified without a CA file (tls_ca)"
            );
        }
        return Ok(roots);
    };
    let unreadable = |reason: &dyn std::fmt::Display| ClientTlsError::Ca {
        path: ca.to_path_buf(),
        reason: reason.to_string(),
    };
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
        .map_err(|error| unreadable(&error))?
        .collect::<Result<_, _>>()
        .map_err(|error| unreadable(&error))?;
    if certificates.is_empty() {
        return Err(unreadable(&"no certificate in it"));
    }
    for certificate in certificates {
        roots.add(certificate).map_err(|error| unreadable(&error))?;
    }
    Ok(roots)
}

/// A rustls client configuration (ring) trusting [`roots`]`(ca)`, speaking HTTP/1.1.
pub fn client_config(ca: Option<&Path>) -> Result<rustls::ClientConfig, ClientTlsError> {
    let roots = roots(ca)?;
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|error| ClientTlsError::Build(error.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// An HTTP client from `builder` that speaks plain HTTP to `http://` URLs and HTTPS, verified
/// with [`client_config`]`(ca)`, to `https://` ones.
pub fn http_client(
    ca: Option<&Path>,
    builder: reqwest::ClientBuilder,
) -> Result<reqwest::Client, ClientTlsError> {
    builder
        .use_preconfigured_tls(client_config(ca)?)
        .build()
        .map_err(|error| ClientTlsError::Build(error.to_string()))
}

/// Why a request to `address` (a base URL such as `https://10.0.0.1:8000`) failed, in one
/// line: a certificate that does not verify says so; a failed handshake says it was TLS;
/// anything else is the error and its causes.
pub fn describe(error: &reqwest::Error, address: &str) -> String {
    match tls_error(error) {
        Some(rustls::Error::InvalidCertificate(reason)) => {
            let reason = match reason {
                rustls::CertificateError::UnknownIssuer => {
                    "it is not signed by a trusted CA (UnknownIssuer)".to_string()
                }
                rustls::CertificateError::BadSignature => "its signature is bad".to_string(),
                rustls::CertificateError::Revoked => "it is revoked".to_string(),
                other => other.to_string(),
            };
            format!("the certificate of {address} does not verify: {reason}")
        }
        Some(other) => format!("TLS with {address} failed: {other}"),
        None if error.is_connect() => format!("cannot reach {address}: {}", causes(error)),
        None if error.is_timeout() => {
            format!("{address} did not answer in time: {}", causes(error))
        }
        None => format!("request to {address} failed: {}", causes(error)),
    }
}

/// True when the TLS handshake failed, for any reason.
pub fn is_tls_error(error: &reqwest::Error) -> bool {
    tls_error(error).is_some()
}

/// True when `error` is a certificate that did not verify.
pub fn is_certificate_error(error: &reqwest::Error) -> bool {
    matches!(tls_error(error), Some(rustls::Error::InvalidCertificate(_)))
}

/// The rustls error somewhere in `error`'s causes. The TLS stream reports it inside an
/// `io::Error`, which the connector wraps in another, and an `io::Error`'s `source` skips the
/// error it wraps: those are looked into with `get_ref`.
fn tls_error(error: &reqwest::Error) -> Option<&rustls::Error> {
    find_tls(error, 0)
}

fn find_tls<'a>(error: &'a (dyn StdError + 'static), depth: usize) -> Option<&'a rustls::Error> {
    // Causes are a short chain; the bound only guards against a cycle.
    if depth > 16 {
        return None;
    }
    if let Some(tls) = error.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    if let Some(inner) = error
        .downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::get_ref)
    {
        let inner: &(dyn StdError + 'static) = inner;
        if let Some(tls) = find_tls(inner, depth + 1) {
            return Some(tls);
        }
    }
    find_tls(error.source()?, depth + 1)
}

/// The causes of `error`, `: `-separated, without the URL (the caller names the address) and
/// without a cause repeated.
fn causes(error: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&(dyn StdError + 'static)> = error.source();
    while let Some(error) = current {
        let text = error.to_string();
        if !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        current = error.source();
    }
    if parts.is_empty() {
        // Only the top level, which names the URL: keep it.
        parts.push(error.to_string());
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_a_certificate_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").unwrap();
        let error = client_config(Some(&ca)).unwrap_err().to_string();
        assert!(error.contains(&ca.display().to_string()), "{error}");
        assert!(error.contains("no certificate"), "{error}");
        let missing = dir.path().join("missing.pem");
        let error = client_config(Some(&missing)).unwrap_err().to_string();
        assert!(error.contains("missing.pem"), "{error}");
    }

    #[test]
    fn a_ca_file_with_a_certificate_is_the_only_root() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, ca.pem()).unwrap();
        assert_eq!(roots(Some(&path)).unwrap().len(), 1);
    }
}
