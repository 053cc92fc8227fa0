//! Retention: how much of each channel's history the log keeps.
//!
//! A channel keeps its newest `size` events (by hybrid clock, then origin and seq, so that
//! every node holding the same events keeps the same window) and none older than `ttl`;
//! `max_disk` caps the whole database, oldest events first. Zero means unlimited for each.
//! Overrides apply by channel-name prefix; the longest matching prefix wins, and a key an
//! override leaves out comes from the top level.
//!
//! Retention only ever removes log events. Materialized state (the active broadcast,
//! acknowledgements, comments) lives in its own tables and is untouched by pruning.

use std::time::Duration;

/// Defaults of `[history]`.
pub const DEFAULT_HISTORY_SIZE: u64 = 1000;
pub const DEFAULT_HISTORY_TTL: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_HISTORY_MAX_DISK: u64 = 8 * 1024 * 1024 * 1024;

/// What one channel keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelRetention {
    /// Events kept; 0 keeps all.
    pub size: u64,
    /// Age after which events go; zero keeps them for ever.
    pub ttl: Duration,
}

impl ChannelRetention {
    pub fn unlimited() -> Self {
        Self {
            size: 0,
            ttl: Duration::ZERO,
        }
    }

    /// The ttl in hybrid-clock units (milliseconds shifted past the logical counter), or
    /// `None` when events never expire.
    pub fn ttl_hlc(&self) -> Option<u64> {
        (!self.ttl.is_zero())
            .then(|| crate::event::Hlc::from_parts(self.ttl.as_millis() as u64, 0).0)
    }
}

/// An override of `[[history.channels]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelOverride {
    pub prefix: String,
    pub retention: ChannelRetention,
}

/// The whole `[history]` table, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub default: ChannelRetention,
    /// Sorted longest prefix first, so the first match is the longest.
    overrides: Vec<ChannelOverride>,
    /// Ceiling, in bytes, for the database on disk; 0 for none.
    pub max_disk: u64,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self::new(
            ChannelRetention {
                size: DEFAULT_HISTORY_SIZE,
                ttl: DEFAULT_HISTORY_TTL,
            },
            Vec::new(),
            DEFAULT_HISTORY_MAX_DISK,
        )
    }
}

impl RetentionPolicy {
    pub fn new(
        default: ChannelRetention,
        mut overrides: Vec<ChannelOverride>,
        max_disk: u64,
    ) -> Self {
        overrides.sort_by_key(|o| std::cmp::Reverse(o.prefix.len()));
        Self {
            default,
            overrides,
            max_disk,
        }
    }

    /// Keeps everything: the log is never pruned.
    pub fn unlimited() -> Self {
        Self::new(ChannelRetention::unlimited(), Vec::new(), 0)
    }

    pub fn overrides(&self) -> &[ChannelOverride] {
        &self.overrides
    }

    /// The rule for `channel`: the longest matching override, else the top level.
    pub fn for_channel(&self, channel: &str) -> ChannelRetention {
        self.overrides
            .iter()
            .find(|o| channel.starts_with(o.prefix.as_str()))
            .map(|o| o.retention)
            .unwrap_or(self.default)
    }

    /// True when some rule can remove events.
    pub fn prunes(&self) -> bool {
        let limited = |r: &ChannelRetention| r.size > 0 || !r.ttl.is_zero();
        self.max_disk > 0
            || limited(&self.default)
            || self.overrides.iter().any(|o| limited(&o.retention))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(size: u64, secs: u64) -> ChannelRetention {
        ChannelRetention {
            size,
            ttl: Duration::from_secs(secs),
        }
    }

    #[test]
    fn the_longest_matching_prefix_wins() {
        let policy = RetentionPolicy::new(
            rule(1000, 86400),
            vec![
                ChannelOverride {
                    prefix: "track:".into(),
                    retention: rule(200, 30 * 86400),
                },
                ChannelOverride {
                    prefix: "track:vip".into(),
                    retention: rule(0, 0),
                },
            ],
            0,
        );
        assert_eq!(policy.for_channel("track:1"), rule(200, 30 * 86400));
        assert_eq!(policy.for_channel("track:vip7"), rule(0, 0));
        assert_eq!(policy.for_channel("forum"), rule(1000, 86400));
        assert!(policy.prunes());
        assert!(!RetentionPolicy::unlimited().prunes());
        assert_eq!(rule(0, 0).ttl_hlc(), None);
        assert_eq!(rule(0, 1).ttl_hlc(), Some(1000 << 16));
    }
}
