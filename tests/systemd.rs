//! systemd: `herald serve` notifies readiness (`READY=1` once it listens) and the start of a
//! graceful shutdown (`STOPPING=1`) on `NOTIFY_SOCKET`, and `deploy/herald.service` is a unit
//! that `systemd-analyze verify` accepts and whose timeouts and limits fit herald's.
//!
//! Without `systemd-analyze` the verification says so and passes, unless
//! `HERALD_REQUIRE_SYSTEMD=1` (CI) makes that a failure.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const UNIT: &str = include_str!("../deploy/herald.service");

/// The value of `key=` in the unit (its last assignment).
fn unit_value(key: &str) -> String {
    UNIT.lines()
        .filter_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .next_back()
        .unwrap_or_else(|| panic!("deploy/herald.service has no {key}="))
        .trim()
        .to_string()
}

/// `TimeoutStopSec=`: how long systemd waits after SIGTERM before it sends SIGKILL.
fn stop_timeout() -> Duration {
    humantime::parse_duration(&unit_value("TimeoutStopSec")).expect("TimeoutStopSec")
}

#[test]
fn the_unit_fits_herald() {
    assert_eq!(unit_value("Type"), "notify");
    assert_eq!(
        unit_value("ExecStart"),
        "/usr/local/bin/herald serve --config /etc/herald/herald.toml"
    );
    // The file `herald init` writes has one [[nodes]] entry, which applies without --node:
    // the unit names none.
    assert!(
        !UNIT.contains("HERALD_NODE"),
        "the unit needs no HERALD_NODE for the file herald init writes"
    );
    assert_eq!(unit_value("KillSignal"), "SIGTERM");
    let data = tempfile::tempdir().unwrap();
    let defaults = herald::config::resolve(
        &herald::config::ServeArgs {
            data: Some(data.path().to_path_buf()),
            ..Default::default()
        },
        |_| None,
    )
    .unwrap();
    assert!(
        stop_timeout() >= defaults.shutdown_grace + Duration::from_secs(10),
        "TimeoutStopSec must leave the shutdown grace ({:?}) and closing the store room",
        defaults.shutdown_grace
    );
    let files: usize = unit_value("LimitNOFILE").parse().expect("LimitNOFILE");
    assert!(files >= defaults.limits.max_connections + 1000, "{files}");
    assert_eq!(unit_value("StateDirectory"), "herald");
    assert_eq!(unit_value("ReadWritePaths"), "/var/lib/herald");
    assert_eq!(
        unit_value("RestrictAddressFamilies"),
        "AF_INET AF_INET6 AF_UNIX"
    );
    assert_eq!(unit_value("CapabilityBoundingSet"), "");
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    let available = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        assert!(
            std::env::var("HERALD_REQUIRE_SYSTEMD").as_deref() != Ok("1"),
            "systemd-analyze is not installed and HERALD_REQUIRE_SYSTEMD=1"
        );
        eprintln!("skipped: systemd-analyze is not installed (Debian: apt-get install systemd)");
        return;
    }
    // verify checks that ExecStart's binary exists: a copy of the unit runs the one built.
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("herald.service");
    let copy = UNIT.replace("/usr/local/bin/herald", env!("CARGO_BIN_EXE_herald"));
    assert_ne!(copy, UNIT);
    std::fs::write(&unit, copy).unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .output()
        .expect("run systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "systemd-analyze verify: {stderr}");
    // verify exits 0 on unknown keys and bad values, which it only warns about.
    let about_the_unit: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("herald.service"))
        .collect();
    assert!(
        about_the_unit.is_empty(),
        "systemd-analyze verify warned about the unit: {about_the_unit:#?}"
    );
}

/// Reads what is in the pipe now, without waiting.
fn read_available(pipe: &mut std::process::ChildStdout) -> String {
    let fd = pipe.as_raw_fd();
    // SAFETY: fcntl on a descriptor this process owns, changing only its O_NONBLOCK flag.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        assert!(flags >= 0, "F_GETFL");
        assert!(libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) >= 0);
    }
    let mut text = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match pipe.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => text.extend_from_slice(&buffer[..n]),
            Err(error) if error.kind() == ErrorKind::WouldBlock => break,
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => panic!("read stdout: {error}"),
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// The next notification (the datagram's `KEY=value` lines), failing if herald exits first.
fn next_notification(socket: &UnixDatagram, child: &mut std::process::Child, log: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buffer = [0u8; 4096];
    loop {
        match socket.recv(&mut buffer) {
            Ok(n) => return String::from_utf8_lossy(&buffer[..n]).into_owned(),
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(error) => panic!("recv: {error}"),
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "herald exited ({status}) before notifying: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "no notification within 60 s");
    }
}

/// `herald serve` on a local backplane and port 0, data in `dir`, stderr to `log`, and none of
/// the caller's `HERALD_` variables.
fn serve_command(dir: &Path, log: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
    command
        .args(["serve", "--backplane", "local", "--http", "127.0.0.1:0"])
        .arg("--data")
        .arg(dir.join("data"))
        .stderr(std::fs::File::create(log).unwrap());
    for (variable, _) in std::env::vars() {
        if variable.starts_with("HERALD_") {
            command.env_remove(variable);
        }
    }
    command
}

#[test]
fn serve_notifies_ready_once_listening_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let log = dir.path().join("herald.log");
    let mut child = serve_command(dir.path(), &log)
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn herald serve");
    let mut stdout = child.stdout.take().expect("stdout");

    let ready = next_notification(&socket, &mut child, &log);
    // Read only now: what herald printed before notifying is already in the pipe.
    let printed = read_available(&mut stdout);
    let lines: Vec<&str> = ready.lines().collect();
    assert!(lines.contains(&"READY=1"), "{ready:?}");
    assert!(
        lines.iter().any(|l| l.starts_with("STATUS=listening on")),
        "{ready:?}"
    );
    let listening = printed
        .lines()
        .find(|line| line.starts_with("herald listening"))
        .unwrap_or_else(|| panic!("READY=1 came before the listening line: {printed:?}"));
    let address = listening
        .split_whitespace()
        .find_map(|field| field.strip_prefix("http="))
        .expect("http= in the listening line");
    // Ready means listening: the HTTP port answers.
    let mut stream = std::net::TcpStream::connect(address).expect("connect once ready");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: herald\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: sends SIGTERM to the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let terminated = Instant::now();
    let stopping = next_notification(&socket, &mut child, &log);
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    assert!(
        stopping.lines().any(|l| l.starts_with("STATUS=")),
        "{stopping:?}"
    );

    let limit = stop_timeout();
    // The exit is waited for on a thread of its own, and awaited here with the unit's limit.
    let pid = child.id();
    let (exited, exit) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = exited.send(child.wait());
        child
    });
    let status = match exit.recv_timeout(limit.saturating_sub(terminated.elapsed())) {
        Ok(status) => status.expect("wait for herald"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("still running {limit:?} after SIGTERM (systemd would SIGKILL it)");
        }
    };
    let _ = waiter.join();
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "exit status; log: {log}");
    assert!(log.contains("stopped"), "{log}");
    eprintln!(
        "exited 0, {:?} after SIGTERM (TimeoutStopSec {limit:?})",
        terminated.elapsed()
    );
}

/// A signal that comes while the node is still starting is not lost, and does not kill the
/// process with the default action: SIGTERM (and SIGHUP, which must not end it) as soon as
/// herald logs its first line, long before it listens; it still stops gracefully.
#[test]
fn a_sigterm_during_start_up_still_ends_in_a_graceful_stop() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("herald.log");
    let mut child = serve_command(dir.path(), &log)
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn herald serve");
    // The open-file limit is logged right after the handlers are installed, before the store
    // opens and the port is bound.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("open-file limit")
    {
        assert!(child.try_wait().unwrap().is_none(), "herald exited early");
        assert!(Instant::now() < deadline, "no first log line within 60 s");
        std::thread::yield_now();
    }
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: sends signals to the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    // The exit is waited for on a thread of its own, and awaited here with a bound.
    let (exited, exit) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = exited.send(child.wait());
    });
    let status = exit
        .recv_timeout(stop_timeout() + Duration::from_secs(60))
        .unwrap_or_else(|_| {
            // SAFETY: the child this test started, still running.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("still running long after SIGTERM")
        })
        .expect("wait for herald");
    let _ = waiter.join();
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "exit status {status}; log: {log}");
    assert!(log.contains("stopped"), "{log}");
}
