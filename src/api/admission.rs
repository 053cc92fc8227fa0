//! Admission control for WebSocket connections: whether this node takes one more socket.
//!
//! A connection is admitted by a [`ConnectionPermit`] that it holds for its whole life and that
//! gives its place back when dropped, whatever ends the connection (a close, an error, a
//! dead TCP link found by the heartbeat, an upgrade that never completes). Three bounds:
//!
//! - the node: `max_connections`, a semaphore taken before the upgrade (refused: 1013);
//! - the peer address: `max_connections_per_ip`, also before the upgrade (refused: 1008); off
//!   by default, since users behind one proxy share an address;
//! - the user: `max_connections_per_user`, once the token is verified (refused: 1008 `too many
//!   connections`).
//!
//! Every socket endpoint goes through `crate::api::ws::serve_socket`, which is the only caller.
//! The per-address and per-user counts live in maps behind plain mutexes, held only to bump a
//! count, never across an `.await`; an entry exists only while a connection holds it, so the
//! maps are bounded by `max_connections`.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Limits;

/// Why a connection was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The node holds `max_connections` sockets.
    NodeFull,
    /// The peer address holds `max_connections_per_ip` sockets.
    TooManyFromAddress,
    /// The user holds `max_connections_per_user` sockets.
    TooManyForUser,
}

impl Refused {
    /// The label of `herald_connections_refused_total`.
    pub fn metric_reason(self) -> &'static str {
        match self {
            Self::NodeFull => "capacity",
            Self::TooManyFromAddress => "ip",
            Self::TooManyForUser => "user",
        }
    }
}

/// This node's admission state; one per node, shared by every socket endpoint.
pub struct Admission {
    node: Arc<Semaphore>,
    addresses: Arc<Slots<IpAddr>>,
    users: Arc<Slots<Arc<str>>>,
}

impl Admission {
    pub fn new(limits: &Limits) -> Self {
        Self {
            node: Arc::new(Semaphore::new(limits.max_connections)),
            addresses: Arc::new(Slots::new(limits.max_connections_per_ip)),
            users: Arc::new(Slots::new(limits.max_connections_per_user)),
        }
    }

    /// Takes the node's and the address's places for a connection about to be upgraded (the
    /// address is unknown when the server was not started with connect info).
    pub fn admit_peer(&self, address: Option<IpAddr>) -> Result<ConnectionPermit, Refused> {
        let node = Arc::clone(&self.node)
            .try_acquire_owned()
            .map_err(|_| Refused::NodeFull)?;
        let address = match address {
            Some(address) => Some(
                self.addresses
                    .take(address)
                    .ok_or(Refused::TooManyFromAddress)?,
            ),
            None => None,
        };
        Ok(ConnectionPermit {
            _node: node,
            _address: address,
            user: None,
        })
    }

    /// Adds the user's place to a permit, once the token says who the user is.
    pub fn admit_user(&self, permit: &mut ConnectionPermit, user_id: &str) -> Result<(), Refused> {
        debug_assert!(permit.user.is_none(), "a connection is one user's");
        let slot = self
            .users
            .take(Arc::from(user_id))
            .ok_or(Refused::TooManyForUser)?;
        permit.user = Some(slot);
        Ok(())
    }

    /// Node-wide places free right now.
    pub fn available(&self) -> usize {
        self.node.available_permits()
    }

    /// Connections `user_id` holds on this node.
    pub fn user_connections(&self, user_id: &str) -> usize {
        self.users.held(&Arc::from(user_id))
    }
}

/// One connection's places; dropping it gives them back.
pub struct ConnectionPermit {
    _node: OwnedSemaphorePermit,
    _address: Option<Slot<IpAddr>>,
    user: Option<Slot<Arc<str>>>,
}

/// Counted places per key, at most `limit` each (0: no limit, nothing counted).
struct Slots<K: Hash + Eq> {
    limit: usize,
    held: Mutex<HashMap<K, usize>>,
}

impl<K: Hash + Eq + Clone> Slots<K> {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            held: Mutex::new(HashMap::new()),
        }
    }

    /// A place for `key`, or `None` when `key` holds `limit` already.
    fn take(self: &Arc<Self>, key: K) -> Option<Slot<K>> {
        if self.limit == 0 {
            return Some(Slot {
                slots: None,
                key: None,
            });
        }
        let mut held = self.lock();
        let count = held.entry(key.clone()).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(Slot {
            slots: Some(Arc::clone(self)),
            key: Some(key),
        })
    }

    fn give_back(&self, key: &K) {
        let mut held = self.lock();
        if let Some(count) = held.get_mut(key) {
            *count -= 1;
            if *count == 0 {
                held.remove(key);
            }
        }
    }

    fn held(&self, key: &K) -> usize {
        self.lock().get(key).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, usize>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A place taken in [`Slots`] (nothing taken when the limit is off).
struct Slot<K: Hash + Eq + Clone> {
    slots: Option<Arc<Slots<K>>>,
    key: Option<K>,
}

impl<K: Hash + Eq + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        if let (Some(slots), Some(key)) = (&self.slots, &self.key) {
            slots.give_back(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(node: usize, per_ip: usize, per_user: usize) -> Admission {
        Admission::new(&Limits {
            max_connections: node,
            max_connections_per_ip: per_ip,
            max_connections_per_user: per_user,
            ..Limits::default()
        })
    }

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn the_node_admits_its_maximum_and_takes_one_back_when_a_permit_drops() {
        let admission = admission(2, 0, 0);
        let first = admission.admit_peer(ip(1)).unwrap();
        let _second = admission.admit_peer(ip(2)).unwrap();
        assert_eq!(admission.admit_peer(ip(3)).err(), Some(Refused::NodeFull));
        drop(first);
        assert!(admission.admit_peer(ip(3)).is_ok());
    }

    #[test]
    fn an_address_over_its_limit_is_refused_and_gives_back_the_node_place() {
        let admission = admission(10, 2, 0);
        let _a = admission.admit_peer(ip(1)).unwrap();
        let b = admission.admit_peer(ip(1)).unwrap();
        assert_eq!(
            admission.admit_peer(ip(1)).err(),
            Some(Refused::TooManyFromAddress)
        );
        assert!(admission.admit_peer(ip(2)).is_ok(), "another address");
        assert_eq!(admission.available(), 8, "the refusal kept no node place");
        drop(b);
        assert!(admission.admit_peer(ip(1)).is_ok());
    }

    #[test]
    fn a_user_over_its_limit_is_refused_and_counts_go_when_permits_drop() {
        let admission = admission(10, 0, 2);
        let mut permits = Vec::new();
        for _ in 0..2 {
            let mut permit = admission.admit_peer(None).unwrap();
            admission.admit_user(&mut permit, "7").unwrap();
            permits.push(permit);
        }
        let mut third = admission.admit_peer(None).unwrap();
        assert_eq!(
            admission.admit_user(&mut third, "7"),
            Err(Refused::TooManyForUser)
        );
        admission.admit_user(&mut third, "8").unwrap();
        assert_eq!(admission.user_connections("7"), 2);
        permits.clear();
        assert_eq!(admission.user_connections("7"), 0);
        assert!(admission.users.lock().get(&Arc::from("7")).is_none());
    }

    #[test]
    fn zero_turns_the_per_key_limits_off() {
        let admission = admission(1000, 0, 0);
        let mut permits = Vec::new();
        for _ in 0..500 {
            let mut permit = admission.admit_peer(ip(1)).unwrap();
            admission.admit_user(&mut permit, "7").unwrap();
            permits.push(permit);
        }
        assert!(admission.users.lock().is_empty());
        assert!(admission.addresses.lock().is_empty());
    }
}
