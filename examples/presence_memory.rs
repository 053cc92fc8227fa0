//! Memory per tracked user in presence, measured with a counting allocator.
//!
//! Enters `USERS` distinct users, one socket each, on one channel of this node's presence
//! (what the node holding their sockets keeps: its local table, its source table and the
//! cluster view), then has a peer announce as many (what every other node keeps: the peer's
//! table and the view), and prints the heap bytes per user of each. User ids look like
//! `user-123456` and names like `Listener 123456`; longer ones cost their extra bytes twice.
//!
//! Run: `cargo run --release --example presence_memory`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use herald::event::{ChannelName, NodeId, VersionVector};
use herald::hub::Hub;
use herald::presence::{Presence, PresenceChange, PresenceConfig};

const USERS: usize = 100_000;

struct Counting;

static ALLOCATED: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocated() -> isize {
    ALLOCATED.load(Ordering::Relaxed)
}

fn main() {
    let channel = ChannelName::new("track:1").expect("channel");
    let config = PresenceConfig {
        channels: vec!["track:".into()],
        max_users_per_channel: USERS,
    };

    let hub = Hub::new(VersionVector::new(), 16);
    let presence = Presence::new(
        config.clone(),
        NodeId::new("local").expect("id"),
        std::sync::Arc::clone(&hub),
    );
    let before = allocated();
    let guards: Vec<_> = (0..USERS)
        .map(|n| {
            presence
                .enter(
                    &format!("user-{n:06}"),
                    &format!("Listener {n:06}"),
                    std::slice::from_ref(&channel),
                )
                .expect("tracked")
        })
        .collect();
    // What the announcers would take; the pending set is not part of the steady state.
    let _ = presence.take_local_changes();
    let guard_bytes = guards.capacity() * std::mem::size_of_val(&guards[0]);
    let local = allocated() - before - guard_bytes as isize;
    assert_eq!(presence.count(&channel), USERS as u64);

    let peer_view = Presence::new(config, NodeId::new("other").expect("id"), hub);
    // Counted from before the changes are built: they are freed inside, so that only what
    // the tables keep remains.
    let before = allocated();
    let changes: Vec<PresenceChange> = (0..USERS)
        .map(|n| PresenceChange::User {
            channel: channel.clone(),
            user_id: format!("user-{n:06}"),
            name: format!("Listener {n:06}"),
            connections: 1,
        })
        .collect();
    peer_view.apply_peer(&NodeId::new("local").expect("id"), changes);
    let peer = allocated() - before;
    assert_eq!(peer_view.count(&channel), USERS as u64);

    println!(
        "{USERS} users on one channel: {} bytes per user on the node holding their sockets \
         (local, source table, view; the socket's guard adds {} more), {} bytes per user on \
         every other node (peer table, view)",
        local / USERS as isize,
        std::mem::size_of_val(&guards[0]),
        peer / USERS as isize,
    );
    drop(guards);
}
