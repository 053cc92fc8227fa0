//! The single-node backplane: there is nobody to ship to.

use super::{Backplane, BackplaneHealth};
use crate::event::SharedEvent;

#[derive(Debug, Default)]
pub struct LocalBackplane;

impl Backplane for LocalBackplane {
    fn ship(&self, _events: &[SharedEvent]) {}

    fn health(&self) -> BackplaneHealth {
        BackplaneHealth {
            kind: "local",
            healthy: true,
            detail: "single node".into(),
            partition: Some(super::mesh_quorum::QuorumView::alone()),
        }
    }
}
