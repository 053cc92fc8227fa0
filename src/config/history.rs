//! `[history]` (and `--history-size`, `--history-ttl`, `--history-max-disk`) into a
//! [`RetentionPolicy`].

use std::time::Duration;

use super::ConfigError;
use super::file::{HistorySection, NumberOrText};
use super::resolve::ServeArgs;
use crate::event::ChannelName;
use crate::store::retention::{
    ChannelOverride, ChannelRetention, DEFAULT_HISTORY_MAX_DISK, DEFAULT_HISTORY_SIZE,
    DEFAULT_HISTORY_TTL, RetentionPolicy,
};

/// Longest ttl accepted (a century): keeps hybrid-clock arithmetic far from overflow.
const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

pub(super) fn resolve_history(
    section: &HistorySection,
    args: &ServeArgs,
) -> Result<RetentionPolicy, ConfigError> {
    let size = args
        .history_size
        .or(section.size)
        .unwrap_or(DEFAULT_HISTORY_SIZE);
    let ttl = match (&args.history_ttl, &section.ttl) {
        (Some(text), _) => ttl("history.ttl", &NumberOrText::Text(text.clone()))?,
        (None, Some(value)) => ttl("history.ttl", value)?,
        (None, None) => DEFAULT_HISTORY_TTL,
    };
    let max_disk = match (&args.history_max_disk, &section.max_disk) {
        (Some(text), _) => bytes("history.max_disk", &NumberOrText::Text(text.clone()))?,
        (None, Some(value)) => bytes("history.max_disk", value)?,
        (None, None) => DEFAULT_HISTORY_MAX_DISK,
    };
    let default = ChannelRetention { size, ttl };
    let mut overrides: Vec<ChannelOverride> = Vec::new();
    for entry in &section.channels {
        let valid_prefix = !entry.prefix.is_empty()
            && ChannelName::new(&entry.prefix).is_ok()
            && !entry.prefix.starts_with(crate::event::INTERNAL_PREFIX);
        if !valid_prefix {
            return Err(ConfigError::invalid(
                "history.channels.prefix",
                format!(
                    "{:?}: use 1 to 128 of A-Z a-z 0-9 _ . : - (not herald:)",
                    entry.prefix
                ),
            ));
        }
        if overrides.iter().any(|o| o.prefix == entry.prefix) {
            return Err(ConfigError::invalid(
                "history.channels.prefix",
                format!("{:?} is listed twice", entry.prefix),
            ));
        }
        let retention = ChannelRetention {
            size: entry.size.unwrap_or(size),
            ttl: match &entry.ttl {
                Some(value) => self::ttl("history.channels.ttl", value)?,
                None => ttl,
            },
        };
        overrides.push(ChannelOverride {
            prefix: entry.prefix.clone(),
            retention,
        });
    }
    Ok(RetentionPolicy::new(default, overrides, max_disk))
}

fn ttl(key: &'static str, value: &NumberOrText) -> Result<Duration, ConfigError> {
    let duration = match value {
        NumberOrText::Number(0) => Duration::ZERO,
        NumberOrText::Number(_) => {
            return Err(ConfigError::invalid(
                key,
                "give a duration with its unit, for example \"24h\" (0 for no limit)",
            ));
        }
        NumberOrText::Text(text) if text.trim() == "0" => Duration::ZERO,
        NumberOrText::Text(text) => humantime::parse_duration(text.trim())
            .map_err(|e| ConfigError::invalid(key, format!("{text:?}: {e}")))?,
    };
    if duration > MAX_TTL {
        return Err(ConfigError::invalid(key, "must be at most 100 years"));
    }
    Ok(duration)
}

fn bytes(key: &'static str, value: &NumberOrText) -> Result<u64, ConfigError> {
    match value {
        NumberOrText::Number(bytes) => Ok(*bytes),
        NumberOrText::Text(text) if text.trim() == "0" => Ok(0),
        NumberOrText::Text(text) => text
            .trim()
            .parse::<bytesize::ByteSize>()
            .map(|size| size.as_u64())
            .map_err(|e| ConfigError::invalid(key, format!("{text:?}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FileConfig;

    fn policy(toml: &str, args: &ServeArgs) -> Result<RetentionPolicy, String> {
        let file = FileConfig::parse(toml).unwrap();
        resolve_history(&file.history, args).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_overrides() {
        let none = ServeArgs::default();
        assert_eq!(policy("", &none).unwrap(), RetentionPolicy::default());
        let p = policy(
            "[history]\nsize = 10\nttl = \"1h\"\nmax_disk = \"1GiB\"\n\
             [[history.channels]]\nprefix = \"track:\"\nsize = 200\nttl = \"30d\"\n\
             [[history.channels]]\nprefix = \"forum\"\nttl = 0\n",
            &none,
        )
        .unwrap();
        assert_eq!(p.max_disk, 1 << 30);
        assert_eq!(p.for_channel("news").size, 10);
        assert_eq!(p.for_channel("track:1").size, 200);
        assert_eq!(
            p.for_channel("track:1").ttl,
            Duration::from_secs(30 * 86400)
        );
        assert_eq!(p.for_channel("forum:thread:1").size, 10);
        assert_eq!(p.for_channel("forum:thread:1").ttl, Duration::ZERO);
    }

    #[test]
    fn flags_win_and_zero_means_unlimited() {
        let args = ServeArgs {
            history_size: Some(0),
            history_ttl: Some("0s".into()),
            history_max_disk: Some("0".into()),
            ..ServeArgs::default()
        };
        let p = policy("[history]\nsize = 5\n", &args).unwrap();
        assert!(!p.prunes());
    }

    #[test]
    fn bad_values_name_the_key() {
        let none = ServeArgs::default();
        let error = policy("[history]\nttl = \"soon\"\n", &none).unwrap_err();
        assert!(error.starts_with("invalid history.ttl"), "{error}");
        let error = policy("[history]\nttl = 5\n", &none).unwrap_err();
        assert!(error.starts_with("invalid history.ttl"), "{error}");
        let error = policy("[history]\nmax_disk = \"lots\"\n", &none).unwrap_err();
        assert!(error.starts_with("invalid history.max_disk"), "{error}");
        let error = policy("[[history.channels]]\nprefix = \"bad prefix\"\n", &none).unwrap_err();
        assert!(
            error.starts_with("invalid history.channels.prefix"),
            "{error}"
        );
        let error = policy(
            "[[history.channels]]\nprefix = \"a\"\n[[history.channels]]\nprefix = \"a\"\n",
            &none,
        )
        .unwrap_err();
        assert!(error.contains("twice"), "{error}");
        let args = ServeArgs {
            history_ttl: Some("-1h".into()),
            ..ServeArgs::default()
        };
        let error = policy("", &args).unwrap_err();
        assert!(error.starts_with("invalid history.ttl"), "{error}");
    }
}
