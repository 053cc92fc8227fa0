//! Who may subscribe to which channel (DESIGN.md section 5).

use super::User;
use crate::event::ChannelName;

#[derive(Debug, PartialEq, Eq)]
pub enum ChannelAccess {
    Allowed,
    /// The reason, for a 403 or a 1008 close.
    Denied(&'static str),
}

/// `user:{id}` and `book_requests:user:{id}` are for that user only, `mentions:{name}` for the
/// user of that (lowercased) name; `book_requests:admin` for creators and admins; `herald:` channels for nobody; everything else for any signed-in user.
pub fn may_subscribe(user: &User, channel: &ChannelName) -> ChannelAccess {
    if channel.is_internal() {
        return ChannelAccess::Denied("internal channel");
    }
    if let Some(owner) = channel.personal_owner() {
        return if owner == user.id {
            ChannelAccess::Allowed
        } else {
            ChannelAccess::Denied("another user's private channel")
        };
    }
    if let Some(name) = channel.as_str().strip_prefix("mentions:") {
        return if name == user.name.to_lowercase() {
            ChannelAccess::Allowed
        } else {
            ChannelAccess::Denied("another user's mentions")
        };
    }
    if channel.as_str() == "book_requests:admin" && !user.is_creator_or_admin() {
        return ChannelAccess::Denied("creator or admin role required");
    }
    ChannelAccess::Allowed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    fn user(id: &str, roles: &[Role]) -> User {
        User {
            id: id.into(),
            name: id.into(),
            roles: roles.to_vec(),
            creator_id: None,
        }
    }

    fn channel(name: &str) -> ChannelName {
        ChannelName::new(name).unwrap()
    }

    #[test]
    fn personal_channels_are_private() {
        let alice = user("1", &[]);
        assert_eq!(
            may_subscribe(&alice, &channel("user:1")),
            ChannelAccess::Allowed
        );
        assert!(matches!(
            may_subscribe(&alice, &channel("user:2")),
            ChannelAccess::Denied(_)
        ));
        assert!(matches!(
            may_subscribe(&alice, &channel("book_requests:user:2")),
            ChannelAccess::Denied(_)
        ));
        assert!(matches!(
            may_subscribe(&alice, &channel("herald:acks")),
            ChannelAccess::Denied(_)
        ));
    }

    #[test]
    fn admin_channel_needs_a_role() {
        assert!(matches!(
            may_subscribe(&user("1", &[Role::Team]), &channel("book_requests:admin")),
            ChannelAccess::Denied(_)
        ));
        assert_eq!(
            may_subscribe(&user("1", &[Role::Admin]), &channel("book_requests:admin")),
            ChannelAccess::Allowed
        );
        assert_eq!(
            may_subscribe(&user("1", &[]), &channel("forum")),
            ChannelAccess::Allowed
        );
    }
}
