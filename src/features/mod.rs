//! The application's features, each on the event log, hub and backplane: what their endpoints
//! mean and which events they publish. They never talk to sockets or peers directly.

pub mod broadcasts;
pub mod channels;
mod publish;

pub use publish::{PublishError, publish};
