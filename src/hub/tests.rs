//! Hub behaviour: server-side routing by channel, prefix and target users; one rendering per
//! event; bounded queues that drop a slow connection instead of growing.

use std::sync::Arc;

use super::*;
use crate::event::{ChannelName, Event, Hlc, NodeId};

fn event(seq: u64, channel: &str, users: Option<Vec<&str>>) -> SharedEvent {
    Arc::new(Event {
        origin: NodeId::new("n1.a").unwrap(),
        seq,
        id: uuid::Uuid::new_v4(),
        hlc: Hlc(seq),
        channel: ChannelName::new(channel).unwrap(),
        kind: "x".into(),
        payload: r#"{"type":"x"}"#.into(),
        users: users.map(|u| u.into_iter().map(String::from).collect()),
        ephemeral: false,
        idempotency_key: None,
    })
}

fn spec(user: &str, channels: &[&str], prefixes: &[&str]) -> SubscriptionSpec {
    SubscriptionSpec {
        user_id: user.into(),
        channels: channels
            .iter()
            .map(|c| ChannelName::new(c).unwrap())
            .collect(),
        prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
    }
}

fn drain(subscription: &mut Subscription) -> Vec<u64> {
    let mut seqs = Vec::new();
    while let Ok(delivery) = subscription.deliveries.try_recv() {
        seqs.push(delivery.seq);
    }
    seqs
}

#[test]
fn routes_by_channel_prefix_and_target_users() {
    let hub = Hub::new(VersionVector::new(), 16);
    let mut track_a = hub.subscribe(spec("u1", &["track:a"], &[]));
    let mut track_b = hub.subscribe(spec("u2", &["track:b"], &[]));
    let mut threads = hub.subscribe(spec("u3", &["forum:thread:1"], &["forum:thread:"]));
    hub.dispatch(&[
        event(1, "track:a", None),
        event(2, "track:b", None),
        event(3, "forum:thread:1", None),
        event(4, "forum:thread:2", None),
        event(5, "track:a", Some(vec!["u9"])),
        event(6, "herald:acks", None),
    ]);
    assert_eq!(
        drain(&mut track_a),
        vec![1],
        "a track-A client never sees track B or others' targeted events"
    );
    assert_eq!(drain(&mut track_b), vec![2]);
    assert_eq!(
        drain(&mut threads),
        vec![3, 4],
        "a prefix and an exact name covered by it deliver once"
    );
    assert_eq!(hub.delivered().get(&NodeId::new("n1.a").unwrap()), 6);
    assert_eq!(
        hub.counts(),
        HubCounts {
            connections: 3,
            users: 3
        }
    );
    drop(track_a);
    assert_eq!(
        hub.counts(),
        HubCounts {
            connections: 2,
            users: 2
        }
    );
}

#[test]
fn a_full_queue_drops_the_connection_and_raises_its_close_signal() {
    let hub = Hub::new(VersionVector::new(), 2);
    let slow = hub.subscribe(spec("slow", &["c"], &[]));
    let mut fast = hub.subscribe(spec("fast", &["c"], &[]));
    for seq in 1..=3 {
        hub.dispatch(&[event(seq, "c", None)]);
        drain(&mut fast);
    }
    let signal = Arc::clone(&slow.close_signal);
    let reason = futures_util::FutureExt::now_or_never(signal.raised());
    assert_eq!(reason, Some(CloseReason::SlowClient));
    // The slow connection no longer receives; the fast one still does.
    hub.dispatch(&[event(4, "c", None)]);
    assert_eq!(drain(&mut fast), vec![4]);
    assert_eq!(hub.channel_connections("c"), 1);
}

#[test]
fn every_delivery_carries_the_cursor_after_its_event() {
    let hub = Hub::new(VersionVector::new(), 4);
    let mut subscription = hub.subscribe(spec("u", &["c"], &[]));
    hub.dispatch(&[
        event(1, "c", None),
        event(2, "other", None),
        event(3, "c", None),
    ]);
    let first = subscription.deliveries.try_recv().unwrap();
    let second = subscription.deliveries.try_recv().unwrap();
    assert_eq!(first.cursor.get(&NodeId::new("n1.a").unwrap()), 1);
    assert_eq!(second.cursor.get(&NodeId::new("n1.a").unwrap()), 3);
    assert!(second.text.as_str().contains("\"cursor\":"));
}
