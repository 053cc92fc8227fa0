//! The application's features, each on the event log, hub and backplane: what their endpoints
//! mean and which events they publish. They never talk to sockets or peers directly.

mod batch;
pub mod book_requests;
pub mod broadcast_answers;
pub mod broadcasts;
pub mod channels;
pub mod comment_answers;
pub mod comments;
pub mod forum;
pub mod owned;
pub mod presence;
mod publish;
pub mod publish_input;
pub mod socket;

pub(crate) use publish::PublishTimer;
pub use publish::{
    EventAnswer, ManyAnswer, PublishError, PublishedEvent, PublishedMany, publish,
    publish_ephemeral, publish_many,
};
