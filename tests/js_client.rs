//! The JavaScript client (`clients/js`): its own unit tests under node's test runner (a fake
//! WebSocket and clock: backoff and jitter, failover order, cursor kept and sent, duplicates
//! dropped, heartbeat and dead-server timeouts, token refresh on 1008, `recovered:false`,
//! presence events and `presence()`/`presenceCount()` with a fake fetch), and
//! what herald serves of it: the same file at `GET /client/herald.js`, and the `heartbeat_ms`
//! the client reads from `connected`.
//!
//! Node is required (it is on every machine this project builds on; Debian: `nodejs`).

mod common;

use std::process::Command;
use std::time::Duration;

use common::TestNode;

#[test]
fn the_client_passes_its_unit_tests_under_node() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/js");
    let output = Command::new("node")
        .args(["--test", "test/"])
        .current_dir(dir)
        .output()
        .expect("node is required for the JavaScript client's tests (Debian: nodejs)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "node --test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("# fail 0"), "{stdout}");
    assert!(!stdout.contains("# pass 0"), "no test ran: {stdout}");
}

#[tokio::test]
async fn herald_serves_the_client_it_embeds() {
    let node = TestNode::start().await;
    let response = node
        .http()
        .get(node.http_url("/client/herald.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("text/javascript"),
        "{content_type}"
    );
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    let body = response.text().await.unwrap();
    let file =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/clients/js/herald.js"))
            .unwrap();
    assert_eq!(body, file);
    assert!(body.contains("export class HeraldClient"));
    let types = node
        .http()
        .get(node.http_url("/client/herald.d.ts"))
        .send()
        .await
        .unwrap();
    assert_eq!(types.status(), 200);
}

#[tokio::test]
async fn connected_says_how_long_the_server_may_stay_silent() {
    let node =
        TestNode::start_with(|config| config.limits.heartbeat = Duration::from_millis(1500)).await;
    let token = node.token("7", "ana", &[]);
    let mut socket = node.ws("/ws?channel=news", Some(&token)).await;
    let connected = socket.recv_type("connected", common::TIMEOUT).await;
    assert_eq!(connected["heartbeat_ms"], 1500);
}

#[tokio::test]
async fn the_console_is_served_at_the_root_and_trades_the_api_key_for_a_token() {
    let node = TestNode::start().await;
    for path in ["/", "/console"] {
        let response = node.http().get(node.http_url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(content_type.starts_with("text/html"), "{content_type}");
        let page = response.text().await.unwrap();
        assert!(page.contains(r#"import { HeraldClient } from "/client/herald.js""#));
        // The key is kept per tab and sent as a header, never put in a URL or localStorage.
        assert!(page.contains("sessionStorage"));
        assert!(!page.contains("localStorage"));
        assert!(!page.contains("cdn"), "nothing from a network at run time");
    }
    let refused = node
        .post("/api/console/token", None, &serde_json::json!({}))
        .await;
    assert_eq!(refused.status, 401);
    let granted = node
        .post(
            "/api/console/token",
            Some(node.api_key()),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(granted.status, 200);
    let token = granted.body["token"].as_str().unwrap().to_string();
    // The token opens sockets and reads the active broadcast (an admin's).
    let mut socket = node.ws("/ws?channel=news", Some(&token)).await;
    socket.recv_type("connected", common::TIMEOUT).await;
    let active = node
        .get("/api/creator/broadcast/active", Some(&token))
        .await;
    assert_eq!(active.status, 200);
}
