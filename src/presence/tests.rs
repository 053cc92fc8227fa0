//! The node's presence with a real hub: joins and leaves reach local subscribers once, in
//! order; counted channels announce nothing; guards leave on drop.

use std::sync::Arc;

use super::*;
use crate::event::VersionVector;
use crate::hub::{Subscription, SubscriptionSpec};

fn channel(name: &str) -> ChannelName {
    ChannelName::new(name).unwrap()
}

fn node(id: &str) -> NodeId {
    NodeId::new(id).unwrap()
}

fn fixture() -> (Arc<Hub>, Arc<Presence>) {
    let hub = Hub::new(VersionVector::new(), 64);
    let presence = Presence::new(PresenceConfig::default(), node("self"), Arc::clone(&hub));
    (hub, presence)
}

fn listen(hub: &Arc<Hub>, name: &str) -> Subscription {
    hub.subscribe(SubscriptionSpec::new(
        "watcher",
        vec![channel(name)],
        Vec::new(),
    ))
}

fn received(subscription: &mut Subscription) -> Vec<serde_json::Value> {
    let mut messages = Vec::new();
    while let Ok(delivery) = subscription.deliveries.try_recv() {
        messages.push(serde_json::from_str(delivery.text.as_str()).unwrap());
    }
    messages
}

#[test]
fn the_first_socket_joins_and_the_last_one_leaves() {
    let (hub, presence) = fixture();
    let mut watcher = listen(&hub, "track:1");
    let first = presence.enter("u1", "Ann", &[channel("track:1")]).unwrap();
    let second = presence.enter("u1", "Ann", &[channel("track:1")]).unwrap();
    let answer = presence.channel(&channel("track:1"));
    assert_eq!(answer.count, 1);
    assert_eq!(answer.users[0].connections, 2);
    drop(first);
    drop(second);
    let messages = received(&mut watcher);
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(
        messages[0],
        serde_json::json!({"type":"presence_join","channel":"track:1","user":{"user_id":"u1","name":"Ann"}})
    );
    assert_eq!(messages[1]["type"], "presence_leave");
    assert_eq!(messages[1]["user"]["user_id"], "u1");
    assert_eq!(presence.count(&channel("track:1")), 0);
}

#[test]
fn a_user_on_a_peer_and_here_leaves_only_when_both_are_gone() {
    let (hub, presence) = fixture();
    let mut watcher = listen(&hub, "track:1");
    let here = presence.enter("u1", "Ann", &[channel("track:1")]).unwrap();
    presence.apply_peer(
        &node("b"),
        vec![PresenceChange::User {
            channel: channel("track:1"),
            user_id: "u1".into(),
            name: "Ann".into(),
            connections: 1,
        }],
    );
    assert_eq!(presence.count(&channel("track:1")), 1);
    assert_eq!(presence.local_count(&channel("track:1")), 1);
    drop(here);
    assert_eq!(received(&mut watcher).len(), 1, "only the join so far");
    presence.remove_peer(&node("b"));
    let messages = received(&mut watcher);
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["type"], "presence_leave");
    assert!(presence.peers().is_empty());
}

#[test]
fn channels_without_presence_are_not_tracked_and_counted_ones_announce_nothing() {
    let (hub, presence) = fixture();
    assert!(presence.enter("u1", "Ann", &[channel("user:1")]).is_none());
    let mut watcher = listen(&hub, "broadcasts");
    let guard = presence
        .enter("u1", "Ann", &[channel("broadcasts")])
        .unwrap();
    assert_eq!(presence.count(&channel("broadcasts")), 1);
    drop(guard);
    assert!(received(&mut watcher).is_empty());
}

#[test]
fn local_changes_reach_the_announcers_and_snapshots() {
    let (_hub, presence) = fixture();
    let guard = presence.enter("u1", "Ann", &[channel("forum")]).unwrap();
    let LocalChanges::Delta(changes) = presence.take_local_changes() else {
        panic!("a delta");
    };
    assert_eq!(changes.len(), 1);
    assert_eq!(presence.local_snapshot(), changes);
    drop(guard);
    assert!(presence.local_snapshot().is_empty());
    assert!(matches!(
        presence.take_local_changes(),
        LocalChanges::Delta(changes) if matches!(changes[..], [PresenceChange::User { connections: 0, .. }])
    ));
}

#[test]
fn a_peer_cannot_speak_for_this_node() {
    let (_hub, presence) = fixture();
    presence.apply_peer(
        &node("self"),
        vec![PresenceChange::User {
            channel: channel("forum"),
            user_id: "ghost".into(),
            name: "Ghost".into(),
            connections: 1,
        }],
    );
    assert_eq!(presence.count(&channel("forum")), 0);
}
