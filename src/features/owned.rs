//! Channels that belong to a feature: their events change materialized state (the active
//! broadcast, a track's comments), so only that feature's endpoints, which check the role, the
//! length and the author, write them. The generic `POST /api/publish` refuses them with 403
//! and names the endpoint to use instead.
//!
//! `herald:` channels are internal and refused separately. The forum, book requests and
//! `user:{id}` keep their state in the application's backend, which publishes them through the
//! API; `mentions:{name}` carries the comments feature's notifications but no state, so a
//! backend may publish its own mentions (the forum's) there too.

use crate::event::ChannelName;
use crate::store::state::kinds;

/// The endpoint that writes `channel`, when a feature owns it.
pub fn written_by(channel: &ChannelName) -> Option<String> {
    let name = channel.as_str();
    if name == kinds::BROADCASTS_CHANNEL {
        return Some("POST /api/creator/broadcast".into());
    }
    let track_id = name.strip_prefix(kinds::TRACK_CHANNEL_PREFIX)?;
    Some(format!("POST /api/tracks/{track_id}/comments"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(name: &str) -> Option<String> {
        written_by(&ChannelName::new(name).unwrap())
    }

    #[test]
    fn materialized_channels_name_their_endpoint() {
        assert_eq!(
            owner("broadcasts").as_deref(),
            Some("POST /api/creator/broadcast")
        );
        assert_eq!(
            owner("track:1").as_deref(),
            Some("POST /api/tracks/1/comments")
        );
        assert!(
            owner("track:").is_some(),
            "the prefix is the feature's, whatever follows"
        );
        for free in [
            "forum",
            "forum:thread:3",
            "user:7",
            "broadcasts2",
            "tracks",
            "news",
        ] {
            assert_eq!(owner(free), None, "{free}");
        }
    }
}
