//! Rendering an event into the JSON text clients receive: the payload object with `channel`
//! (unless the payload has its own) and `cursor` appended. Done once per event per node.
//! Ephemeral events (typing, presence) get no cursor: they are not a position in the log, and a
//! client that drops what its cursor already covers must never drop them.

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::event::{Cursor, Event, VersionVector};

#[derive(Deserialize)]
struct ChannelProbe {
    channel: Option<IgnoredAny>,
}

/// The client message for `event`, carrying `cursor` as the resume point after it.
pub fn render_event(event: &Event, cursor: &VersionVector) -> String {
    let body = event.payload.trim_end();
    let body = body.strip_suffix('}').unwrap_or(body);
    let has_fields = body.trim_start().len() > 1;
    // Most payloads never mention a channel: only those that do (or that escape characters,
    // so that a key could spell it another way) are parsed to look for it at the top level.
    let may_have_channel = event.payload.contains("\"channel\"") || event.payload.contains("\\u");
    let has_channel = may_have_channel
        && serde_json::from_str::<ChannelProbe>(&event.payload)
            .map(|probe| probe.channel.is_some())
            .unwrap_or(false);
    let cursor = if event.ephemeral {
        String::new()
    } else {
        Cursor::encode(cursor)
    };
    let mut text =
        String::with_capacity(body.len() + event.channel.as_str().len() + cursor.len() + 32);
    text.push_str(body);
    let mut comma = has_fields;
    let mut field = |text: &mut String, key: &str, value: &str| {
        if comma {
            text.push(',');
        }
        comma = true;
        text.push('"');
        text.push_str(key);
        text.push_str("\":\"");
        text.push_str(value);
        text.push('"');
    };
    if !has_channel {
        field(&mut text, "channel", event.channel.as_str());
    }
    if !event.ephemeral {
        field(&mut text, "cursor", &cursor);
    }
    text.push('}');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ChannelName, Hlc, NodeId};

    fn event(payload: &str) -> Event {
        Event {
            origin: NodeId::new("n1").unwrap(),
            seq: 3,
            id: uuid::Uuid::nil(),
            hlc: Hlc(1),
            channel: ChannelName::new("forum").unwrap(),
            kind: "x".into(),
            payload: payload.into(),
            users: None,
            ephemeral: false,
            idempotency_key: None,
        }
    }

    #[test]
    fn appends_channel_and_cursor_as_valid_json() {
        let mut vector = VersionVector::new();
        vector.advance(&NodeId::new("n1").unwrap(), 3);
        let text = render_event(&event(r#"{"type":"x","n":{"channel":1}}"#), &vector);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["type"], "x");
        assert_eq!(value["channel"], "forum");
        assert_eq!(
            Cursor::decode(value["cursor"].as_str().unwrap()).unwrap(),
            vector
        );
    }

    #[test]
    fn keeps_a_payload_channel() {
        let text = render_event(
            &event(r#"{"type":"x","channel":"mine"}"#),
            &VersionVector::new(),
        );
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["channel"], "mine");
    }

    #[test]
    fn ephemeral_events_carry_no_cursor() {
        let mut typing = event(r#"{"type":"user_typing"}"#);
        typing.ephemeral = true;
        let value: serde_json::Value =
            serde_json::from_str(&render_event(&typing, &VersionVector::new())).unwrap();
        assert_eq!(value["channel"], "forum");
        assert!(value.get("cursor").is_none(), "{value}");
        let presence = Event {
            payload: r#"{"type":"presence_join","channel":"forum"}"#.into(),
            ..typing
        };
        let text = render_event(&presence, &VersionVector::new());
        assert_eq!(text, r#"{"type":"presence_join","channel":"forum"}"#);
    }

    #[test]
    fn keeps_a_payload_channel_spelled_with_escapes() {
        let text = render_event(
            &event(r#"{"type":"x","\u0063hannel":"mine"}"#),
            &VersionVector::new(),
        );
        assert!(!text.contains(r#""channel":"forum""#), "{text}");
    }

    #[test]
    fn a_nested_channel_is_not_the_payload_channel() {
        let text = render_event(
            &event(r#"{"type":"x","post":{"channel":"inner"}}"#),
            &VersionVector::new(),
        );
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["channel"], "forum");
        assert_eq!(value["post"]["channel"], "inner");
    }
}
