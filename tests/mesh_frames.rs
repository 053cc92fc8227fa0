//! The mesh refuses malformed and oversized frames from an authenticated peer: the link is
//! closed (application code 3), nothing panics, and the node keeps accepting good peers.

use std::sync::Arc;
use std::time::Duration;

use herald::event::NodeId;
use herald::mesh::frame::{self, FORMAT_VERSION, Frame, MAGIC};
use herald::mesh::tls::{ClusterIdentity, SERVER_NAME};
use herald::mesh::{LocalIdentity, Mesh};

const SECRET: &str = "frames-test-secret";
const CLUSTER: &str = "frames";

async fn start_node() -> (
    Arc<Mesh>,
    tokio::sync::mpsc::Receiver<herald::mesh::Inbound>,
) {
    let local = LocalIdentity {
        node_id: NodeId::new("server").unwrap(),
        cluster_id: CLUSTER.into(),
        generation: 1,
    };
    Mesh::start("127.0.0.1:0".parse().unwrap(), local, SECRET).unwrap()
}

/// Connects as an authenticated peer, says hello, and answers the streams.
async fn connect_as_peer(mesh: &Mesh) -> (quinn::Connection, quinn::SendStream) {
    let identity = ClusterIdentity::derive(SECRET, CLUSTER).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(identity.client_config().unwrap());
    let connection = endpoint
        .connect(mesh.local_addr().unwrap(), SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    let mut send = connection.open_uni().await.unwrap();
    let hello = frame::encode(&Frame::Hello {
        node_id: NodeId::new("peer").unwrap(),
        cluster_id: CLUSTER.into(),
        generation: 1,
    })
    .unwrap();
    send.write_all(&hello).await.unwrap();
    let _server_stream = connection.accept_uni().await.unwrap();
    (connection, send)
}

async fn closed_with_code(connection: &quinn::Connection) -> u64 {
    let reason = tokio::time::timeout(Duration::from_secs(10), connection.closed())
        .await
        .expect("the node did not close the link");
    match reason {
        quinn::ConnectionError::ApplicationClosed(close) => close.error_code.into_inner(),
        other => panic!("closed for another reason: {other}"),
    }
}

#[tokio::test]
async fn a_malformed_frame_closes_the_link() {
    let (mesh, _inbound) = start_node().await;
    let (connection, mut send) = connect_as_peer(&mesh).await;
    let mut garbage = Vec::new();
    garbage.extend_from_slice(&MAGIC);
    garbage.push(FORMAT_VERSION);
    garbage.extend_from_slice(&16u32.to_be_bytes());
    garbage.extend_from_slice(&[0xff; 16]);
    send.write_all(&garbage).await.unwrap();
    assert_eq!(closed_with_code(&connection).await, 3);

    // The node still takes good peers.
    let (_good, mut send) = connect_as_peer(&mesh).await;
    let events = frame::encode(&Frame::Events { events: Vec::new() }).unwrap();
    send.write_all(&events).await.unwrap();
}

#[tokio::test]
async fn an_oversized_frame_is_refused_before_it_is_read() {
    let (mesh, _inbound) = start_node().await;
    let (connection, mut send) = connect_as_peer(&mesh).await;
    let mut header = Vec::new();
    header.extend_from_slice(&MAGIC);
    header.push(FORMAT_VERSION);
    header.extend_from_slice(&u32::MAX.to_be_bytes());
    send.write_all(&header).await.unwrap();
    assert_eq!(closed_with_code(&connection).await, 3);
}

#[tokio::test]
async fn a_peer_without_the_secret_fails_the_handshake() {
    let (mesh, _inbound) = start_node().await;
    let identity = ClusterIdentity::derive("another-secret-entirely", CLUSTER).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(identity.client_config().unwrap());
    let outcome = endpoint
        .connect(mesh.local_addr().unwrap(), SERVER_NAME)
        .unwrap()
        .await;
    assert!(
        outcome.is_err(),
        "the handshake must fail without the secret"
    );
}
