//! The backplane: how committed events leave this node for the others.
//!
//! [`Backplane`] is the one interface the rest of herald sees; `local` (a single node) is the
//! first implementation, the QUIC mesh and Redis follow. The backplane is fed from the store's
//! commit sink, after the commit, and must never block the writer: implementations hand
//! events to bounded queues with a written overflow policy.

mod local;

use serde::Serialize;

use crate::event::SharedEvent;
use crate::hub::Hub;
use crate::store::CommitSink;
use std::sync::Arc;

pub use local::LocalBackplane;

/// What `/readyz` and `/api/cluster` say about the backplane.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct BackplaneHealth {
    pub kind: &'static str,
    /// True when events from this node can reach every live peer.
    pub healthy: bool,
    pub detail: String,
}

pub trait Backplane: Send + Sync + 'static {
    /// Hands committed events, in log order, to the other nodes. Never blocks.
    fn ship(&self, events: &[SharedEvent]);

    fn health(&self) -> BackplaneHealth;
}

/// The store's commit sink: local subscribers first, then the other nodes.
pub struct CommitFanout {
    pub hub: Arc<Hub>,
    pub backplane: Arc<dyn Backplane>,
}

impl CommitSink for CommitFanout {
    fn committed(&self, events: &[SharedEvent]) {
        self.hub.dispatch(events);
        self.backplane.ship(events);
    }
}
