//! herald: a clustered real-time WebSocket server.
//!
//! # Layout
//!
//! A publish (HTTP, or a feature such as a new broadcast) becomes an event committed to this
//! node's SQLite log; the commit hands it, in log order, to the hub (local subscribers) and the
//! backplane (other nodes). Clients hold WebSocket sessions that the hub feeds through bounded
//! queues, each message carrying a cursor that resumes the stream on any node.
//!
//! ```text
//!  HTTP/WS (api) -> auth -> features (broadcasts, comments, forum, book requests, channels)
//!                                |
//!                                v
//!       +-----> store (writer thread, group commit; assigns (origin, seq); applies
//!       |         peers' events idempotently and holds back those behind a gap)
//!       |                        |  committed events, per-origin seq order
//!       |           +------------+------------+
//!       |           v                         v
//!       |     hub (subscriptions,        backplane: mesh (gossip + QUIC) | redis | local
//!       |     bounded queues, cursors)        |
//!       +-------------------------------------+  events pushed or pulled from peers
//! ```
//!
//! | module | owns |
//! |---|---|
//! | [`event`] | the event, node ids, channel names, hybrid clock, version vectors, cursors |
//! | [`config`] | flags + `HERALD_*` environment + TOML file -> a validated [`config::Config`] |
//! | [`store`] | SQLite: schema, writer thread with group commit, log queries, materialized state, retention (pruning, channel floors, retired origins), snapshots |
//! | [`hub`] | local subscriptions, server-side routing, per-connection bounded queues, which channels have local subscribers (interest) |
//! | [`dispatcher`] | the task that hands committed batches, in commit order, to the hub and then the backplane |
//! | [`backplane`] | the [`backplane::Backplane`] trait; `local`, `mesh` (replication, catch-up, what a peer's frame may claim, serving peers' requests, interest routing of ephemeral events, readiness by quorum, rejoining after a stall, replication lag per peer), `redis` (streams, log-driven outbox) |
//! | [`cluster`] | chitchat gossip membership: members, liveness, gossip keys, sealed gossip datagrams |
//! | [`mesh`] | the QUIC endpoint, mutual TLS from the cluster secret, peer links, frames |
//! | [`presence`] | who is on a channel cluster-wide: this node's sockets, peers' tables, the summed view, `presence_join`/`presence_leave` |
//! | [`auth`] | user JWTs, the API key, channel permissions |
//! | [`api`] | routes and their OpenAPI document, errors, extractors, HTTP body limit and timeout, socket admission (node, user, address), WebSocket sessions (message rate, liveness) |
//! | [`features`] | broadcasts, track comments, forum, book requests, generic channels, publish, which channels a feature owns |
//! | [`server`] | assembling and stopping a node |
//! | [`cli`] | `herald serve`, `cluster join/status/leave`, `token`, `publish`; the load and correctness toolkit beside the server: `bench` and `chaos` |
//! | [`telemetry`] | logging (text, or JSON lines with the node id) and the Prometheus recorder; the catalog of every `herald_*` metric, described and registered at start |
//! | [`tls_client`] | HTTPS from herald to nodes (the CLI, snapshot fetches on the Redis backplane): a CA file or the system's roots, errors that say a certificate did not verify |

pub mod api;
pub mod auth;
pub mod backplane;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod dispatcher;
pub mod event;
pub mod features;
pub mod hub;
pub mod mesh;
pub mod presence;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tls_client;
