//! The application's features, each on the event log, hub and backplane: what their endpoints
//! mean and which events they publish. They never talk to sockets or peers directly.

pub mod book_requests;
pub mod broadcasts;
pub mod channels;
pub mod comments;
pub mod forum;
pub mod owned;
mod publish;
pub mod socket;

pub use publish::{PublishError, publish, publish_ephemeral};
