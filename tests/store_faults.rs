//! Disks and databases that fail, through the real binary.
//!
//! - A full disk (a data directory on a small tmpfs, filled to the brim): publishes answer 503
//!   `store full`, `/readyz` fails, nothing that got a 2xx answer is lost, and once space is
//!   freed publishing resumes by itself, without a restart. A node whose disk is full while
//!   its peer publishes gets the events it failed to store once it has space again (pulled
//!   again over the mesh, read again from Redis).
//! - A corrupted database refuses to start: exit status 2 and one line naming the file.
//!
//! The tmpfs tests mount a file system, which needs root (CI runs as root). Where mounting is
//! impossible they fail, saying so: they are never skipped.

mod cluster_support;
#[cfg(feature = "redis")]
mod redis_support;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cluster_support::{API_KEY, TestCluster, wait_for, wait_until};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
const CHANNEL: &str = "disk";
/// Bytes of padding in each published event: a full disk is reached in a few publishes.
const PADDING: usize = 16 * 1024;

/// A tmpfs of `size_mib` mounted on a fresh directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size_mib: u64) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(dir.path())
            .output();
        match output {
            Ok(output) if output.status.success() => {}
            Ok(output) => panic!(
                "cannot mount a tmpfs on {} (this test needs root, as in CI): {}",
                dir.path().display(),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            Err(error) => panic!("cannot run mount (this test needs root, as in CI): {error}"),
        }
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the file system to the brim with `filler`: big writes, then page-sized ones,
    /// until nothing more fits.
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).expect("create filler");
        for chunk in [1024 * 1024, 4096, 512] {
            let bytes = vec![0x55u8; chunk];
            while file.write_all(&bytes).and_then(|()| file.flush()).is_ok() {}
        }
        let _ = file.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a node killed a moment ago may still hold a file open.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn tick(n: u64) -> Value {
    json!({ "type": "tick", "p": 0, "n": n, "padding": "x".repeat(PADDING) })
}

/// Publishes on node `index`; answers the status and the body.
async fn publish(cluster: &TestCluster, index: usize, data: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("http://{}/api/publish", cluster.http(index)))
        .bearer_auth(API_KEY)
        .timeout(Duration::from_secs(10))
        .json(&json!({ "channel": CHANNEL, "data": data }))
        .send()
        .await
        .expect("publish request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn readyz(cluster: &TestCluster, index: usize) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(format!("http://{}/readyz", cluster.http(index)))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("readyz");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The `n` of every tick in node `index`'s history.
async fn stored(cluster: &TestCluster, index: usize) -> BTreeSet<u64> {
    cluster
        .history_ticks(index, CHANNEL)
        .await
        .into_iter()
        .map(|(_, n)| n)
        .collect()
}

fn keep_everything(spec: &mut cluster_support::NodeSpec) {
    spec.extra_args = [
        "--history-size",
        "0",
        "--history-ttl",
        "0",
        "--history-max-disk",
        "0",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_keeps_what_was_acknowledged_and_recovers_by_itself() {
    let disk = Tmpfs::mount(8);
    let data = disk.path().join("n1");
    let mut cluster = TestCluster::start_with(1, |_, spec| {
        keep_everything(spec);
        spec.extra_args
            .extend(["--backplane".to_string(), "local".to_string()]);
        spec.data = data.clone();
    })
    .await;
    let mut acknowledged = BTreeSet::new();
    let mut n = 0;
    for _ in 0..10 {
        n += 1;
        let (status, body) = publish(&cluster, 0, tick(n)).await;
        assert_eq!(status, 200, "{body}");
        acknowledged.insert(n);
    }

    let filler = disk.fill();
    // What the database had allocated may take a few more; then the disk is full.
    let mut refused = None;
    for _ in 0..2000 {
        n += 1;
        let (status, body) = publish(&cluster, 0, tick(n)).await;
        if (200..300).contains(&status) {
            acknowledged.insert(n);
            continue;
        }
        refused = Some((status, body));
        break;
    }
    let (status, body) = refused.expect("publishes never failed on a full disk");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body, json!({ "status": "error", "message": "store full" }));
    // Every publish fails while the disk stays full, and readiness says why.
    for _ in 0..5 {
        n += 1;
        let (status, body) = publish(&cluster, 0, tick(n)).await;
        assert_eq!(
            (status, &body["message"]),
            (503, &json!("store full")),
            "{body}"
        );
    }
    let (status, body) = readyz(&cluster, 0).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["store_writable"], false, "{body}");
    assert!(cluster.metric(0, "herald_store_full").await >= 1.0);

    // Space comes back: the very next publishes work again, no restart.
    std::fs::remove_file(&filler).expect("remove filler");
    let tried = AtomicU64::new(n);
    let resumed = AtomicU64::new(0);
    wait_for("publishing resumes once space is freed", WAIT, || async {
        let k = tried.fetch_add(1, Ordering::SeqCst) + 1;
        let (status, body) = publish(&cluster, 0, tick(k)).await;
        if status == 200 {
            resumed.store(k, Ordering::SeqCst);
            return true;
        }
        assert_eq!(status, 503, "{body}");
        false
    })
    .await;
    n = tried.load(Ordering::SeqCst);
    acknowledged.insert(resumed.load(Ordering::SeqCst));
    wait_until(WAIT, || async { readyz(&cluster, 0).await.0 == 200 }).await;
    for _ in 0..10 {
        n += 1;
        let (status, body) = publish(&cluster, 0, tick(n)).await;
        assert_eq!(status, 200, "{body}");
        acknowledged.insert(n);
    }
    assert_eq!(cluster.metric(0, "herald_store_full").await, 0.0);

    // Everything acknowledged is there, and stays there across a SIGKILL.
    let held = stored(&cluster, 0).await;
    let missing: Vec<_> = acknowledged.difference(&held).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    cluster.kill(0);
    cluster.start_node(0);
    let held = stored(&cluster, 0).await;
    let missing: Vec<_> = acknowledged.difference(&held).collect();
    assert!(missing.is_empty(), "lost across a restart: {missing:?}");
    drop(cluster);
}

/// Two nodes on `backplane_args`, the second on a tmpfs that is full while the first
/// publishes: once space is freed, the second gets everything it failed to store.
async fn a_full_peer_catches_up_once_it_has_space(backplane_args: &[String]) {
    let disk = Tmpfs::mount(8);
    let full_data = disk.path().join("n2");
    let cluster = TestCluster::start_with(2, |index, spec| {
        keep_everything(spec);
        spec.extra_args.extend(backplane_args.iter().cloned());
        if index == 1 {
            spec.data = full_data.clone();
        }
    })
    .await;
    for index in 0..2 {
        wait_until(WAIT, || async { readyz(&cluster, index).await.0 == 200 }).await;
    }
    let filler = disk.fill();
    let mut published = BTreeSet::new();
    let mut n = 0;
    // Publish on n1 until n2 has failed to store some of it.
    let deadline = Instant::now() + WAIT;
    while cluster.metric(1, "herald_store_write_failures_total").await < 1.0 {
        assert!(Instant::now() < deadline, "n2 never failed to store");
        for _ in 0..20 {
            n += 1;
            let (status, body) = publish(&cluster, 0, tick(n)).await;
            assert_eq!(status, 200, "{body}");
            published.insert(n);
        }
    }
    for _ in 0..20 {
        n += 1;
        assert_eq!(publish(&cluster, 0, tick(n)).await.0, 200);
        published.insert(n);
    }
    assert!(stored(&cluster, 1).await.len() < published.len());

    std::fs::remove_file(&filler).expect("remove filler");
    wait_until(WAIT, || async { stored(&cluster, 1).await == published }).await;
    assert_eq!(stored(&cluster, 0).await, published);
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_a_full_peer_failed_to_store_are_pulled_again_over_the_mesh() {
    a_full_peer_catches_up_once_it_has_space(&[]).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_a_full_peer_failed_to_store_are_read_again_from_redis() {
    let Some(redis) = redis_support::RedisServer::started("events_read_again_from_redis") else {
        return;
    };
    let args = ["--backplane", "redis", "--redis-url", &redis.url()].map(String::from);
    a_full_peer_catches_up_once_it_has_space(&args).await;
}

/// Runs `herald serve` on `data` and waits for it to exit (killing it after `WAIT`).
fn serve_until_exit(data: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--backplane", "local", "--http", "127.0.0.1:0"])
        .arg("--data")
        .arg(data)
        .env_remove("HERALD_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn herald");
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("herald started on a corrupted database");
        }
        std::thread::park_timeout(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    use std::io::Read;
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr);
    (status.code(), stderr)
}

/// The one error line of a refused start, checked to name `file`.
fn refusal(code: Option<i32>, stderr: &str, file: &Path) -> String {
    assert_eq!(code, Some(2), "exit status; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("herald: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    let line = errors[0];
    assert!(line.contains(&file.display().to_string()), "{line}");
    assert!(line.contains("corrupt"), "{line}");
    line.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_database_refuses_to_start_naming_the_file() {
    let mut cluster = TestCluster::start_with(1, |_, spec| {
        keep_everything(spec);
        spec.extra_args
            .extend(["--backplane".to_string(), "local".to_string()]);
    })
    .await;
    for n in 1..=300 {
        let data = json!({ "type": "tick", "p": 0, "n": n, "padding": "y".repeat(2000) });
        assert_eq!(publish(&cluster, 0, data).await.0, 200);
    }
    // A graceful stop checkpoints the WAL into the database file.
    cluster.terminate(0);
    let data = cluster.nodes[0].spec.data.clone();
    let database = data.join("herald.db");
    let wal = data.join("herald.db-wal");
    assert!(
        std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0) == 0,
        "the WAL still holds pages"
    );
    let original = std::fs::read(&database).expect("read database");
    const PAGE: usize = 4096;
    let pages = original.len() / PAGE;
    assert!(
        pages > 100,
        "a database of {pages} pages is too small to test"
    );

    // Pages in the middle overwritten: quick_check finds them.
    let mut damaged = original.clone();
    let middle = pages / 2;
    for byte in &mut damaged[middle * PAGE..(middle + 4) * PAGE] {
        *byte = 0xA5;
    }
    std::fs::write(&database, &damaged).expect("write damaged database");
    let (code, stderr) = serve_until_exit(&data);
    let line = refusal(code, &stderr, &database);
    assert!(line.contains("quick_check"), "{line}");

    // A first page overwritten: not a database any more.
    let mut damaged = original.clone();
    for byte in &mut damaged[..PAGE] {
        *byte = 0x3C;
    }
    std::fs::write(&database, &damaged).expect("write damaged database");
    let (code, stderr) = serve_until_exit(&data);
    refusal(code, &stderr, &database);

    // The intact file starts again, with everything in it.
    std::fs::write(&database, &original).expect("restore database");
    cluster.start_node(0);
    assert_eq!(stored(&cluster, 0).await.len(), 300);
}
