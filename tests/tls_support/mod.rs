//! Certificates and `herald serve` children for the HTTPS tests: a private CA made here with
//! rcgen, node certificates it signs (for 127.0.0.1 and localhost), a client that trusts it,
//! and a node child whose log (stderr) is kept and whose ready line gives its address.

#![allow(dead_code)]

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// A private certificate authority; its certificate is written to `pem`.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub pem: PathBuf,
}

/// A certificate chain and its key, as PEM files.
pub struct NodeCertificate {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    /// A new CA named `name`, its certificate written to `dir/<name>.pem`.
    pub fn new(dir: &Path, name: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let certificate = params.self_signed(&key).expect("CA certificate");
        let pem = dir.join(format!("{name}.pem"));
        std::fs::write(&pem, certificate.pem()).expect("write the CA");
        Self {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A certificate for 127.0.0.1 and localhost signed by this CA, written to
    /// `dir/<name>.pem` and `dir/<name>.key`.
    pub fn issue(&self, dir: &Path, name: &str) -> NodeCertificate {
        let key = KeyPair::generate().expect("node key");
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .expect("node params");
        params.distinguished_name.push(DnType::CommonName, name);
        let certificate = params
            .signed_by(&key, &self.issuer)
            .expect("node certificate");
        let files = NodeCertificate {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, certificate.pem()).expect("write the certificate");
        std::fs::write(&files.key, key.serialize_pem()).expect("write the key");
        files
    }

    /// An HTTP client that trusts this CA only.
    pub fn client(&self) -> reqwest::Client {
        herald::tls_client::http_client(
            Some(&self.pem),
            reqwest::Client::builder().timeout(Duration::from_secs(10)),
        )
        .expect("a client trusting the test CA")
    }
}

/// A `herald serve` child.
pub struct Node {
    child: Option<Child>,
    pub http: SocketAddr,
    /// `http` or `https`, from the ready line.
    pub scheme: String,
    logs: Arc<Mutex<String>>,
}

impl Node {
    /// `herald serve ARGS` with no `HERALD_*` variable but `HERALD_LOG=warn` (and `env`);
    /// waits for its ready line.
    pub fn start(args: &[OsString], env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
        command.arg("serve").args(args);
        for (variable, _) in std::env::vars() {
            if variable.starts_with("HERALD_") || variable == "NOTIFY_SOCKET" {
                command.env_remove(variable);
            }
        }
        command
            .env("HERALD_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn herald serve");
        let logs = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let kept = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut logs = kept.lock().unwrap();
                logs.push_str(&line);
                logs.push('\n');
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let (ready, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = ready.send(line);
            }
        });
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("herald serve did not start: {}", logs.lock().unwrap()));
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|field| field.strip_prefix(name))
                .map(str::to_string)
                .unwrap_or_else(|| panic!("no {name} in the ready line {line:?}"))
        };
        let http = field("http=").parse().expect("the ready line's address");
        let scheme = field("scheme=");
        Self {
            child: Some(child),
            http,
            scheme,
            logs,
        }
    }

    /// `https://127.0.0.1:port` (or `http://`).
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.http)
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// Waits up to `timeout` for the process to exit; answers its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::park_timeout(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `OsString` arguments from a mix of texts and paths.
#[macro_export]
macro_rules! args {
    ($($arg:expr),* $(,)?) => {
        [$(std::ffi::OsString::from($arg)),*]
    };
}
