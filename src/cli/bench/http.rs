//! A minimal HTTP/1.1 keep-alive client for `POST /api/publish`, the feature endpoints the
//! benches post to (comments), and `GET /metrics`: one TCP connection per publisher, one
//! request in flight on it.
//!
//! Why not reqwest: on a 2-core machine the load generator competes with the server for CPU,
//! and a general client's pool, header maps and body machinery cost several times what this
//! does per request. It speaks only what herald answers: a status line, headers, and a body
//! sized by `Content-Length`.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Largest response body accepted (a publish answer is about 150 bytes, `/metrics` a few KiB).
const MAX_BODY: usize = 4 * 1024 * 1024;
/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;

pub struct HttpConnection {
    addr: SocketAddr,
    /// Sent as `Authorization: Bearer`: the API key, or a user token for feature endpoints.
    bearer: String,
    stream: Option<BufReader<super::tls::Stream>>,
    request: Vec<u8>,
    line: String,
}

/// The status and body of one answer.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl HttpConnection {
    pub fn new(addr: SocketAddr, bearer: &str) -> Self {
        Self {
            addr,
            bearer: bearer.to_string(),
            stream: None,
            request: Vec::with_capacity(512),
            line: String::with_capacity(128),
        }
    }

    /// Sends `POST path` with a JSON body and reads the answer. After an error the connection
    /// is dropped and the next call opens a new one.
    pub async fn post_json(&mut self, path: &str, body: &[u8]) -> anyhow::Result<Answer> {
        let result = self.exchange("POST", path, body).await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    /// Sends `GET path` and reads the answer.
    pub async fn get(&mut self, path: &str) -> anyhow::Result<Answer> {
        let result = self.exchange("GET", path, &[]).await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    async fn exchange(&mut self, method: &str, path: &str, body: &[u8]) -> anyhow::Result<Answer> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(self.addr)
                .await
                .with_context(|| format!("cannot connect to {}", self.addr))?;
            stream.set_nodelay(true)?;
            let stream = super::tls::wrap(stream)
                .await
                .with_context(|| format!("TLS with {}", self.addr))?;
            self.stream = Some(BufReader::with_capacity(4096, stream));
        }
        let Some(stream) = self.stream.as_mut() else {
            bail!("no connection");
        };
        self.request.clear();
        self.request.extend_from_slice(
            format!(
                "{method} {path} HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\n\
                 content-type: application/json\r\ncontent-length: {}\r\n\r\n",
                self.addr,
                self.bearer,
                body.len()
            )
            .as_bytes(),
        );
        self.request.extend_from_slice(body);
        stream.get_mut().write_all(&self.request).await?;

        let mut head_len = 0;
        self.line.clear();
        head_len += stream.read_line(&mut self.line).await?;
        let status = parse_status_line(&self.line)
            .with_context(|| format!("bad status line {:?}", self.line.trim()))?;
        let mut content_length = None;
        let mut close = false;
        loop {
            self.line.clear();
            let read = stream.read_line(&mut self.line).await?;
            if read == 0 {
                bail!("connection closed in the response head");
            }
            head_len += read;
            if head_len > MAX_HEAD {
                bail!("response head too large");
            }
            let header = self.line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = Some(value.parse::<usize>().context("bad content-length")?);
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    bail!("chunked responses are not supported");
                } else if name.eq_ignore_ascii_case("connection")
                    && value.eq_ignore_ascii_case("close")
                {
                    close = true;
                }
            }
        }
        let length = content_length.unwrap_or(0);
        if length > MAX_BODY {
            bail!("response body of {length} bytes is too large");
        }
        let mut body = vec![0; length];
        stream.read_exact(&mut body).await?;
        if close {
            self.stream = None;
        }
        Ok(Answer { status, body })
    }
}

fn parse_status_line(line: &str) -> Option<u16> {
    let mut parts = line.split_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_lines() {
        assert_eq!(parse_status_line("HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            parse_status_line("HTTP/1.1 401 Unauthorized\r\n"),
            Some(401)
        );
        assert_eq!(parse_status_line("garbage"), None);
    }
}
