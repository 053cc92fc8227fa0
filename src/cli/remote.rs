//! The node a CLI command talks to (`herald cluster status|leave`, `herald publish`): its
//! address with a scheme, and an HTTP client that verifies an `https://` node's certificate
//! against `--tls-ca` or the system's roots.
//!
//! `--http` takes `host:port` (plain HTTP, as before), `http://host:port` or
//! `https://host:port`; nothing else (no path, query or credentials).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

/// How long a command waits to connect to the node.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The flags that name the node and how to trust it.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// The node's HTTP address: host:port (plain HTTP), http://host:port or https://host:port.
    #[arg(long, env = "HERALD_HTTP", default_value = "127.0.0.1:8000")]
    pub http: String,
    /// PEM file with the CA certificate(s) an https:// node's certificate must chain to
    /// (default: the system's roots).
    #[arg(long, env = "HERALD_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
}

/// A node to send requests to.
pub struct Remote {
    /// `scheme://host:port`, without a trailing slash.
    base: String,
    https: bool,
    ca_given: bool,
    client: reqwest::Client,
}

impl Remote {
    pub fn new(args: &NodeArgs) -> anyhow::Result<Self> {
        let (base, https) = base_url(&args.http)?;
        let client = crate::tls_client::http_client(
            args.tls_ca.as_deref(),
            reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT),
        )
        .context("invalid --tls-ca")?;
        Ok(Self {
            base,
            https,
            ca_given: args.tls_ca.is_some(),
            client,
        })
    }

    /// The node's address, as shown in errors (`https://host:port`).
    pub fn address(&self) -> &str {
        &self.base
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(format!("{}{path}", self.base))
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(format!("{}{path}", self.base))
    }

    /// Sends `request`; a failure is one line naming the address, saying when the node's
    /// certificate did not verify or when the scheme looks wrong.
    pub async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<reqwest::Response> {
        request.send().await.map_err(|error| {
            let mut text = crate::tls_client::describe(&error, &self.base);
            if crate::tls_client::is_certificate_error(&error) {
                text.push_str(if self.ca_given {
                    " (checked against the CA file of --tls-ca)"
                } else {
                    " (checked against the system's roots: give its CA with --tls-ca FILE)"
                });
            } else if self.https && crate::tls_client::is_tls_error(&error) {
                let host = self.base.trim_start_matches("https://");
                text.push_str(&format!(
                    " (if the node serves plain HTTP, use --http {host})"
                ));
            } else if !self.https && !error.is_connect() && !error.is_timeout() {
                // A TLS port answers plain HTTP with a TLS alert, or not at all.
                let host = self.base.trim_start_matches("http://");
                text.push_str(&format!(
                    " (if the node serves HTTPS, use --http https://{host})"
                ));
            }
            anyhow::anyhow!(text)
        })
    }
}

/// `scheme://host[:port]` for what `--http` says, and whether it is HTTPS.
fn base_url(text: &str) -> anyhow::Result<(String, bool)> {
    let text = text.trim();
    if text.is_empty() {
        bail!("invalid --http: empty");
    }
    let with_scheme = if text.contains("://") {
        text.to_string()
    } else {
        format!("http://{text}")
    };
    let url = reqwest::Url::parse(&with_scheme)
        .map_err(|error| anyhow::anyhow!("invalid --http {text:?}: {error}"))?;
    let https = match url.scheme() {
        "http" => false,
        "https" => true,
        other => bail!("invalid --http {text:?}: the scheme must be http or https, not {other}"),
    };
    if url.host_str().is_none_or(str::is_empty) {
        bail!("invalid --http {text:?}: no host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        bail!(
            "invalid --http {text:?}: no credentials in the address (the API key is HERALD_API_KEY)"
        );
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        bail!("invalid --http {text:?}: host:port only, no path");
    }
    Ok((url.origin().ascii_serialization(), https))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_address_is_plain_http_and_a_scheme_is_kept() {
        assert_eq!(
            base_url("127.0.0.1:8000").unwrap(),
            ("http://127.0.0.1:8000".to_string(), false)
        );
        assert_eq!(
            base_url("http://10.0.0.1:8000/").unwrap(),
            ("http://10.0.0.1:8000".to_string(), false)
        );
        assert_eq!(
            base_url("https://node1.example.com:8443").unwrap(),
            ("https://node1.example.com:8443".to_string(), true)
        );
        assert_eq!(
            base_url("https://[::1]:8443").unwrap(),
            ("https://[::1]:8443".to_string(), true)
        );
        assert_eq!(
            base_url("localhost:8000").unwrap(),
            ("http://localhost:8000".to_string(), false)
        );
    }

    #[test]
    fn anything_else_is_refused_naming_the_flag() {
        for (text, reason) in [
            ("", "empty"),
            ("ftp://127.0.0.1:21", "http or https"),
            ("https://127.0.0.1:8000/api", "no path"),
            ("https://127.0.0.1:8000?x=1", "no path"),
            ("https://user:pw@127.0.0.1:8000", "no credentials"),
            ("127.0.0.1:99999", "invalid --http"),
            ("https://", "invalid --http"),
        ] {
            let error = base_url(text).unwrap_err().to_string();
            assert!(error.starts_with("invalid --http"), "{text}: {error}");
            assert!(error.contains(reason), "{text}: {error}");
        }
    }
}
