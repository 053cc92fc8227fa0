//! `GET /api/cluster` (members, state, connections, users, log positions, links, and at the
//! top level `quorum: {reachable, known, ready}` and `unreachable: [node ids]`, the known
//! peers this node cannot reach; see `backplane::mesh_quorum`) and `POST /api/cluster/leave`
//! (graceful leave), both with the API key.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::schemas::{self, ErrorBody};
use super::{ApiKey, AppState};
use crate::backplane::{BackplaneHealth, PeerSummary};
use crate::cluster::{Member, MemberState};
use crate::event::VersionVector;
use crate::mesh::LinkInfo;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(cluster))
        .routes(routes!(leave))
}

/// One row of the members table.
#[derive(Serialize, ToSchema)]
struct MemberView {
    node_id: String,
    generation: u64,
    state: MemberState,
    http_addr: Option<String>,
    gossip_addr: String,
    mesh_addr: Option<String>,
    connections: u64,
    users: u64,
    #[schema(value_type = schemas::VersionVector)]
    log_position: VersionVector,
    log_total: u64,
    /// The node's `replication` setting: this node's, or what a peer announced in gossip.
    #[serde(skip_serializing_if = "Option::is_none")]
    replication: Option<u8>,
    linked: bool,
    is_self: bool,
}

/// The answer of `GET /api/cluster` (fields in the order of the JSON).
#[derive(Serialize, ToSchema)]
struct ClusterView {
    #[serde(serialize_with = "crate::api::sorted::keys")]
    #[schema(value_type = schemas::BackplaneHealth)]
    backplane: BackplaneHealth,
    cluster_id: String,
    #[serde(serialize_with = "crate::api::sorted::keys")]
    links: Vec<LinkInfo>,
    #[serde(serialize_with = "crate::api::sorted::keys")]
    members: Vec<MemberView>,
    node_id: String,
    /// This node's origin in the event log.
    origin: String,
    /// Null when the backplane has no notion of a quorum.
    #[schema(value_type = Option<schemas::Quorum>)]
    quorum: Value,
    /// Always `success`.
    status: &'static str,
    /// The known peers this node cannot reach.
    unreachable: Vec<String>,
}

/// The cluster as this node sees it.
#[utoipa::path(
    get,
    path = "/api/cluster",
    operation_id = "cluster",
    tag = "cluster",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Members, their state, connections, users and log \
            positions, links to peers, the quorum and the unreachable peers", body = ClusterView),
        (status = 401, description = "No valid API key", body = ErrorBody),
    ),
)]
async fn cluster(State(state): State<AppState>, _key: ApiKey) -> Json<ClusterView> {
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
    Json(ClusterView {
        status: "success",
        node_id: state.config.node_id.to_string(),
        origin: state.store.origin().to_string(),
        cluster_id: state.config.cluster_id.clone(),
        quorum,
        unreachable,
        backplane,
        members,
        links,
    })
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

/// The answer of `POST /api/cluster/leave`.
#[derive(Serialize, ToSchema)]
struct Leaving {
    message: &'static str,
    /// Always `success`.
    status: &'static str,
}

/// Asks this node to leave the cluster gracefully.
#[utoipa::path(
    post,
    path = "/api/cluster/leave",
    operation_id = "cluster_leave",
    tag = "cluster",
    security(("api_key" = [])),
    responses(
        (status = 202, description = "Leaving: closing clients with 1012, announcing the leave \
            on gossip, then exiting", body = Leaving),
        (status = 401, description = "No valid API key", body = ErrorBody),
    ),
)]
async fn leave(State(state): State<AppState>, _key: ApiKey) -> (StatusCode, Json<Leaving>) {
    state.lifecycle.request_leave();
    (
        StatusCode::ACCEPTED,
        Json(Leaving {
            status: "success",
            message: "leaving: draining clients, announcing, exiting",
        }),
    )
}
