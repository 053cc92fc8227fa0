//! Native TLS for clients: HTTPS and wss:// on the HTTP address, from PEM files, reloaded on
//! SIGHUP without dropping a connection.
//!
//! The certificate chain and key are read into a rustls server configuration (ring, TLS 1.2
//! and 1.3, ALPN `http/1.1`, which WebSockets need); [`TlsConfig`] hands it to the listener
//! and swaps it in place on [`TlsConfig::reload`]: connections already open keep the
//! certificate they started with, new handshakes get the new one. A reload that fails (a file
//! missing, a key that does not match) keeps the old certificate and says why.

use std::sync::Arc;

use axum_server::tls_rustls::RustlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsFiles;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{0}")]
    Invalid(String),
}

/// The live TLS configuration of the HTTP listener.
#[derive(Clone)]
pub struct TlsConfig {
    files: TlsFiles,
    live: RustlsConfig,
}

impl TlsConfig {
    /// Reads the files; fails with what is wrong with them.
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        let server = server_config(files)?;
        Ok(Self {
            files: files.clone(),
            live: RustlsConfig::from_config(server),
        })
    }

    /// Reads the files again and serves new handshakes with them; on failure the old
    /// certificate stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let server = server_config(&self.files)?;
        self.live.reload_from_config(server);
        Ok(())
    }

    pub fn rustls(&self) -> RustlsConfig {
        self.live.clone()
    }
}

fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| TlsError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    };
    let chain_pem = read(&files.cert)?;
    let key_pem = read(&files.key)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            TlsError::Invalid(format!(
                "{}: not a PEM certificate: {e}",
                files.cert.display()
            ))
        })?;
    if chain.is_empty() {
        return Err(TlsError::Invalid(format!(
            "{}: no certificate in it",
            files.cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        TlsError::Invalid(format!(
            "{}: not a PEM private key: {e}",
            files.key.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            TlsError::Invalid(format!(
                "{} and {}: {e}",
                files.cert.display(),
                files.key.display()
            ))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
