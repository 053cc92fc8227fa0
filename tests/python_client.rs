//! The Python client (`clients/python`, the package `herald-client`): its pytest suite, run
//! against a real node that the suite starts from the binary cargo built (`HERALD_BIN`):
//! publish and history with cursors, several channels, batches in order and all or none,
//! idempotent retries, herald's error messages as exceptions, minted tokens accepted and
//! refused, presence with a socket, the cluster table, failover, and the asyncio client.
//!
//! The Python is `clients/python/.venv/bin/python` when that venv exists (`.ci/run` makes it
//! and installs the package with its test extras), else `python3`. Without Python, pytest,
//! httpx or PyJWT the test says why and passes, unless `HERALD_REQUIRE_PYTHON=1` (set by
//! `.ci/run`), which makes that a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

fn client_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/python")
}

fn python() -> PathBuf {
    let venv = client_dir().join(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// Why the suite cannot run here, if it cannot.
fn python_unavailable(python: &Path) -> Option<String> {
    let probe = Command::new(python)
        .args(["-c", "import pytest, httpx, jwt"])
        .output();
    match probe {
        Err(error) => Some(format!("{} cannot run: {error}", python.display())),
        Ok(output) if !output.status.success() => Some(format!(
            "{} lacks pytest, httpx or PyJWT (pip install -e 'clients/python[test]'): {}",
            python.display(),
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        )),
        Ok(_) => None,
    }
}

/// The number before ` passed` in pytest's summary line (`12 passed, 1 skipped in 3.1s`).
fn passed(summary: &str) -> u32 {
    summary
        .lines()
        .rev()
        .find_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            words.windows(2).find_map(|pair| match pair {
                [count, word] if word.trim_end_matches(',') == "passed" => count.parse().ok(),
                _ => None,
            })
        })
        .unwrap_or(0)
}

#[test]
fn the_python_client_passes_its_tests_against_a_real_node() {
    let python = python();
    if let Some(reason) = python_unavailable(&python) {
        assert_ne!(
            std::env::var("HERALD_REQUIRE_PYTHON").as_deref(),
            Ok("1"),
            "HERALD_REQUIRE_PYTHON=1 but {reason}"
        );
        eprintln!("skipped: {reason}");
        return;
    }
    let output = Command::new(&python)
        .args(["-m", "pytest", "-q", "clients/python/tests"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("HERALD_BIN", env!("CARGO_BIN_EXE_herald"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("pytest runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Python client's tests failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let count = passed(&stdout);
    assert!(count > 0, "no Python test passed:\n{stdout}");
    eprintln!("{count} Python client tests passed");
}

#[test]
fn reads_pytest_summaries() {
    assert_eq!(passed("....\n43 passed in 4.90s\n"), 43);
    assert_eq!(passed("1 failed, 19 passed, 7 warnings in 5.49s"), 19);
    assert_eq!(passed("no tests ran in 0.01s"), 0);
}
