//! `[presence]` into a [`PresenceConfig`]: which channels have presence (name prefixes, or
//! `"*"` for all) and how many users each lists.

use super::ConfigError;
use super::file::PresenceSection;
use crate::event::{ChannelName, INTERNAL_PREFIX};
use crate::presence::PresenceConfig;

/// Most users a channel may list (`max_users_per_channel`).
const MAX_LISTED: usize = 1_000_000;

pub(super) fn resolve_presence(section: &PresenceSection) -> Result<PresenceConfig, ConfigError> {
    let mut config = PresenceConfig::default();
    if let Some(channels) = &section.channels {
        for prefix in channels {
            let valid = prefix == "*"
                || (ChannelName::new(prefix).is_ok() && !prefix.starts_with(INTERNAL_PREFIX));
            if !valid {
                return Err(ConfigError::invalid(
                    "presence.channels",
                    format!(
                        "{prefix:?}: use \"*\" or a prefix of 1 to 128 of A-Z a-z 0-9 _ . : - (not herald:)"
                    ),
                ));
            }
        }
        config.channels = channels.clone();
    }
    if let Some(max) = section.max_users_per_channel {
        if !(1..=MAX_LISTED).contains(&max) {
            return Err(ConfigError::invalid(
                "presence.max_users_per_channel",
                format!("{max}: use 1 to {MAX_LISTED}"),
            ));
        }
        config.max_users_per_channel = max;
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(channels: Option<&[&str]>, max: Option<usize>) -> PresenceSection {
        PresenceSection {
            channels: channels.map(|c| c.iter().map(|s| s.to_string()).collect()),
            max_users_per_channel: max,
        }
    }

    #[test]
    fn defaults_and_overrides() {
        let config = resolve_presence(&section(None, None)).unwrap();
        assert!(config.announces("track:42"));
        assert!(config.announces("forum:thread:7"));
        assert!(config.announces("forum"));
        assert!(!config.announces("user:1"));
        assert!(config.tracks("broadcasts"));
        assert!(!config.announces("broadcasts"));
        assert_eq!(config.max_users_per_channel, 10_000);
        let all = resolve_presence(&section(Some(&["*"]), Some(5))).unwrap();
        assert!(all.announces("anything"));
        assert_eq!(all.max_users_per_channel, 5);
        let none = resolve_presence(&section(Some(&[]), None)).unwrap();
        assert!(!none.announces("track:1"));
        assert!(none.tracks("broadcasts"), "the broadcast stats still count");
    }

    #[test]
    fn bad_values_name_the_key() {
        let error = resolve_presence(&section(Some(&["bad prefix"]), None)).unwrap_err();
        assert!(error.to_string().contains("presence.channels"), "{error}");
        let error = resolve_presence(&section(Some(&["herald:x"]), None)).unwrap_err();
        assert!(error.to_string().contains("presence.channels"), "{error}");
        let error = resolve_presence(&section(None, Some(0))).unwrap_err();
        assert!(
            error.to_string().contains("presence.max_users_per_channel"),
            "{error}"
        );
    }
}
