//! `GET /api/cluster` (members, state, connections, users, log positions, links, and at the
//! top level `quorum: {reachable, known, ready}` and `unreachable: [node ids]`, the known
//! peers this node cannot reach; see `backplane::mesh_quorum`) and `POST /api/cluster/leave`
//! (graceful leave), both with the API key.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{Value, json};

use super::{ApiKey, AppState};
use crate::backplane::PeerSummary;
use crate::cluster::{Member, MemberState};
use crate::event::VersionVector;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/cluster", get(cluster))
        .route("/api/cluster/leave", post(leave))
}

/// One row of the members table.
#[derive(Serialize)]
struct MemberView {
    node_id: String,
    generation: u64,
    state: MemberState,
    http_addr: Option<String>,
    gossip_addr: String,
    mesh_addr: Option<String>,
    connections: u64,
    users: u64,
    log_position: VersionVector,
    log_total: u64,
    /// The node's `replication` setting: this node's, or what a peer announced in gossip.
    #[serde(skip_serializing_if = "Option::is_none")]
    replication: Option<u8>,
    linked: bool,
    is_self: bool,
}

async fn cluster(State(state): State<AppState>, _key: ApiKey) -> Json<Value> {
    let counts = state.hub.counts();
    let position = state.hub.delivered();
    let links = state.backplane.links();
    let members: Vec<MemberView> = match state.backplane.cluster() {
        Some(cluster) => cluster
            .members()
            .iter()
            .map(|member| view(member, &links, &position, counts.connections, counts.users))
            .collect(),
        // No gossip (redis, local): this node, live, and the peers the backplane knows of.
        None => std::iter::once(MemberView {
            node_id: state.config.node_id.to_string(),
            generation: 0,
            state: MemberState::Alive,
            http_addr: Some(state.config.http.to_string()),
            gossip_addr: "-".into(),
            mesh_addr: None,
            connections: counts.connections as u64,
            users: counts.users as u64,
            log_total: position.total(),
            log_position: position.clone(),
            replication: Some(state.config.replication),
            linked: false,
            is_self: true,
        })
        .chain(state.backplane.peers().into_iter().map(peer_view))
        .collect(),
    };
    let backplane = state.backplane.health();
    let (quorum, unreachable) = super::health::partition_fields(&backplane);
    Json(json!({
        "status": "success",
        "node_id": state.config.node_id.as_str(),
        "origin": state.store.origin().as_str(),
        "cluster_id": state.config.cluster_id,
        "quorum": quorum,
        "unreachable": unreachable,
        "backplane": backplane,
        "members": members,
        "links": links,
    }))
}

fn view(
    member: &Member,
    links: &[crate::mesh::LinkInfo],
    own_position: &VersionVector,
    own_connections: usize,
    own_users: usize,
) -> MemberView {
    // This node's own figures are read live rather than from its last gossip.
    let (connections, users, position) = if member.is_self {
        (
            own_connections as u64,
            own_users as u64,
            own_position.clone(),
        )
    } else {
        (
            member.connections,
            member.users,
            member.log_position.clone(),
        )
    };
    MemberView {
        node_id: member.node_id.clone(),
        generation: member.generation,
        state: member.state,
        http_addr: member.http_addr.map(|a| a.to_string()),
        gossip_addr: member.gossip_addr.to_string(),
        mesh_addr: member.mesh_addr.map(|a| a.to_string()),
        connections,
        users,
        log_total: position.total(),
        log_position: position,
        replication: Some(member.replication).filter(|r| *r > 0),
        linked: links
            .iter()
            .any(|link| link.peer.as_str() == member.node_id),
        is_self: member.is_self,
    }
}

fn peer_view(peer: PeerSummary) -> MemberView {
    MemberView {
        node_id: peer.node_id,
        generation: 0,
        state: peer.state,
        http_addr: peer.http_addr,
        gossip_addr: "-".into(),
        mesh_addr: None,
        connections: peer.connections,
        users: peer.users,
        log_total: peer.log_position.total(),
        log_position: peer.log_position,
        replication: None,
        linked: peer.linked,
        is_self: false,
    }
}

async fn leave(State(state): State<AppState>, _key: ApiKey) -> (StatusCode, Json<Value>) {
    state.lifecycle.request_leave();
    (
        StatusCode::ACCEPTED,
        Json(
            json!({ "status": "success", "message": "leaving: draining clients, announcing, exiting" }),
        ),
    )
}
